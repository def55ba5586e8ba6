/**
 * Loopback stand-ins for the OpenAI-compatible image engines people run on their own GPUs, written
 * from the wire facts in PROTOCOLS.md §11 (A1–A4). Each one answers only what the real server does,
 * under its own names, and records what it received:
 *
 * - vLLM-Omni: `/v1/images/generations` (`negative_prompt`, `num_inference_steps` 1–200,
 *   `guidance_scale` 0–20, `seed`, `lora: {name, path, scale}` whose path must exist on the server;
 *   `response_format: url` is a 400; a `model` other than the served one is a 400), multipart
 *   `/v1/images/edits` (`lora` as a JSON string, an image required: 422), `/health` (503 when unhealthy).
 * - SGLang Diffusion: `width`/`height`, `response_format` defaulting to `url`, which without cloud
 *   storage is a 400; edits with a `mask` file; `/health`.
 * - LocalAI: `step`, the negative prompt after `|` in the prompt (a JSON `negative_prompt` is not
 *   used), `response_format` the string `b64_json` (else a URL it serves); no `/v1/images/edits`;
 *   `/readyz` is 503 while starting.
 * - stable-diffusion.cpp sd-server: only `prompt`, `n`, `size`, `output_format` and
 *   `output_compression` on the OpenAI route; the rest is read from `<sd_cpp_extra_args>{…}` in the
 *   prompt (and stripped), LoRA paths taken verbatim (an unknown one fails); `/sdapi/v1/loras` lists
 *   `[{name, path}]` relative to its LoRA folder; `/v1/models` is its only health signal.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { solidPng } from './comfyui-standin.ts';

export type EngineKind = 'vllm-omni' | 'sglang' | 'localai' | 'sdcpp';

export interface EngineCall {
  method: string;
  path: string;
  /** JSON body, or multipart text fields. */
  body: Record<string, any>;
  files: string[];
  status: number;
  /** What the engine made of it (prompt, negative prompt, steps, cfg, seed, size, LoRAs). */
  parsed?: {
    prompt: string;
    negative?: string;
    steps?: number;
    cfg?: number;
    seed?: number;
    width: number;
    height: number;
    loras: Array<{ path: string; weight: number }>;
  };
}

export interface EngineStandinOptions {
  /** vLLM-Omni: the model it serves (a different `model` is a 400). */
  model?: string;
  /** vLLM-Omni: adapter folders that exist on the server. sd-server: LoRA files under its folder (relative). */
  loras?: string[];
  /** sd-server: its --lora-model-dir, as it sees it. */
  loraDir?: string;
  /** Delay before each generation answer. */
  latencyMs?: number;
}

export class EngineStandin {
  url = '';
  readonly kind: EngineKind;
  readonly options: EngineStandinOptions;
  readonly calls: EngineCall[] = [];
  /** vLLM: /health answers 503; LocalAI: /readyz answers 503 (starting). */
  unhealthy = false;
  loras: string[];
  private server: Server | undefined;
  private images = new Map<string, Buffer>();

  constructor(kind: EngineKind, options: EngineStandinOptions = {}) {
    this.kind = kind;
    this.options = options;
    this.loras = options.loras ?? [];
  }

