/**
 * One websocket per ComfyUI host (`GET /ws?clientId=…`), shared by every prompt easel runs there.
 * Per-prompt messages reach only the socket whose client id the prompt was submitted with, so the
 * socket is opened before submitting and its id is the `client_id`. Messages are routed by
 * `prompt_id`; ones for a prompt nobody watches yet (an old server that ignores a client-chosen
 * prompt id may answer the POST after its first events) are kept briefly and replayed on `watch`.
 *
 * Binary frames: a big-endian uint32 event type, then for type 1 (preview) a uint32 image format
 * (1 JPEG, 2 PNG) and the image from byte 8; for type 4 (preview with metadata, sent after the
 * `feature_flags` handshake) a uint32 metadata length, the JSON metadata (with `prompt_id`) and the
 * image. A type-1 preview belongs to the prompt last seen executing on this socket.
 *
 * A dropped socket is reopened with the same client id (backing off up to 5 s) while any prompt is
 * watched; watchers see the change through `changed()` and re-check `/history` for what they missed.
 */
import { randomUUID } from 'node:crypto';

export interface ComfyMessage {
  type: string;
  data: Record<string, unknown> & { prompt_id?: string };
}

export interface PreviewFrame {
  promptId: string | undefined;
  nodeId?: string;
  mediaType: string;
  data: Uint8Array;
}

export interface PromptListener {
  onMessage(msg: ComfyMessage): void;
  onPreview?(frame: PreviewFrame): void;
}

const UNCLAIMED_TTL_MS = 60_000;
const UNCLAIMED_MAX = 500;

export class ComfySocket {
  readonly clientId = randomUUID().replace(/-/g, '');
  /** Increments on every successful open: a watcher that saw another value knows it may have missed messages. */
  generation = 0;
  private readonly wsUrl: string;
  private readonly reconnectDelayMs: number;
  private ws: WebSocket | undefined;
  private opening: Promise<boolean> | undefined;
  private readonly listeners = new Map<string, PromptListener>();
  private readonly unclaimed = new Map<string, { at: number; messages: ComfyMessage[] }>();
  private currentPrompt: string | undefined;
  private waiters = new Set<() => void>();
  private delay: number;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(baseUrl: string, opts: { reconnectDelayMs: number }) {
    const u = new URL(baseUrl);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.pathname = `${u.pathname.replace(/\/+$/, '')}/ws`;
    u.searchParams.set('clientId', this.clientId);
    this.wsUrl = u.toString();
    this.reconnectDelayMs = opts.reconnectDelayMs;
    this.delay = opts.reconnectDelayMs;
  }

