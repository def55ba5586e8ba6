/**
 * A job's event stream (GET /v1/images/jobs/{id}/events). EventSource cannot send an Authorization
 * header, so this reads the stream with fetch and parses Server-Sent Events itself, reconnecting
 * with Last-Event-ID after a dropped connection (the server replays exactly what was missed).
 */
import { request, ApiError } from './api.ts';

export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

/** Feeds text chunks in, calls `emit` for every complete event (per the SSE parsing rules). */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | undefined;
  lastEventId: string | undefined;
  retryMs: number | undefined;
  private readonly emit: (m: SseMessage) => void;

  constructor(emit: (m: SseMessage) => void) {
    this.emit = emit;
  }

  push(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = this.buffer.slice(0, nl);
      const sep = this.buffer.startsWith('\r\n', nl) ? 2 : 1;
      this.buffer = this.buffer.slice(nl + sep);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length > 0) {
        if (this.id !== undefined) this.lastEventId = this.id;
        this.emit({ event: this.event || 'message', data: this.data.join('\n'), id: this.id });
      }
      this.event = '';
      this.data = [];
      this.id = undefined;
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) this.retryMs = Number(value);
  }
}

export interface StreamHandlers {
  onEvent(event: string, data: unknown): void;
  /** The connection dropped and will be retried (attempt counts from 1). */
  onReconnecting?(attempt: number, err: unknown): void;
}

/**
 * Follows a job's events until its `done` event (or the signal aborts). Resolves when the stream has
 * ended for good; rejects on an API error (404, 401) or after repeated failed reconnects.
 */
export async function followJob(jobId: string, handlers: StreamHandlers, signal: AbortSignal): Promise<void> {
  let lastId: string | undefined;
  let failures = 0;
  for (;;) {
    let done = false;
    const parser = new SseParser((m) => {
      let data: unknown = m.data;
      try {
        data = JSON.parse(m.data);
      } catch {
        /* leave as text */
      }
      if (m.event === 'done') done = true;
      handlers.onEvent(m.event, data);
    });
    try {
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      if (lastId) headers['last-event-id'] = lastId;
      const res = await request(`/v1/images/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal });
      if (res.status === 204 || !res.body) return; // nothing more to say
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done: eof } = await reader.read();
        if (eof) break;
        parser.push(value);
        lastId = parser.lastEventId ?? lastId;
        failures = 0;
        if (done) {
          await reader.cancel().catch(() => {});
          return;
        }
      }
      if (done) return;
      throw new Error('the event stream closed before the job ended');
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && !err.offline) throw err;
      failures++;
      if (failures > 8) throw err;
      handlers.onReconnecting?.(failures, err);
      const wait = Math.min(10_000, (parser.retryMs ?? 1000) * 2 ** (failures - 1));
      await new Promise((r) => setTimeout(r, wait));
      if (signal.aborted) return;
    }
  }
}
