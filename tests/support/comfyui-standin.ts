/**
 * A loopback stand-in for a ComfyUI server (HTTP + websocket), close to the real one where clients
 * trip (see PROTOCOLS.md §2 and §10):
 *
 * - `POST /prompt` validates the graph (unknown class → 400 `invalid_prompt`; bad inputs →
 *   per-node `node_errors`; every output failing → 400, some failing → 200 with `node_errors` and
 *   only the good outputs queued); it honours a client-chosen `prompt_id` unless `legacyIds`.
 * - Per-prompt messages go only to the websocket of the prompt's `client_id`: `execution_start`,
 *   `execution_cached`, `executing` per node, `progress` per step, binary preview frames (type 1, or
 *   type 4 after the `feature_flags` handshake), `executed` for SaveImage, `execution_success`,
 *   then, **after a delay**, the history write, `status` and `executing {node: null}` (the only
 *   message guaranteed to follow the history write). Errors and interrupts send
 *   `execution_error` / `execution_interrupted` and then the same tail.
 * - `/history`, `/view`, `/upload/image` (rename on a clash), `/queue` (list, delete), `/interrupt`
 *   (targeted or global), `/system_stats`, `/object_info`, `/models/checkpoints`; every route also
 *   under `/api`.
 *
 * Latency model: a prompt takes `overheadMs + msPerStep·steps·(pixels / 512²)·(1 + (batch−1)·batchFactor)`,
 * plus `switchMs` when its checkpoint is not the loaded one. Images are solid-colour PNGs whose
 * colour and `tEXt` chunk come from (prompt, seed, batch index), so a test can tell whose they are.
 *
 * Failure injection: `dropSockets()`, `refuseSockets()`, `failNext()` (HTTP 5xx), `failExecution()`
 * (an execution_error at a node), `die()` / `revive()` (the process goes away mid-job and comes back
 * with an empty queue and history, as a restarted ComfyUI does).
 */
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { crc32, deflateSync } from 'node:zlib';
import { WebSocketServer } from 'ws';
import type { WebSocket } from 'ws';

// ---- shared with the A1111 stand-in and the benchmark ------------------------------------------

export interface LatencyModel {
  /** Milliseconds per sampling step of one 512×512 image. */
  msPerStep: number;
  /** Fixed milliseconds per call (text encode, VAE decode, save). */
  overheadMs: number;
  /** Cost of each extra image of a batch relative to the first (0.6: a batch of 4 costs 2.8 images). */
  batchFactor: number;
  /** Milliseconds to load a checkpoint other than the loaded one. */
  switchMs: number;
}

export const FAST_LATENCY: LatencyModel = { msPerStep: 2, overheadMs: 5, batchFactor: 0.6, switchMs: 30 };

export function samplingMs(m: LatencyModel, job: { width: number; height: number; steps: number; batch: number }): number {
  const pixels = (job.width * job.height) / (512 * 512);
  return m.overheadMs + m.msPerStep * job.steps * pixels * (1 + (job.batch - 1) * m.batchFactor);
}

/** The colour a stand-in paints for (prompt, seed, index). */
export function imageColor(prompt: string, seed: number, index: number): [number, number, number] {
  const h = createHash('sha256').update(`${prompt}\u0000${seed}\u0000${index}`).digest();
  return [h[0]!, h[1]!, h[2]!];
}

const pngCache = new Map<string, Buffer>();

