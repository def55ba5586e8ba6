/**
 * A loopback stand-in for AUTOMATIC1111 stable-diffusion-webui's API (PROTOCOLS.md §3):
 * blocking `POST /sdapi/v1/txt2img` and `/img2img` serialised by one lock, progress from
 * `GET /sdapi/v1/progress` (answered while a generation runs), `POST /sdapi/v1/interrupt` (the
 * blocked call then returns 200 with what it made), `/sdapi/v1/sd-models`, `/sdapi/v1/options`.
 * `info` is a JSON string; images are plain base64; image i of a batch has seed `seed + i`.
 * LoRAs (PROTOCOLS.md §11 B2): `GET /sdapi/v1/loras` lists `loras`, `POST /sdapi/v1/refresh-loras`
 * rescans (answers null), and `<lora:NAME:MULT>` tags in a prompt are parsed, recorded on the
 * execution and stripped; a name it lacks is skipped, as the webui does (it only logs it).
 *
 * Errors as the webui sends them: 404 `Sampler not found` and other HTTPExceptions as
 * `{error, detail, body, errors}`; body validation as FastAPI 422 `{detail: [{loc, msg, type}]}`.
 *
 * The latency model and images are the ComfyUI stand-in's. Failure injection: `failNext()` (HTTP
 * status), `failGeneration()` (a 500, e.g. CUDA OOM), `die()` / `revive()`.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { FAST_LATENCY, imageColor, pngSize, samplingMs, solidPng } from './comfyui-standin.ts';
import type { LatencyModel } from './comfyui-standin.ts';

export interface A1111StandinOptions {
  port?: number;
  /** Checkpoint file names. */
  checkpoints?: string[];
  latency?: Partial<LatencyModel>;
  /** Fill `current_image` in progress answers (the webui's live previews). */
  previews?: boolean;
  /** `user:pass` required as HTTP Basic on every /sdapi route (`--api-auth`). */
  auth?: string;
  outputSize?: number;
  /** LoRA names `GET /sdapi/v1/loras` lists (files under models/Lora). */
  loras?: string[];
}

export interface A1111Execution {
  route: string;
  checkpoint: string | undefined;
  prompt: string;
  seed: number;
  batch: number;
  width: number;
  height: number;
  steps: number;
  switched: boolean;
  startedAt: number;
  endedAt: number;
  outcome: 'success' | 'interrupted' | 'lost' | 'error';
  body: Record<string, any>;
  /** `<lora:…>` tags of the prompt: the ones it has, and the names it lacked. */
  loras: Array<{ name: string; weight: number }>;
  missingLoras: string[];
}

const SAMPLERS = ['Euler a', 'Euler', 'LMS', 'Heun', 'DPM2', 'DPM++ 2M', 'DPM++ SDE', 'DPM++ 2M SDE', 'DDIM', 'UniPC'];
const hashOf = (name: string) => Buffer.from(name).toString('hex').padEnd(10, '0').slice(0, 10);

export class A1111Standin {
  url = '';
  port = 0;
  readonly options: A1111StandinOptions;
  latency: LatencyModel;
  checkpoints: string[];
  loaded: string | undefined;
  loras: string[];
  readonly executions: A1111Execution[] = [];
  readonly requests: string[] = [];
  busyMs = 0;
  alive = false;

  private server: Server | undefined;
  private sockets = new Set<Socket>();
  private lock: Promise<void> = Promise.resolve();
  private current: { ex: A1111Execution; step: number; interrupted: boolean; wake?: () => void } | undefined;
  private queued = 0;
  private failures: Array<{ status: number; path: string; remaining: number; body?: unknown }> = [];
  private genFailures: string[] = [];
  private epoch = 0;

  constructor(options: A1111StandinOptions = {}) {
    this.options = options;
    this.latency = { ...FAST_LATENCY, ...options.latency };
    this.checkpoints = options.checkpoints ?? ['sd15.safetensors', 'sd_xl_base_1.0.safetensors', 'dreamshaper_8.safetensors'];
    this.loras = options.loras ?? [];
  }