  get open(): boolean {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  /** Opens the socket if it is not open; true once open, false if it could not be opened in time. */
  async ensureOpen(timeoutMs: number): Promise<boolean> {
    if (this.open) return true;
    if (this.closed) return false;
    this.opening ??= this.connect(timeoutMs).finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  /** Resolves at the next open or close of the socket (or when `until` aborts, to stop waiting). */
  changed(until?: AbortSignal): Promise<void> {
    return waitFor(this.waiters, until);
  }

  /** Routes this prompt's messages to `listener` (replaying any that came first); returns the unwatch. */
  watch(promptId: string, listener: PromptListener): () => void {
    this.listeners.set(promptId, listener);
    const early = this.unclaimed.get(promptId);
    if (early) {
      this.unclaimed.delete(promptId);
      for (const m of early.messages) listener.onMessage(m);
    }
    return () => {
      if (this.listeners.get(promptId) === listener) this.listeners.delete(promptId);
    };
  }

  close(): void {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.ws?.close();
    this.notify();
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const w of waiters) w();
  }

  private connect(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      let settled = false;
      let ws: WebSocket;
      try {
        ws = new WebSocket(this.wsUrl);
      } catch {
        resolve(false);
        return;
      }
      ws.binaryType = 'arraybuffer';
      const timer = setTimeout(() => {
        if (settled) return;
        settled = true;
        ws.close();
        resolve(false);
      }, timeoutMs);
      ws.addEventListener('open', () => {
        clearTimeout(timer);
        if (settled || this.closed) {
          ws.close();
          return;
        }
        settled = true;
        this.ws = ws;
        this.generation++;
        this.delay = this.reconnectDelayMs;
        // Ask for previews that name their prompt; older servers ignore it and send type-1 frames.
        ws.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true } }));
        this.notify();
        resolve(true);
      });
      ws.addEventListener('message', (ev) => this.onFrame(ev.data));
      ws.addEventListener('error', () => {
        /* a close event follows */
      });
      ws.addEventListener('close', () => {
        clearTimeout(timer);
        if (!settled) {
          settled = true;
          resolve(false);
        }
        if (this.ws === ws) {
          this.ws = undefined;
          this.currentPrompt = undefined;
          this.notify();
          this.scheduleReconnect();
        }
      });
    });
  }

  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer || this.listeners.size === 0) return;
    const delay = this.delay;
    this.delay = Math.min(this.delay * 2, 5000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.closed || this.open) return;
      void this.ensureOpen(Math.max(1000, delay * 4)).then((ok) => {
        if (!ok) this.scheduleReconnect();
      });
    }, delay);
    this.reconnectTimer.unref();
  }

  private onFrame(data: unknown): void {
    if (typeof data === 'string') {
      let msg: ComfyMessage;
      try {
        msg = JSON.parse(data) as ComfyMessage;
      } catch {
        return;
      }
      if (!msg || typeof msg.type !== 'string' || !msg.data || typeof msg.data !== 'object') return;
      const promptId = typeof msg.data.prompt_id === 'string' ? msg.data.prompt_id : undefined;
      if (msg.type === 'executing' && promptId) this.currentPrompt = msg.data.node === null ? undefined : promptId;
      if (!promptId) return;
      const listener = this.listeners.get(promptId);
      if (listener) listener.onMessage(msg);
      else this.keepUnclaimed(promptId, msg);
      return;
    }
    if (!(data instanceof ArrayBuffer) || data.byteLength < 8) return;
    const view = new DataView(data);
    const kind = view.getUint32(0);
    let frame: PreviewFrame | undefined;
    if (kind === 1) {
      const format = view.getUint32(4);
      frame = { promptId: this.currentPrompt, mediaType: format === 2 ? 'image/png' : 'image/jpeg', data: new Uint8Array(data, 8) };
    } else if (kind === 4) {
      const metaLen = view.getUint32(4);
      if (8 + metaLen > data.byteLength) return;
      let meta: { prompt_id?: string; node_id?: string; image_type?: string } = {};
      try {
        meta = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 8, metaLen)));
      } catch {
        return;
      }
      frame = { promptId: meta.prompt_id, nodeId: meta.node_id, mediaType: meta.image_type ?? 'image/jpeg', data: new Uint8Array(data, 8 + metaLen) };
    }
    if (!frame?.promptId) return;
    this.listeners.get(frame.promptId)?.onPreview?.(frame);
  }

  private keepUnclaimed(promptId: string, msg: ComfyMessage): void {
    const now = Date.now();
    for (const [id, entry] of this.unclaimed) {
      if (now - entry.at > UNCLAIMED_TTL_MS) this.unclaimed.delete(id);
    }
    const entry = this.unclaimed.get(promptId) ?? { at: now, messages: [] };
    if (entry.messages.length < UNCLAIMED_MAX) entry.messages.push(msg);
    this.unclaimed.set(promptId, entry);
  }
}

/** A promise resolved by the next call of the waiters in `set`, or when `until` aborts (it then leaves the set). */
export function waitFor(set: Set<() => void>, until?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (until?.aborted) return resolve();
    const done = () => {
      set.delete(done);
      until?.removeEventListener('abort', done);
      resolve();
    };
    set.add(done);
    until?.addEventListener('abort', done, { once: true });
  });
}