/** A solid-colour RGB PNG with an `easel` tEXt chunk holding `text`. */
export function solidPng(width: number, height: number, rgb: [number, number, number], text = ''): Buffer {
  const key = `${width}x${height}:${rgb.join(',')}:${text}`;
  const hit = pngCache.get(key);
  if (hit) return hit;
  const chunk = (type: string, data: Buffer) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, 'latin1');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
    return Buffer.concat([head, data, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const row = Buffer.alloc(1 + width * 3);
  for (let x = 0; x < width; x++) row.set(rgb, 1 + x * 3);
  const raw = Buffer.alloc(row.length * height);
  for (let y = 0; y < height; y++) row.copy(raw, y * row.length);
  const png = Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    ...(text ? [chunk('tEXt', Buffer.from(`easel\u0000${text}`, 'latin1'))] : []),
    chunk('IDAT', deflateSync(raw, { level: 1 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
  if (pngCache.size > 2000) pngCache.clear();
  pngCache.set(key, png);
  return png;
}

/** The `easel` tEXt chunk of a stand-in PNG, parsed (undefined when absent). */
export function pngText(png: Uint8Array): any {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  let at = 8;
  while (at + 8 <= buf.length) {
    const len = buf.readUInt32BE(at);
    const type = buf.toString('latin1', at + 4, at + 8);
    if (type === 'tEXt') {
      const body = buf.toString('latin1', at + 8, at + 8 + len);
      const [k, v] = body.split('\u0000');
      if (k === 'easel' && v) return JSON.parse(v);
    }
    at += 12 + len;
  }
  return undefined;
}

/** Width and height from a PNG's IHDR (undefined when not a PNG). */
export function pngSize(png: Uint8Array): { width: number; height: number } | undefined {
  if (png.length < 24 || png[0] !== 0x89 || png[1] !== 0x50) return undefined;
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ---- the stand-in ------------------------------------------------------------------------------

export interface ComfyStandinOptions {
  /** Listen on this port (revive uses the same). */
  port?: number;
  checkpoints?: string[];
  latency?: Partial<LatencyModel>;
  /** Send binary preview frames during sampling (the real default, `--preview-method none`, sends none). */
  previews?: boolean;
  /** Delay between `execution_success` and the history write (the race in §10.1). */
  historyDelayMs?: number;
  /** Behave like a server from before client-chosen prompt ids: ignore `prompt_id`, make a uuid. */
  legacyIds?: boolean;
  /** Behave like a server from before 2024-07: no `execution_success`. */
  noExecutionSuccess?: boolean;
  /** Paint every image this square size instead of the requested one (benchmarks). */
  outputSize?: number;
  vramTotal?: number;
  /** Files in models/loras (LoraLoader's `lora_name` combo, `/models/loras`). */
  loras?: string[];
  /** List combos as V3 nodes do: `["COMBO", {options: […]}]` instead of `[[…], {}]`. */
  comboV3?: boolean;
}

export interface Execution {
  promptId: string;
  checkpoint: string | undefined;
  prompt: string;
  seed: number;
  batch: number;
  batchIndex: number;
  width: number;
  height: number;
  steps: number;
  switched: boolean;
  startedAt: number;
  endedAt: number;
  outcome: 'success' | 'error' | 'interrupted' | 'lost';
  /** LoRAs on the sampler's model link, from the checkpoint out. */
  loras: Array<{ name: string; strength: number }>;
}

interface QueueItem {
  number: number;
  id: string;
  prompt: Graph;
  extra: { client_id?: string };
  outputs: string[];
}

type Graph = Record<string, { class_type: string; inputs: Record<string, any> }>;

const SAMPLERS = ['euler', 'euler_ancestral', 'heun', 'dpm_2', 'dpmpp_2m', 'dpmpp_2m_sde', 'dpmpp_sde', 'lcm', 'ddim', 'uni_pc'];
const SCHEDULERS = ['simple', 'sgm_uniform', 'karras', 'exponential', 'ddim_uniform', 'beta', 'normal', 'linear_quadratic', 'kl_optimal'];

/** Required inputs of the node classes the stand-in knows. */
const NODE_INPUTS: Record<string, string[]> = {
  CheckpointLoaderSimple: ['ckpt_name'],
  CLIPTextEncode: ['text', 'clip'],
  FluxGuidance: ['conditioning', 'guidance'],
  EmptyLatentImage: ['width', 'height', 'batch_size'],
  EmptySD3LatentImage: ['width', 'height', 'batch_size'],
  KSampler: ['model', 'seed', 'steps', 'cfg', 'sampler_name', 'scheduler', 'positive', 'negative', 'latent_image', 'denoise'],
  VAEDecode: ['samples', 'vae'],
  VAEEncode: ['pixels', 'vae'],
  SaveImage: ['images', 'filename_prefix'],
  PreviewImage: ['images'],
  LoadImage: ['image'],
  LoadImageMask: ['image', 'channel'],
  ImageScale: ['image', 'upscale_method', 'width', 'height', 'crop'],
  RepeatLatentBatch: ['samples', 'amount'],
  LatentFromBatch: ['samples', 'batch_index', 'length'],
  SetLatentNoiseMask: ['samples', 'mask'],
  LoraLoader: ['model', 'clip', 'lora_name', 'strength_model', 'strength_clip'],
  LoraLoaderModelOnly: ['model', 'lora_name', 'strength_model'],
};
const OUTPUT_NODES = new Set(['SaveImage', 'PreviewImage']);

/** ComfyUI's origin check (without --enable-cors-header): loopback host, Origin of another hostname → 403. */
function crossOrigin(req: IncomingMessage): boolean {
  const host = req.headers.host;
  const origin = req.headers.origin;
  if (!host || !origin) return false;
  const hostName = host.replace(/:\d+$/, '');
  if (!['127.0.0.1', 'localhost', '[::1]'].includes(hostName)) return false;
  try {
    return new URL(origin).hostname !== hostName;
  } catch {
    return true;
  }
}

class Interrupted extends Error {}
class ExecutionFailure extends Error {
  readonly node: string;
  readonly nodeType: string;
  readonly exceptionType: string;
  constructor(node: string, nodeType: string, exceptionType: string, message: string) {
    super(message);
    this.node = node;
    this.nodeType = nodeType;
    this.exceptionType = exceptionType;
  }
}

export class ComfyUIStandin {
  url = '';
  port = 0;
  readonly options: ComfyStandinOptions;
  latency: LatencyModel;
  checkpoints: string[];
  loaded: string | undefined;
  loras: string[];
  /** Every prompt run (or started), in order. */
  readonly executions: Execution[] = [];
  /** Every HTTP request, as `METHOD /path`. */
  readonly requests: string[] = [];
  /** Bodies of accepted `POST /prompt`s. */
  readonly prompts: Array<{ id: string; requestedId?: string; prompt: Graph; client_id?: string }> = [];
  /** Milliseconds spent executing (checkpoint loads included). */
  busyMs = 0;
  alive = false;

  private server: Server | undefined;
  private wss: WebSocketServer | undefined;
  private sockets = new Set<Socket>();
  private clients = new Map<string, { ws: WebSocket; metadataPreviews: boolean }>();
  private pending: QueueItem[] = [];
  private running: { item: QueueItem; node?: string; interrupted: boolean } | undefined;
  private history = new Map<string, unknown>();
  private files = new Map<string, Buffer>();
  private counter = 0;
  private number = 0;
  private failures: Array<{ status: number; path: string; remaining: number }> = [];
  private execFailures: Array<{ classType: string; exceptionType: string; message: string }> = [];
  private refuseUntil = 0;
  private wake: (() => void) | undefined;
  private epoch = 0;

  constructor(options: ComfyStandinOptions = {}) {
    this.options = options;
    this.latency = { ...FAST_LATENCY, ...options.latency };
    this.checkpoints = options.checkpoints ?? ['sd15.safetensors', 'sd_xl_base_1.0.safetensors', 'flux1-dev-fp8.safetensors'];
    this.loras = options.loras ?? [];
  }

  async start(port = this.options.port ?? 0): Promise<this> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.keepAliveTimeout = 1000;
    const wss = new WebSocketServer({ noServer: true });
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    server.on('upgrade', (req, socket, head) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (!['/ws', '/api/ws'].includes(u.pathname) || Date.now() < this.refuseUntil || crossOrigin(req)) {
        socket.end('HTTP/1.1 503 Service Unavailable\r\n\r\n');
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => this.onSocket(ws, u.searchParams.get('clientId') ?? undefined));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.wss = wss;
    this.port = (server.address() as AddressInfo).port;
    this.url = `http://127.0.0.1:${this.port}`;
    this.alive = true;
    const epoch = ++this.epoch;
    void this.loop(epoch);
    return this;
  }

  // ---- failure injection -----------------------------------------------------------------------

  /** Closes every websocket (the server stays up; clients may reconnect). */
  dropSockets(): void {
    for (const c of this.clients.values()) c.ws.terminate();
    this.clients.clear();
  }

  /** Refuses websocket upgrades for `ms`. */
  refuseSockets(ms: number): void {
    this.refuseUntil = Date.now() + ms;
  }

  /** The next `count` requests whose path starts with `path` answer `status`. */
  failNext(count: number, status = 500, path = '/'): void {
    this.failures.push({ status, path, remaining: count });
  }

  /** The next prompt that runs a node of `classType` fails there with an execution_error. */
  failExecution(classType = 'KSampler', message = 'mat1 and mat2 shapes cannot be multiplied', exceptionType = 'RuntimeError'): void {
    this.execFailures.push({ classType, exceptionType, message });
  }

  /** The process goes away: connections are cut, the port is closed, the running prompt is lost. */
  async die(): Promise<void> {
    if (!this.alive) return;
    this.alive = false;
    this.epoch++;
    if (this.running) {
      const ex = this.executions.find((e) => e.promptId === this.running!.item.id && e.endedAt === 0);
      if (ex) {
        ex.endedAt = Date.now();
        ex.outcome = 'lost';
        this.busyMs += ex.endedAt - ex.startedAt;
      }
    }
    this.running = undefined;
    this.pending = [];
    this.wake?.();
    for (const c of this.clients.values()) c.ws.terminate();
    this.clients.clear();
    for (const s of this.sockets) s.destroy();
    this.wss?.close();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  /** Comes back on the same port, as a fresh process: empty queue and history, nothing loaded. */
  async revive(): Promise<void> {
    if (this.alive) return;
    this.history.clear();
    this.loaded = undefined;
    await this.start(this.port);
  }

  async close(): Promise<void> {
    await this.die();
  }

  get queueLength(): number {
    return this.pending.length + (this.running ? 1 : 0);
  }

  // ---- websocket -------------------------------------------------------------------------------

  private onSocket(ws: WebSocket, clientId: string | undefined): void {
    const sid = clientId ?? createHash('sha1').update(String(Math.random())).digest('hex').slice(0, 32);
    const client = { ws, metadataPreviews: false };
    let first = true;
    this.clients.set(sid, client);
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let msg: any;
      try {
        msg = JSON.parse(String(data));
      } catch {
        return;
      }
      if (first && msg?.type === 'feature_flags') {
        client.metadataPreviews = !!msg.data?.supports_preview_metadata;
        ws.send(JSON.stringify({ type: 'feature_flags', data: { supports_preview_metadata: true, max_upload_size: 104857600 } }));
      }
      first = false;
    });
    ws.on('close', () => {
      if (this.clients.get(sid) === client) this.clients.delete(sid);
    });
    ws.send(JSON.stringify({ type: 'status', data: { status: { exec_info: { queue_remaining: this.queueLength } }, sid } }));
    if (this.running?.item.extra.client_id === sid && this.running.node) {
      ws.send(JSON.stringify({ type: 'executing', data: { node: this.running.node } }));
    }
  }

  private send(sid: string | undefined, type: string, data: unknown): void {
    const msg = JSON.stringify({ type, data });
    if (sid === undefined) {
      for (const c of this.clients.values()) c.ws.send(msg);
      return;
    }
    this.clients.get(sid)?.ws.send(msg);
  }

  private sendStatus(): void {
    this.send(undefined, 'status', { status: { exec_info: { queue_remaining: this.queueLength } } });
  }

  private sendPreview(sid: string | undefined, promptId: string, node: string, png: Buffer): void {
    const client = sid ? this.clients.get(sid) : undefined;
    if (!client) return;
    if (client.metadataPreviews) {
      const meta = Buffer.from(JSON.stringify({ node_id: node, prompt_id: promptId, display_node_id: node, parent_node_id: null, real_node_id: node, image_type: 'image/png' }));
      const head = Buffer.alloc(8);
      head.writeUInt32BE(4, 0);
      head.writeUInt32BE(meta.length, 4);
      client.ws.send(Buffer.concat([head, meta, png]));
    } else {
      const head = Buffer.alloc(8);
      head.writeUInt32BE(1, 0);
      head.writeUInt32BE(2, 4); // PNG
      client.ws.send(Buffer.concat([head, png]));
    }
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const path = u.pathname.startsWith('/api/') ? u.pathname.slice(4) : u.pathname;
    const method = req.method ?? 'GET';
    this.requests.push(`${method} ${path}`);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const json = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const empty = (status: number) => {
      res.writeHead(status);
      res.end();
    };
    if (crossOrigin(req)) return empty(403);
    const failure = this.failures.find((f) => f.remaining > 0 && path.startsWith(f.path));
    if (failure) {
      failure.remaining--;
      return json(failure.status, { error: 'injected failure' });
    }
    const body = () => {
      try {
        return raw.length ? JSON.parse(raw.toString('utf8')) : undefined;
      } catch {
        return undefined;
      }
    };

    if (method === 'POST' && path === '/prompt') return this.postPrompt(body(), json);
    if (method === 'GET' && path === '/prompt') return json(200, { exec_info: { queue_remaining: this.queueLength } });
    if (method === 'GET' && path === '/queue') {
      const item = (q: QueueItem) => [q.number, q.id, q.prompt, q.extra, q.outputs];
      return json(200, { queue_running: this.running ? [item(this.running.item)] : [], queue_pending: this.pending.map(item) });
    }
    if (method === 'POST' && path === '/queue') {
      const b = body() ?? {};
      if (b.clear) this.pending = [];
      if (Array.isArray(b.delete)) this.pending = this.pending.filter((q) => !b.delete.includes(q.id));
      this.sendStatus();
      return empty(200);
    }
    if (method === 'POST' && path === '/interrupt') {
      const b = body();
      if (this.running && (!b?.prompt_id || b.prompt_id === this.running.item.id)) {
        this.running.interrupted = true;
        this.wake?.();
      }
      return empty(200);
    }
    if (method === 'GET' && path === '/history') return json(200, Object.fromEntries(this.history));
    if (method === 'GET' && path.startsWith('/history/')) {
      const id = decodeURIComponent(path.slice('/history/'.length));
      const entry = this.history.get(id);
      return json(200, entry ? { [id]: entry } : {});
    }
    if (method === 'GET' && path === '/view') {
      const filename = u.searchParams.get('filename') ?? '';
      const subfolder = u.searchParams.get('subfolder') ?? '';
      const type = u.searchParams.get('type') ?? 'output';
      if (!filename || filename.includes('..') || filename.startsWith('/')) return empty(400);
      if (subfolder.includes('..') || subfolder.startsWith('/')) return empty(403);
      const data = this.files.get(`${type}/${subfolder ? `${subfolder}/` : ''}${filename}`);
      if (!data) return empty(404);
      res.writeHead(200, { 'content-type': 'image/png', 'content-disposition': `filename="${filename}"`, 'content-length': data.length });
      res.end(data);
      return;
    }
    if (method === 'POST' && path === '/upload/image') {
      const form = await new Response(raw, { headers: { 'content-type': req.headers['content-type'] ?? '' } }).formData().catch(() => undefined);
      const file = form?.get('image');
      if (!form || !file || typeof file === 'string') return empty(400);
      const type = String(form.get('type') ?? 'input');
      const subfolder = String(form.get('subfolder') ?? '');
      const overwrite = ['true', '1'].includes(String(form.get('overwrite') ?? ''));
      const data = Buffer.from(await file.arrayBuffer());
      let name = (file as File).name || 'image.png';
      const key = (n: string) => `${type}/${subfolder ? `${subfolder}/` : ''}${n}`;
      if (!overwrite) {
        const dot = name.lastIndexOf('.');
        const stem = dot > 0 ? name.slice(0, dot) : name;
        const ext = dot > 0 ? name.slice(dot) : '';
        for (let i = 1; this.files.has(key(name)) && !this.files.get(key(name))!.equals(data); i++) name = `${stem} (${i})${ext}`;
      }
      this.files.set(key(name), data);
      return json(200, { name, subfolder, type });
    }
    if (method === 'GET' && path === '/system_stats') {
      const total = this.options.vramTotal ?? 24 * 1024 ** 3;
      return json(200, {
        system: { os: 'posix', ram_total: 64 * 1024 ** 3, ram_free: 32 * 1024 ** 3, comfyui_version: '0.3.64', python_version: '3.12', pytorch_version: '2.8', embedded_python: false, argv: ['main.py'] },
        devices: [{ name: 'cuda:0 standin', type: 'cuda', index: 0, vram_total: total, vram_free: total - (this.loaded ? 6 * 1024 ** 3 : 0), torch_vram_total: 0, torch_vram_free: 0 }],
      });
    }
    if (method === 'GET' && path === '/features') return json(200, { supports_preview_metadata: true, max_upload_size: 104857600 });
    if (method === 'GET' && path === '/models/checkpoints') return json(200, this.checkpoints);
    if (method === 'GET' && path === '/models/loras') return json(200, this.loras);
    if (method === 'GET' && path === '/models') return json(200, ['checkpoints', 'loras', 'vae']);
    if (method === 'GET' && (path === '/object_info' || path.startsWith('/object_info/'))) {
      const all = this.objectInfo();
      if (path === '/object_info') return json(200, all);
      const cls = decodeURIComponent(path.slice('/object_info/'.length));
      return json(200, all[cls] ? { [cls]: all[cls] } : {});
    }
    return empty(404);
  }

  private objectInfo(): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [cls, inputs] of Object.entries(NODE_INPUTS)) {
      const required: Record<string, unknown> = {};
      for (const name of inputs) {
        const combo = (list: string[]) => (this.options.comboV3 ? ['COMBO', { options: list }] : [list, {}]);
        required[name] =
          name === 'ckpt_name' ? combo(this.checkpoints) : name === 'lora_name' ? combo(this.loras) : name === 'sampler_name' ? combo(SAMPLERS) : name === 'scheduler' ? combo(SCHEDULERS) : ['*', {}];
      }
      out[cls] = { input: { required }, input_order: { required: inputs }, output: [], output_is_list: [], output_name: [], name: cls, display_name: cls, description: '', python_module: 'nodes', category: 'standin', output_node: OUTPUT_NODES.has(cls) };
    }
    return out;
  }

  private postPrompt(b: any, json: (status: number, body: unknown) => void): void {
    if (!b || typeof b.prompt !== 'object' || !b.prompt) {
      return json(400, { error: { type: 'no_prompt', message: 'No prompt provided', details: 'No prompt provided', extra_info: {} }, node_errors: {} });
    }
    const graph = b.prompt as Graph;
    for (const [id, node] of Object.entries(graph)) {
      if (!node || typeof node.class_type !== 'string') {
        return json(400, { error: { type: 'invalid_prompt', message: `Cannot execute because a node is missing the class_type property.: Node ID '#${id}'`, details: '', extra_info: {} }, node_errors: {} });
      }
      if (!NODE_INPUTS[node.class_type]) {
        return json(400, { error: { type: 'invalid_prompt', message: `Cannot execute because node ${node.class_type} does not exist.: Node ID '#${id}'`, details: '', extra_info: {} }, node_errors: {} });
      }
    }
    const outputs = Object.keys(graph).filter((id) => OUTPUT_NODES.has(graph[id]!.class_type));
    if (outputs.length === 0) {
      return json(400, { error: { type: 'prompt_no_outputs', message: 'Prompt has no outputs', details: '', extra_info: {} }, node_errors: {} });
    }
    const nodeErrors: Record<string, any> = {};
    const good: string[] = [];
    for (const out of outputs) {
      const bad = this.validate(graph, out, new Set());
      if (bad.length === 0) {
        good.push(out);
        continue;
      }
      for (const { node, error } of bad) {
        const entry = (nodeErrors[node] ??= { errors: [], dependent_outputs: [], class_type: graph[node]!.class_type });
        if (!entry.errors.some((e: any) => e.details === error.details)) entry.errors.push(error);
        if (!entry.dependent_outputs.includes(out)) entry.dependent_outputs.push(out);
      }
    }
    if (good.length === 0) {
      const details = Object.values(nodeErrors).flatMap((e: any) => e.errors.map((x: any) => `${x.message}: ${x.details}`)).join('\n');
      return json(400, { error: { type: 'prompt_outputs_failed_validation', message: 'Prompt outputs failed validation', details, extra_info: {} }, node_errors: nodeErrors });
    }
    const id = !this.options.legacyIds && typeof b.prompt_id === 'string' ? b.prompt_id : crypto.randomUUID();
    const number = this.number++;
    const item: QueueItem = { number, id, prompt: graph, extra: { client_id: typeof b.client_id === 'string' ? b.client_id : undefined }, outputs: good };
    this.pending.push(item);
    this.prompts.push({ id, requestedId: typeof b.prompt_id === 'string' ? b.prompt_id : undefined, prompt: graph, client_id: item.extra.client_id });
    this.sendStatus();
    this.wake?.();
    json(200, { prompt_id: id, number, node_errors: nodeErrors });
  }

  /** Validation errors of `id` and everything it depends on. */
  private validate(graph: Graph, id: string, seen: Set<string>): Array<{ node: string; error: any }> {
    if (seen.has(id)) return [];
    seen.add(id);
    const node = graph[id]!;
    const errors: Array<{ node: string; error: any }> = [];
    const err = (type: string, message: string, details: string, input: string, received?: unknown) =>
      errors.push({ node: id, error: { type, message, details, extra_info: { input_name: input, ...(received !== undefined ? { received_value: received } : {}) } } });
    for (const name of NODE_INPUTS[node.class_type] ?? []) {
      const v = node.inputs?.[name];
      if (v === undefined) {
        err('required_input_missing', 'Required input is missing', name, name);
        continue;
      }
      if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && typeof v[1] === 'number') {
        if (!graph[v[0]]) err('bad_linked_input', 'Bad linked input, must be a length-2 list of [string, int]', `${name}, ${JSON.stringify(v)}`, name);
        else errors.push(...this.validate(graph, v[0], seen));
        continue;
      }
      const notIn = (list: string[]) => err('value_not_in_list', 'Value not in list', `${name}: '${String(v)}' not in ${JSON.stringify(list)}`, name, v);
      if (name === 'ckpt_name' && !this.checkpoints.includes(v)) notIn(this.checkpoints);
      if (name === 'lora_name' && !this.loras.includes(v)) notIn(this.loras);
      if (name === 'sampler_name' && !SAMPLERS.includes(v)) notIn(SAMPLERS);
      if (name === 'scheduler' && !SCHEDULERS.includes(v)) notIn(SCHEDULERS);
      if (node.class_type.startsWith('LoadImage') && name === 'image' && !this.files.has(`input/${v}`)) err('custom_validation_failed', 'Custom validation failed for node', `Invalid image file: ${v}`, name, v);
      if (name === 'steps' && (typeof v !== 'number' || v < 1)) err('value_smaller_than_min', 'Value 0 smaller than min of 1', `steps: ${v}`, name, v);
    }
    return errors;
  }

  // ---- execution -------------------------------------------------------------------------------

  private async loop(epoch: number): Promise<void> {
    while (this.epoch === epoch) {
      const next = this.pending.sort((a, b) => a.number - b.number).shift();
      if (!next) {
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      this.running = { item: next, interrupted: false };
      await this.execute(next, epoch);
      if (this.epoch !== epoch) return;
      this.running = undefined;
    }
  }

  /** Waits `ms`, returning early (false) when interrupted or killed. */
  private async pause(ms: number, epoch: number): Promise<boolean> {
    const end = Date.now() + ms;
    for (;;) {
      if (this.epoch !== epoch || this.running?.interrupted) return false;
      const left = end - Date.now();
      if (left <= 0) return true;
      // Woken early by new work, an interrupt or death; only the last two end the pause.
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  private order(graph: Graph, outputs: string[]): string[] {
    const order: string[] = [];
    const visit = (id: string) => {
      if (order.includes(id)) return;
      for (const v of Object.values(graph[id]!.inputs)) {
        if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'string' && graph[v[0]]) visit(v[0]);
      }
      order.push(id);
    };
    for (const o of outputs) visit(o);
    return order;
  }

  /** Batch size, skip, width and height of the latent a node produces. */
  private latentOf(graph: Graph, ref: unknown): { batch: number; skip: number; width: number; height: number } {
    if (!Array.isArray(ref)) return { batch: 1, skip: 0, width: 512, height: 512 };
    const node = graph[ref[0] as string]!;
    const i = node.inputs;
    switch (node.class_type) {
      case 'EmptyLatentImage':
      case 'EmptySD3LatentImage':
        return { batch: i.batch_size, skip: 0, width: i.width, height: i.height };
      case 'RepeatLatentBatch': {
        const inner = this.latentOf(graph, i.samples);
        return { ...inner, batch: inner.batch * i.amount };
      }
      case 'LatentFromBatch': {
        const inner = this.latentOf(graph, i.samples);
        return { ...inner, batch: Math.min(i.length, inner.batch - i.batch_index), skip: inner.skip + i.batch_index };
      }
      case 'SetLatentNoiseMask':
        return this.latentOf(graph, i.samples);
      case 'VAEEncode':
        return { batch: 1, skip: 0, ...this.imageSize(graph, i.pixels) };
      case 'KSampler':
        return this.latentOf(graph, i.latent_image);
      case 'VAEDecode':
        return this.latentOf(graph, i.samples);
      default:
        return { batch: 1, skip: 0, width: 512, height: 512 };
    }
  }

  private imageSize(graph: Graph, ref: unknown): { width: number; height: number } {
    if (!Array.isArray(ref)) return { width: 512, height: 512 };
    const node = graph[ref[0] as string]!;
    if (node.class_type === 'ImageScale') return { width: node.inputs.width, height: node.inputs.height };
    if (node.class_type === 'LoadImage') {
      const data = this.files.get(`input/${node.inputs.image}`);
      return (data && pngSize(data)) ?? { width: 512, height: 512 };
    }
    if (node.class_type === 'VAEDecode') return this.latentOf(graph, node.inputs.samples);
    return { width: 512, height: 512 };
  }

  /** The LoRA loaders a MODEL link passes through, checkpoint first. */
  private loraChain(graph: Graph, ref: unknown): Array<{ name: string; strength: number }> {
    if (!Array.isArray(ref)) return [];
    const node = graph[ref[0] as string];
    if (!node || (node.class_type !== 'LoraLoader' && node.class_type !== 'LoraLoaderModelOnly')) return [];
    return [...this.loraChain(graph, node.inputs.model), { name: String(node.inputs.lora_name), strength: Number(node.inputs.strength_model) }];
  }

  private textOf(graph: Graph, ref: unknown): string {
    if (!Array.isArray(ref)) return '';
    const node = graph[ref[0] as string]!;
    if (node.class_type === 'CLIPTextEncode') return String(node.inputs.text ?? '');
    if (node.class_type === 'FluxGuidance') return this.textOf(graph, node.inputs.conditioning);
    return '';
  }

  private async execute(item: QueueItem, epoch: number): Promise<void> {
    const { id, prompt: graph } = item;
    const sid = item.extra.client_id;
    const ts = () => Date.now();
    const ex: Execution = { promptId: id, checkpoint: undefined, prompt: '', seed: 0, batch: 0, batchIndex: 0, width: 0, height: 0, steps: 0, switched: false, startedAt: Date.now(), endedAt: 0, outcome: 'success', loras: [] };
    this.executions.push(ex);
    const messages: Array<[string, unknown]> = [];
    const record = (type: string, data: Record<string, unknown>) => {
      messages.push([type, data]);
      this.send(sid, type, data);
    };
    record('execution_start', { prompt_id: id, timestamp: ts() });
    record('execution_cached', { nodes: [], prompt_id: id, timestamp: ts() });
    const outputs: Record<string, { images: Array<{ filename: string; subfolder: string; type: string }> }> = {};
    let failure: ExecutionFailure | undefined;
    let interrupted = false;
    try {
      for (const nodeId of this.order(graph, item.outputs)) {
        const node = graph[nodeId]!;
        if (this.running) this.running.node = nodeId;
        this.send(sid, 'executing', { node: nodeId, display_node: nodeId, prompt_id: id });
        const injected = this.execFailures.findIndex((f) => f.classType === node.class_type);
        if (injected >= 0) {
          const f = this.execFailures.splice(injected, 1)[0]!;
          throw new ExecutionFailure(nodeId, node.class_type, f.exceptionType, f.message);
        }
        if (node.class_type === 'CheckpointLoaderSimple') {
          ex.checkpoint = node.inputs.ckpt_name;
          if (this.loaded !== node.inputs.ckpt_name) {
            ex.switched = true;
            if (!(await this.pause(this.latency.switchMs, epoch))) throw new Interrupted();
            this.loaded = node.inputs.ckpt_name;
          }
        } else if (node.class_type === 'KSampler') {
          const latent = this.latentOf(graph, node.inputs.latent_image);
          const steps = Number(node.inputs.steps);
          Object.assign(ex, { seed: Number(node.inputs.seed), batch: latent.batch, batchIndex: latent.skip, width: latent.width, height: latent.height, steps, prompt: this.textOf(graph, node.inputs.positive), loras: this.loraChain(graph, node.inputs.model) });
          const total = samplingMs(this.latency, { width: latent.width, height: latent.height, steps, batch: latent.batch });
          const start = Date.now();
          const tick = Math.max(5, total / steps);
          let step = 0;
          let previews = 0;
          for (;;) {
            const left = start + total - Date.now();
            if (left <= 0) break;
            if (!(await this.pause(Math.min(tick, left), epoch))) throw new Interrupted();
            const now = Math.min(steps, Math.floor(((Date.now() - start) / total) * steps));
            if (now > step) {
              step = now;
              this.send(sid, 'progress', { value: step, max: steps, prompt_id: id, node: nodeId });
              if (this.options.previews && step < steps && previews++ < 8) {
                this.sendPreview(sid, id, nodeId, solidPng(8, 8, imageColor(ex.prompt, ex.seed, step)));
              }
            }
          }
          if (step < steps) this.send(sid, 'progress', { value: steps, max: steps, prompt_id: id, node: nodeId });
        } else if (OUTPUT_NODES.has(node.class_type)) {
          const latent = this.latentOf(graph, node.inputs.images);
          const save = node.class_type === 'SaveImage';
          const images = [];
          for (let k = 0; k < latent.batch; k++) {
            const index = latent.skip + k;
            const size = this.options.outputSize;
            const png = solidPng(size ?? latent.width, size ?? latent.height, imageColor(ex.prompt, ex.seed, index), JSON.stringify({ prompt: ex.prompt, seed: ex.seed, index, checkpoint: ex.checkpoint, node: nodeId }));
            const prefix = save ? String(node.inputs.filename_prefix ?? 'ComfyUI') : 'ComfyUI_temp_standin';
            const filename = `${prefix}_${String(++this.counter).padStart(5, '0')}_.png`;
            const type = save ? 'output' : 'temp';
            this.files.set(`${type}/${filename}`, png);
            images.push({ filename, subfolder: '', type });
          }
          outputs[nodeId] = { images };
          this.send(sid, 'executed', { node: nodeId, display_node: nodeId, output: { images }, prompt_id: id });
        }
        if (this.epoch !== epoch) return;
      }
    } catch (err) {
      if (this.epoch !== epoch) return;
      if (err instanceof ExecutionFailure) failure = err;
      else if (err instanceof Interrupted) interrupted = true;
      else throw err;
    }
    if (this.epoch !== epoch) return;
    ex.endedAt = Date.now();
    this.busyMs += ex.endedAt - ex.startedAt;
    const nodeId = this.running?.node ?? '';
    if (failure) {
      ex.outcome = 'error';
      record('execution_error', {
        prompt_id: id, node_id: failure.node, node_type: failure.nodeType, executed: [], exception_message: failure.message,
        exception_type: failure.exceptionType, traceback: ['Traceback (most recent call last):', '  ...'], current_inputs: {}, current_outputs: {}, timestamp: ts(),
      });
    } else if (interrupted) {
      ex.outcome = 'interrupted';
      record('execution_interrupted', { prompt_id: id, node_id: nodeId, node_type: graph[nodeId]?.class_type, executed: [], timestamp: ts() });
    } else if (!this.options.noExecutionSuccess) {
      record('execution_success', { prompt_id: id, timestamp: ts() });
    }
    // The quirk: execution_success goes out before the history entry exists.
    const delay = this.options.historyDelayMs ?? 5;
    if (delay > 0) await sleep(delay);
    if (this.epoch !== epoch) return;
    const ok = !failure && !interrupted;
    this.history.set(id, {
      prompt: [item.number, id, graph, item.extra, item.outputs],
      outputs: ok ? outputs : {},
      status: { status_str: ok ? 'success' : 'error', completed: ok, messages },
      meta: Object.fromEntries(Object.keys(outputs).map((n) => [n, { node_id: n, display_node: n, parent_node: null, real_node_id: n }])),
    });
    this.running = undefined;
    this.sendStatus();
    this.send(sid, 'executing', { node: null, prompt_id: id });
  }
}

export async function startComfyUIStandin(options: ComfyStandinOptions = {}): Promise<ComfyUIStandin> {
  return new ComfyUIStandin(options).start();
}