  /** Generation calls (not health probes). */
  get generations(): EngineCall[] {
    return this.calls.filter((c) => c.path.startsWith('/v1/images/'));
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', () => resolve()));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const call: EngineCall = { method, path: u.pathname, body: {}, files: [], status: 0 };
    this.calls.push(call);
    const send = (status: number, body: unknown) => {
      call.status = status;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    const type = String(req.headers['content-type'] ?? '');
    if (type.startsWith('application/json')) {
      try {
        call.body = JSON.parse(raw.toString('utf8'));
      } catch {
        return send(400, { error: { message: 'invalid JSON', type: 'invalid_request_error', param: null, code: null } });
      }
    } else if (type.startsWith('multipart/form-data')) {
      const form = await new Response(raw, { headers: { 'content-type': type } }).formData();
      for (const [k, v] of form.entries()) {
        if (typeof v === 'string') call.body[k] = v;
        else call.files.push(k);
      }
    }
    try {
      await this.route(call, u, send, res);
    } catch (err) {
      send(500, { error: { message: String(err), type: 'server_error', param: null, code: null } });
    }
  }

  private async route(call: EngineCall, u: URL, send: (status: number, body: unknown) => void, res: ServerResponse): Promise<void> {
    const { method, path, body } = call;
    const bad = (message: string, status = 400) => send(status, { error: { message, type: 'invalid_request_error', param: null, code: null } });
    switch (this.kind) {
      case 'vllm-omni': {
        if (method === 'GET' && path === '/health') return this.unhealthy ? send(503, { status: 'unhealthy' }) : send(200, { status: 'healthy' });
        if (method === 'GET' && path === '/v1/models') return send(200, { object: 'list', data: [{ id: this.options.model ?? 'Qwen/Qwen-Image', object: 'model' }] });
        if (method !== 'POST' || (path !== '/v1/images/generations' && path !== '/v1/images/edits')) return send(404, { detail: 'Not Found' });
        const edit = path.endsWith('/edits');
        if (edit && !call.files.some((f) => f === 'image' || f === 'image[]')) return send(422, { detail: [{ loc: ['body', 'image'], msg: 'Field required', type: 'missing' }] });
        if (body.model !== undefined && this.options.model && body.model !== this.options.model) return bad(`model '${body.model}' is not served here`);
        if (body.response_format !== undefined && body.response_format !== 'b64_json' && !(body.response_format === 'file' && !edit)) return bad(`response_format '${body.response_format}' is not supported`);
        const steps = num(body.num_inference_steps);
        if (steps !== undefined && (!Number.isInteger(steps) || steps < 1 || steps > 200)) return bad('num_inference_steps must be 1-200');
        const cfg = num(body.guidance_scale);
        if (cfg !== undefined && (cfg < 0 || cfg > 20)) return bad('guidance_scale must be 0-20');
        let lora = body.lora;
        if (typeof lora === 'string') {
          try {
            lora = JSON.parse(lora);
          } catch {
            return bad('lora must be a JSON object');
          }
        }
        const loras: Array<{ path: string; weight: number }> = [];
        if (lora !== undefined) {
          const name = lora.name ?? lora.lora_name ?? lora.adapter;
          const p = lora.path ?? lora.local_path ?? lora.lora_path ?? lora.lora_local_path;
          if (!name || !p) return bad('lora needs a name and a path');
          if (!this.loras.includes(p)) return bad(`LoRA path ${p} does not exist on the server`);
          loras.push({ path: p, weight: num(lora.scale ?? lora.lora_scale) ?? 1 });
        }
        const [w, h] = sizeOf(body.size, 1024);
        call.parsed = { prompt: String(body.prompt ?? ''), negative: body.negative_prompt, steps, cfg, seed: num(body.seed), width: w, height: h, loras };
        await this.pause();
        const n = num(body.n) ?? 1;
        return send(200, { created: now(), data: Array.from({ length: n }, (_, i) => ({ b64_json: this.png(call, i), url: null, revised_prompt: null })), output_format: 'png', ...(body.size ? { size: body.size } : {}) });
      }
      case 'sglang': {
        if (method === 'GET' && (path === '/health' || path === '/health_generate')) return send(200, { status: 'ok' });
        if (method === 'GET' && path === '/v1/models') return send(200, { object: 'list', data: [{ id: 'sglang-diffusion', object: 'model', owned_by: 'sglang' }] });
        if (method === 'POST' && path === '/v1/set_lora') return send(200, { status: 'ok', message: 'set' });
        if (method !== 'POST' || (path !== '/v1/images/generations' && path !== '/v1/images/edits')) return send(404, { detail: 'Not Found' });
        const edit = path.endsWith('/edits');
        const format = body.response_format ?? (edit ? 'b64_json' : 'url');
        if (format === 'url') return bad('response_format url needs cloud storage or --output-path');
        const [sw, sh] = sizeOf(body.size, 1024);
        const w = num(body.width) ?? sw;
        const h = num(body.height) ?? sh;
        call.parsed = { prompt: String(body.prompt ?? ''), negative: body.negative_prompt, steps: num(body.num_inference_steps), cfg: num(body.guidance_scale), seed: num(body.seed), width: w, height: h, loras: [] };
        await this.pause();
        const n = Math.min(10, Math.max(1, num(body.n) ?? 1));
        return send(200, {
          id: `sg-${this.calls.length}`,
          created: now(),
          data: Array.from({ length: n }, (_, i) => ({ b64_json: this.png(call, i), revised_prompt: call.parsed!.prompt, file_path: null, resize: null })),
          peak_memory_mb: 1024.5,
          inference_time_s: 0.01,
          usage: {},
        });
      }
      case 'localai': {
        if (method === 'GET' && path === '/healthz') return send(200, {});
        if (method === 'GET' && path === '/readyz') return this.unhealthy ? send(503, { status: 'starting', reason: 'startup preload in progress' }) : send(200, { status: 'ok' });
        if (method === 'GET' && path === '/v1/models') return send(200, { object: 'list', data: [{ id: 'stablediffusion', object: 'model' }] });
        if (method === 'GET' && path.startsWith('/generated-images/')) {
          const png = this.images.get(path.slice('/generated-images/'.length));
          if (!png) return send(404, {});
          res.writeHead(200, { 'content-type': 'image/png' });
          res.end(png);
          return;
        }
        if (method !== 'POST' || (path !== '/v1/images/generations' && path !== '/images/generations')) return send(404, { error: { message: 'Cannot POST', code: 404 } });
        const text = String(body.prompt ?? '');
        const cut = text.indexOf('|');
        const [w, h] = typeof body.size === 'string' && body.size.includes('x') ? sizeOf(body.size, 512) : [512, 512];
        call.parsed = { prompt: cut >= 0 ? text.slice(0, cut) : text, negative: cut >= 0 ? text.slice(cut + 1) : undefined, steps: num(body.step) ?? 15, seed: num(body.seed), width: w, height: h, loras: [] };
        await this.pause();
        const n = num(body.n) ?? 1;
        const b64 = body.response_format === 'b64_json';
        const data = Array.from({ length: n }, (_, i) => {
          const png = this.png(call, i);
          if (b64) return { b64_json: png, index: i };
          const name = `b${this.calls.length}-${i}.png`;
          this.images.set(name, Buffer.from(png, 'base64'));
          return { url: `${this.url}/generated-images/${name}`, index: i };
        });
        return send(200, { id: `la-${this.calls.length}`, created: now(), data, usage: {} });
      }
      case 'sdcpp': {
        if (method === 'GET' && path === '/v1/models') return send(200, { data: [{ id: 'sd-cpp-local', object: 'model', owned_by: 'local' }] });
        if (method === 'GET' && path === '/sdapi/v1/loras') return send(200, this.loras.map((p) => ({ name: p.replace(/^.*\//, '').replace(/\.[^.]+$/, ''), path: p })));
        if (method !== 'POST' || (path !== '/v1/images/generations' && path !== '/v1/images/edits')) return send(404, { error: 'not found' });
        let prompt = String(body.prompt ?? '');
        let extra: any = {};
        const m = /<sd_cpp_extra_args>([\s\S]*?)<\/sd_cpp_extra_args>/.exec(prompt);
        if (m) {
          try {
            extra = JSON.parse(m[1]!);
          } catch {
            return bad('invalid sd_cpp_extra_args JSON');
          }
          prompt = prompt.replace(m[0], '').trim();
        }
        const dir = (this.options.loraDir ?? '/models/loras').replace(/\/+$/, '');
        const loras: Array<{ path: string; weight: number }> = [];
        for (const l of extra.lora ?? []) {
          // The OpenAI route takes the path verbatim (no resolver): it must name the file as the server sees it.
          if (!this.loras.some((rel) => `${dir}/${rel}` === l.path)) return bad(`failed to load LoRA ${l.path}`);
          loras.push({ path: l.path, weight: num(l.multiplier) ?? 1 });
        }
        const [w, h] = sizeOf(body.size, 512);
        call.parsed = { prompt, negative: extra.negative_prompt, steps: num(extra.sample_params?.sample_steps), cfg: num(extra.sample_params?.guidance?.txt_cfg), seed: num(extra.seed), width: w, height: h, loras };
        await this.pause();
        const n = num(body.n) ?? 1;
        return send(200, { created: now(), output_format: body.output_format ?? 'png', data: Array.from({ length: n }, (_, i) => ({ b64_json: this.png(call, i) })) });
      }
    }
  }

  private png(call: EngineCall, index: number): string {
    const p = call.parsed!;
    return solidPng(Math.min(p.width, 64), Math.min(p.height, 64), [40 + index * 10, 90, 140], JSON.stringify({ engine: this.kind, prompt: p.prompt, index })).toString('base64');
  }

  private async pause(): Promise<void> {
    if (this.options.latencyMs) await new Promise((r) => setTimeout(r, this.options.latencyMs));
  }
}

const now = () => Math.floor(Date.now() / 1000);

function num(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
  return undefined;
}

function sizeOf(size: unknown, def: number): [number, number] {
  const m = typeof size === 'string' ? /^(\d+)x(\d+)$/.exec(size) : null;
  return m ? [Number(m[1]), Number(m[2])] : [def, def];
}

export async function startEngineStandin(kind: EngineKind, options: EngineStandinOptions = {}): Promise<EngineStandin> {
  return new EngineStandin(kind, options).start();
}