  async start(port = this.options.port ?? 0): Promise<this> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.keepAliveTimeout = 1000;
    server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
    this.url = `http://127.0.0.1:${this.port}`;
    this.alive = true;
    this.epoch++;
    return this;
  }

  failNext(count: number, status = 500, path = '/', body?: unknown): void {
    this.failures.push({ status, path, remaining: count, body });
  }

  /** The next generation fails with a 500 carrying `message` (e.g. a CUDA OOM). */
  failGeneration(message = 'CUDA out of memory. Tried to allocate 2.00 GiB'): void {
    this.genFailures.push(message);
  }

  async die(): Promise<void> {
    if (!this.alive) return;
    this.alive = false;
    this.epoch++;
    if (this.current) {
      const ex = this.current.ex;
      ex.endedAt = Date.now();
      ex.outcome = 'lost';
      this.busyMs += ex.endedAt - ex.startedAt;
      this.current.interrupted = true;
      this.current.wake?.();
      this.current = undefined;
    }
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
  }

  async revive(): Promise<void> {
    if (this.alive) return;
    this.loaded = undefined;
    this.lock = Promise.resolve();
    await this.start(this.port);
  }

  close(): Promise<void> {
    return this.die();
  }

  private title(name: string): string {
    return `${name} [${hashOf(name)}]`;
  }

  private match(wanted: string): string | undefined {
    return this.checkpoints.find((c) => c === wanted || this.title(c) === wanted || c.replace(/\.[^.]+$/, '') === wanted);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const path = u.pathname;
    const method = req.method ?? 'GET';
    this.requests.push(`${method} ${path}`);
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const started = Date.now();
    const json = (status: number, body: unknown) => {
      if (res.destroyed) return;
      res.writeHead(status, { 'content-type': 'application/json', 'x-process-time': String((Date.now() - started) / 1000) });
      res.end(JSON.stringify(body));
    };
    const httpError = (status: number, detail: string, error = 'HTTPException') => json(status, { error, detail, body: '', errors: '' });
    if (this.options.auth) {
      const want = `Basic ${Buffer.from(this.options.auth).toString('base64')}`;
      if (req.headers.authorization !== want) {
        res.writeHead(401, { 'www-authenticate': 'Basic', 'content-type': 'application/json' });
        res.end(JSON.stringify({ detail: 'Incorrect username or password' }));
        return;
      }
    }
    const failure = this.failures.find((f) => f.remaining > 0 && path.startsWith(f.path));
    if (failure) {
      failure.remaining--;
      return json(failure.status, failure.body ?? { error: 'RuntimeError', detail: '', body: '', errors: 'injected failure' });
    }
    let body: any;
    try {
      body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
    } catch {
      return json(422, { detail: [{ loc: ['body'], msg: 'JSON decode error', type: 'value_error.jsondecode' }] });
    }

    if (method === 'POST' && (path === '/sdapi/v1/txt2img' || path === '/sdapi/v1/img2img')) return this.generate(path, body, json, httpError);
    if (method === 'GET' && path === '/sdapi/v1/progress') {
      const c = this.current;
      if (!c) return json(200, { progress: 0, eta_relative: 0, state: { skipped: false, interrupted: false, stopping_generation: false, job: '', job_count: 0, job_timestamp: '0', job_no: 0, sampling_step: 0, sampling_steps: 0 }, current_image: null, textinfo: null, current_task: null });
      const progress = Math.min(1, 0.01 + c.step / Math.max(1, c.ex.steps));
      const preview = this.options.previews && u.searchParams.get('skip_current_image') !== 'true' && c.step > 0 ? solidPng(8, 8, imageColor(c.ex.prompt, c.ex.seed, c.step)).toString('base64') : null;
      return json(200, {
        progress,
        eta_relative: 0.1,
        state: { skipped: false, interrupted: c.interrupted, stopping_generation: false, job: 'job', job_count: 1, job_timestamp: '20260101000000', job_no: 0, sampling_step: c.step, sampling_steps: c.ex.steps },
        current_image: preview,
        textinfo: null,
        current_task: 'task(standin)',
      });
    }
    if (method === 'POST' && path === '/sdapi/v1/interrupt') {
      if (this.current) {
        this.current.interrupted = true;
        this.current.wake?.();
      }
      return json(200, {});
    }
    if (method === 'POST' && path === '/sdapi/v1/skip') return json(200, {});
    if (method === 'GET' && path === '/sdapi/v1/sd-models') {
      return json(200, this.checkpoints.map((c) => ({ title: this.title(c), model_name: c.replace(/\.[^.]+$/, ''), hash: hashOf(c), sha256: null, filename: `/models/Stable-diffusion/${c}`, config: null })));
    }
    if (method === 'GET' && path === '/sdapi/v1/options') return json(200, { sd_model_checkpoint: this.loaded ? this.title(this.loaded) : null, samples_format: 'png' });
    if (method === 'POST' && path === '/sdapi/v1/options') {
      if (body.sd_model_checkpoint !== undefined) {
        const m = this.match(String(body.sd_model_checkpoint));
        if (!m) return httpError(500, '', 'RuntimeError');
        this.loaded = m;
      }
      return json(200, null);
    }
    if (method === 'GET' && path === '/sdapi/v1/loras') return json(200, this.loras.map((name) => ({ name, alias: name, path: `/models/Lora/${name}.safetensors`, metadata: {} })));
    if (method === 'POST' && path === '/sdapi/v1/refresh-loras') return json(200, null);
    if (method === 'GET' && path === '/sdapi/v1/samplers') return json(200, SAMPLERS.map((name) => ({ name, aliases: [], options: {} })));
    if (method === 'GET' && path === '/sdapi/v1/schedulers') return json(200, [{ name: 'automatic', label: 'Automatic' }, { name: 'karras', label: 'Karras' }]);
    return json(404, { detail: 'Not Found' });
  }

  private async generate(
    path: string,
    body: any,
    json: (status: number, body: unknown) => void,
    httpError: (status: number, detail: string, error?: string) => void,
  ): Promise<void> {
    for (const key of ['steps', 'batch_size', 'n_iter', 'width', 'height', 'seed']) {
      if (body[key] !== undefined && !Number.isInteger(body[key])) {
        return json(422, { detail: [{ loc: ['body', key], msg: 'value is not a valid integer', type: 'type_error.integer' }] });
      }
    }
    const sampler = body.sampler_name ?? body.sampler_index ?? 'Euler';
    if (!SAMPLERS.includes(sampler)) return httpError(404, 'Sampler not found');
    const img2img = path.endsWith('img2img');
    if (img2img && !(Array.isArray(body.init_images) && body.init_images.length)) return httpError(404, 'Init image not found');
    let initSize: { width: number; height: number } | undefined;
    if (img2img) {
      initSize = pngSize(Buffer.from(String(body.init_images[0]).replace(/^data:[^,]*,/, ''), 'base64'));
      if (!initSize) return httpError(500, 'Invalid encoded image');
    }
    const wanted = body.override_settings?.sd_model_checkpoint;
    const target = wanted !== undefined ? this.match(String(wanted)) : this.loaded;
    if (wanted !== undefined && !target) return httpError(500, '', 'RuntimeError');

    // One generation at a time, in arrival order (the webui's queue_lock).
    const epoch = this.epoch;
    this.queued++;
    const prev = this.lock;
    let release!: () => void;
    this.lock = new Promise<void>((r) => (release = r));
    await prev;
    this.queued--;
    if (this.epoch !== epoch) return release();
    try {
      const batch = (body.batch_size ?? 1) * (body.n_iter ?? 1);
      const seed = body.seed === undefined || body.seed === -1 ? Math.floor(Math.random() * 2 ** 32) : body.seed;
      const tags = [...String(body.prompt ?? '').matchAll(/<lora:([^:>]+):([^:>]+)>/g)].map((m) => ({ name: m[1]!, weight: Number(m[2]) }));
      const ex: A1111Execution = {
        route: path, checkpoint: target, prompt: String(body.prompt ?? '').replace(/\s*<lora:[^>]*>/g, ''), seed, batch,
        width: body.width ?? initSize?.width ?? 512, height: body.height ?? initSize?.height ?? 512, steps: body.steps ?? 50,
        switched: false, startedAt: Date.now(), endedAt: 0, outcome: 'success', body,
        loras: tags.filter((t) => this.loras.includes(t.name)), missingLoras: tags.filter((t) => !this.loras.includes(t.name)).map((t) => t.name),
      };
      this.executions.push(ex);
      const cur: NonNullable<A1111Standin['current']> = { ex, step: 0, interrupted: false };
      this.current = cur;
      const pause = async (ms: number) => {
        const end = Date.now() + ms;
        while (!cur.interrupted && this.epoch === epoch && Date.now() < end) {
          await new Promise<void>((r) => {
            const t = setTimeout(r, Math.min(end - Date.now(), Math.max(5, ms / ex.steps)));
            cur.wake = () => {
              clearTimeout(t);
              r();
            };
          });
          cur.step = Math.min(ex.steps, Math.floor(((Date.now() - (end - ms)) / ms) * ex.steps));
        }
      };
      if (target && target !== this.loaded) {
        ex.switched = true;
        await pause(this.latency.switchMs);
        cur.step = 0;
        if (!cur.interrupted && this.epoch === epoch) this.loaded = target;
      }
      if (!cur.interrupted) await pause(samplingMs(this.latency, { width: ex.width, height: ex.height, steps: ex.steps, batch }));
      if (this.epoch !== epoch) return;
      ex.endedAt = Date.now();
      this.busyMs += ex.endedAt - ex.startedAt;
      this.current = undefined;
      const failure = this.genFailures.shift();
      if (failure) {
        ex.outcome = 'error';
        return json(500, { error: 'OutOfMemoryError', detail: '', body: '', errors: failure });
      }
      if (cur.interrupted) ex.outcome = 'interrupted';
      const seeds = Array.from({ length: batch }, (_, i) => seed + i);
      const size = this.options.outputSize;
      const images = seeds.map((s, i) =>
        solidPng(size ?? ex.width, size ?? ex.height, imageColor(ex.prompt, s, 0), JSON.stringify({ prompt: ex.prompt, seed: s, index: i, checkpoint: target })).toString('base64'),
      );
      const info = {
        prompt: ex.prompt, all_prompts: seeds.map(() => ex.prompt), negative_prompt: body.negative_prompt ?? '', seed, all_seeds: seeds, subseed: 1, all_subseeds: seeds,
        width: ex.width, height: ex.height, sampler_name: sampler, cfg_scale: body.cfg_scale ?? 7, steps: ex.steps, batch_size: body.batch_size ?? 1,
        sd_model_name: target?.replace(/\.[^.]+$/, ''), sd_model_hash: target ? hashOf(target) : null, job_timestamp: '20260101000000',
        infotexts: seeds.map((s) => `${ex.prompt}\nSteps: ${ex.steps}, Seed: ${s}`), index_of_first_image: 0,
      };
      const parameters = { ...body, ...(img2img && !body.include_init_images ? { init_images: null, mask: null } : {}) };
      json(200, { images, parameters, info: JSON.stringify(info) });
    } finally {
      release();
    }
  }
}

export async function startA1111Standin(options: A1111StandinOptions = {}): Promise<A1111Standin> {
  return new A1111Standin(options).start();
}
