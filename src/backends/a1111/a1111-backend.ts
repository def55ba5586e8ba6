/**
 * The `a1111` backend: AUTOMATIC1111 stable-diffusion-webui / Forge hosts (`--api`) behind a
 * {@link HostPool} (placement, batching, model affinity, health, retry on another host).
 *
 * One host call is one blocking `POST /sdapi/v1/txt2img` or `/img2img` (with `mask` for
 * inpainting); the checkpoint goes in `override_settings.sd_model_checkpoint` and stays loaded
 * (`override_settings_restore_afterwards: false`). While it runs, `/sdapi/v1/progress` is polled
 * on a separate connection. Cancel is `POST /sdapi/v1/interrupt`, after which the blocked call
 * returns 200 with whatever was made (which is dropped). `info` in the answer is a JSON string;
 * `images` are plain base64, one per image (seeds `seed`, `seed+1`, … in `info.all_seeds`).
 *
 * LoRAs are what each host lists at `GET /sdapi/v1/loras` (by `name`), sent as A1111's prompt syntax
 * `<lora:NAME:WEIGHT>` appended to the prompt (PROTOCOLS.md §11 B2); Forge takes the same.
 */
import { sharp } from '../../images/sharp.ts';
import type {
  BackendCallContext,
  BackendCapabilities,
  BackendHealth,
  BackendImage,
  BackendImageInput,
  BackendRequest,
  BackendResult,
  BackendWarning,
  ImageBackend,
} from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { HostPool, checkGpuRequest, generationBatchKey, poolOptionsFrom } from '../pool/host-pool.ts';
import type { BatchOutput, PoolBatch, PoolHost, PoolLog, ProbeResult, RunIO } from '../pool/host-pool.ts';
import { hostRequest, readJson, sleep, sniffImageType } from '../pool/http.ts';
import type { HostHttp } from '../pool/http.ts';
import { a1111BackendConfigSchema } from './options.ts';
import type { A1111BackendConfig, A1111BackendConfigInput } from './options.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { otherWarning, unsupported } from '../warnings.ts';
import { a1111ModelSpec, a1111ProviderOptionsSchema } from './models.ts';
import { loraSetKey } from '../model-spec.ts';
const MODEL_REFRESH_MS = 60_000;
/** A miss makes every host rescan its LoRAs, at most this often. */
const LORA_REFRESH_THROTTLE_MS = 5_000;
const CANCEL_SETTLE_MS = 5_000;

/** The affinity key of a checkpoint however it is named: `sub/name.safetensors [hash]` → `name`. */
export function checkpointKey(name: string): string {
  const noHash = name.replace(/\s*\[[0-9a-fA-F]{6,}\]\s*$/, '');
  const base = noHash.split(/[\\/]/).pop() ?? noHash;
  return base.replace(/\.(safetensors|ckpt|pt|bin|gguf)$/i, '');
}

interface SdModel {
  title?: string;
  model_name?: string;
  filename?: string;
}

export class A1111Backend implements ImageBackend {
  readonly type = 'a1111';
  readonly name: string;
  readonly capabilities: BackendCapabilities;
  readonly config: A1111BackendConfig;
  readonly pool: HostPool;
  private readonly http: HostHttp;
  private readonly modelsAt = new Map<string, number>();
  private readonly lorasAt = new Map<string, number>();

  constructor(config: A1111BackendConfigInput | A1111BackendConfig, deps: { log?: PoolLog } = {}) {
    this.config = a1111BackendConfigSchema.parse(config);
    const c = this.config;
    this.name = c.name;
    this.capabilities = { generate: true, edit: true, mask: true, variation: true, maxInputImages: 1, maxImagesPerCall: c.maxBatchSize };
    this.http = { backendName: c.name, timeoutMs: c.requestTimeoutSeconds * 1000, basicAuth: c.basicAuth };
    this.pool = new HostPool(
      poolOptionsFrom(c, { maxConcurrentPerHost: 1, log: deps.log }),
      {
        run: (host, batch, io) => this.runBatch(host, batch, io),
        probe: (host, signal) => this.probe(host, signal),
        ...(c.warmup ? { warmup: (host: PoolHost, signal: AbortSignal) => this.warmup(host, signal) } : {}),
      },
    );
  }

  modelSpec(_model: string): BackendModelSpec {
    // Nobody has asked the hosts yet (no job, no health check): start looking, for the next ask.
    if (this.pool.loraFiles() === undefined) void this.refreshLoras();
    return a1111ModelSpec(this.config.maxBatchSize, this.pool.loraFiles());
  }

  /**
   * A request named a LoRA no host listed: each live host rescans its folder
   * (`POST /sdapi/v1/refresh-loras`) and is listed again; at most once every few seconds.
   */
  async refreshLoras(): Promise<void> {
    return this.pool.refreshLoras(
      Math.min(LORA_REFRESH_THROTTLE_MS, this.config.loraRefreshSeconds * 1000),
      async (h, signal) => {
        await hostRequest(this.http, h, '/sdapi/v1/refresh-loras', { method: 'POST', signal }).then((r) => r.body?.cancel(), () => {});
        return this.listLoras(h, signal);
      },
      (h) => this.lorasAt.set(h.name, Date.now()),
    );
  }

  async generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    checkGpuRequest(request, this.name, this.config.maxBatchSize);
    const key = checkpointKey(request.model);
    if (this.pool.lacks(key)) {
      // The lists may be stale (a checkpoint added since): look again before refusing.
      this.modelsAt.clear();
      await this.pool.probeAll();
    }
    if (this.pool.lacks(key)) throw new BackendError(`Backend "${this.name}": no host has checkpoint "${request.model}"`, { code: 'model_not_found' });
    const loraRefs = (request.loras ?? []).map((l) => l.ref);
    if (this.pool.lacksLoras(loraRefs)) {
      await this.refreshLoras();
      if (this.pool.lacksLoras(loraRefs)) throw new BackendError(`Backend "${this.name}": no host has all of the LoRAs ${loraRefs.join(', ')}`, { code: 'invalid_request' });
    }
    return this.pool.submit(request, ctx, { checkpoint: key, batchKey: generationBatchKey(request, key), loraSet: loraSetKey(request.loras), loraRefs });
  }

  health(): Promise<BackendHealth> {
    return this.pool.health();
  }

  async close(): Promise<void> {
    await this.pool.close();
  }

  private async runBatch(host: PoolHost, batch: PoolBatch, io: RunIO): Promise<BatchOutput> {
    const req = batch.request;
    const { body, warnings } = await this.buildBody(batch);
    const route = req.kind === 'generation' ? '/sdapi/v1/txt2img' : '/sdapi/v1/img2img';
    io.saveState((m) => ({ backend: 'a1111', host: host.name, seed: batch.seed + m.offset, batchIndex: m.offset, batchSize: batch.total }));

    // The blocking call is not tied to the abort signal: dropping the connection does not stop
    // the webui. A cancel interrupts it, and the call then returns on its own.
    const call = new AbortController();
    const posting = hostRequest(this.http, host, route, { json: body, signal: call.signal, timeoutMs: null });
    const polling = new AbortController();
    const poller = this.pollProgress(host, io, polling.signal);
    const onAbort = () => {
      void hostRequest(this.http, host, '/sdapi/v1/interrupt', { method: 'POST', timeoutMs: 5000 })
        .then((r) => r.body?.cancel())
        .catch(() => {});
      setTimeout(() => call.abort(), CANCEL_SETTLE_MS).unref();
    };
    io.signal.addEventListener('abort', onAbort, { once: true });
    let res: Response;
    try {
      res = await posting;
    } finally {
      polling.abort();
      io.signal.removeEventListener('abort', onAbort);
    }
    io.release();
    await poller;
    if (io.signal.aborted) {
      await res.body?.cancel().catch(() => {});
      throw new BackendError(`Call to backend "${this.name}" was aborted`, { code: 'aborted', cause: io.signal.reason });
    }
    const answer = (await readJson(res)) as { images?: unknown; info?: unknown; detail?: unknown; error?: unknown; errors?: unknown } | undefined;
    if (!res.ok) throw requestError(this.name, host, res.status, answer);
    const images = Array.isArray(answer?.images) ? answer.images.filter((x): x is string => typeof x === 'string') : [];
    let info: { all_seeds?: unknown; index_of_first_image?: unknown } = {};
    if (typeof answer?.info === 'string') {
      try {
        info = JSON.parse(answer.info);
      } catch {
        warnings.push(otherWarning(`host ${host.name} sent an unreadable info string`));
      }
    }
    const first = typeof info.index_of_first_image === 'number' ? info.index_of_first_image : 0;
    const seeds = Array.isArray(info.all_seeds) ? info.all_seeds : [];
    const out: BackendImage[] = images.slice(first, first + batch.total).map((b64, i) => {
      const data = Buffer.from(b64.replace(/^data:[^,]*,/, ''), 'base64');
      const seed = typeof seeds[i] === 'number' ? (seeds[i] as number) : batch.seed + i;
      return { data, mediaType: sniffImageType(data) ?? 'image/png', seed };
    });
    if (out.length === 0) throw new BackendError(`Backend "${this.name}": host ${host.name} returned no images`, { code: 'backend_error', retryable: true });
    return { images: out, warnings, providerMetadata: { host: host.name, seeds: out.map((i) => i.seed) } };
  }

  /** The names `GET /sdapi/v1/loras` lists (none on a webui without the Lora extension: 404). */
  private async listLoras(host: PoolHost, signal: AbortSignal): Promise<string[] | undefined> {
    const res = await hostRequest(this.http, host, '/sdapi/v1/loras', { signal });
    if (res.status === 404) {
      await res.body?.cancel();
      return [];
    }
    const list = await readJson(res);
    if (!res.ok || !Array.isArray(list)) return undefined;
    return list.map((l: { name?: unknown } | null) => l?.name).filter((n): n is string => typeof n === 'string' && n !== '');
  }

  /**
   * The warm-up (config `warmup`): one small txt2img of the checkpoint the host should have ready (by
   * default the one it has loaded), its image dropped.
   */
  private async warmup(host: PoolHost, signal: AbortSignal): Promise<void> {
    const w = this.config.warmup!;
    const model = w.model ?? host.loaded ?? Object.keys(this.config.checkpoints)[0] ?? host.checkpoints?.[0];
    if (!model) return;
    const request: BackendRequest = { kind: 'generation', model, prompt: w.prompt, n: 1, size: { width: w.width, height: w.height }, steps: w.steps, outputFormat: 'png', inputImages: [], providerOptions: {} };
    const batch: PoolBatch = { request, checkpoint: checkpointKey(model), members: [], total: 1, seed: 0, seedChosen: true, attempt: 0 };
    const io: RunIO = { signal, progress: () => {}, partialImage: () => {}, release: () => {}, saveState: () => {} };
    await this.runBatch(host, batch, io);
    host.loaded = batch.checkpoint;
  }

  /** Polls progress (and live previews) on its own connection until `stop` aborts. */
  private async pollProgress(host: PoolHost, io: RunIO, stop: AbortSignal): Promise<void> {
    const done = () => stop.aborted;
    let best = 0;
    let previews = 0;
    const query = this.config.previews ? '?skip_current_image=false' : '?skip_current_image=true';
    let lastPreview = '';
    while (!done()) {
      await sleep(this.config.progressPollMs, stop);
      if (done()) return;
      try {
        const res = await hostRequest(this.http, host, `/sdapi/v1/progress${query}`, { signal: stop, timeoutMs: Math.max(1000, this.config.progressPollMs * 4) });
        const p = (await readJson(res)) as { progress?: number; state?: { job_count?: number }; current_image?: string | null } | undefined;
        if (done() || !p) continue;
        if ((p.state?.job_count ?? 0) > 0 && typeof p.progress === 'number' && p.progress > best) {
          best = Math.min(1, p.progress);
          io.progress(best);
        }
        if (this.config.previews && typeof p.current_image === 'string' && p.current_image && p.current_image !== lastPreview) {
          lastPreview = p.current_image;
          const data = Buffer.from(p.current_image.replace(/^data:[^,]*,/, ''), 'base64');
          io.partialImage({ index: 0, partialIndex: previews++, data, mediaType: sniffImageType(data) ?? 'image/png' });
        }
      } catch {
        // Progress is best effort; the generation call reports the host's failures.
      }
    }
  }

  /**
   * The txt2img / img2img body: config extras, then the accepted provider options, then easel's
   * mapped fields (an option with a config default, such as the sampler, is folded into its field).
   */
  private async buildBody(batch: PoolBatch): Promise<{ body: Record<string, unknown>; warnings: BackendWarning[] }> {
    const req = batch.request;
    const accepted = acceptedOptions(req.providerOptions, a1111ProviderOptionsSchema, { backend: this.name, model: req.model });
    const { strength, ...opts } = accepted.options as typeof accepted.options & { strength?: number };
    const warnings: BackendWarning[] = [...accepted.warnings];
    const ckpt = this.config.checkpoints[req.model] ?? this.config.checkpoints[checkpointKey(req.model)] ?? {};
    const d = this.config.defaults;
    for (const key of ['quality', 'style'] as const) {
      if (req[key] !== undefined) warnings.push(unsupported(key, `${key} is not supported by backend "${this.name}"; ignored`));
    }
    if (req.background && req.background !== 'auto') warnings.push(unsupported('background', `background is not supported by backend "${this.name}"; ignored`));
    const sampler = (opts.sampler_name as string | undefined) ?? ckpt.sampler ?? d.sampler ?? 'Euler a';
    const scheduler = (opts.scheduler as string | undefined) ?? ckpt.scheduler ?? d.scheduler;
    const denoise = (opts.denoising_strength as number | undefined) ?? strength;
    delete opts.denoising_strength;
    const body: Record<string, unknown> = {
      ...this.config.extraFields,
      ...opts,
      prompt: withLoraTags(req.kind === 'variation' ? (req.prompt ?? '') : req.prompt, req.loras),
      negative_prompt: req.negativePrompt ?? ckpt.negativePrompt ?? d.negativePrompt ?? '',
      seed: batch.seed,
      batch_size: batch.total,
      n_iter: 1,
      steps: req.steps ?? ckpt.steps ?? d.steps ?? 20,
      cfg_scale: req.guidanceScale ?? ckpt.cfg ?? d.cfg ?? 7,
      sampler_name: sampler,
      ...(scheduler ? { scheduler } : {}),
      override_settings: { sd_model_checkpoint: req.model },
      override_settings_restore_afterwards: false,
      send_images: true,
      save_images: false,
    };
    if (req.size || req.kind === 'generation') {
      body.width = req.size?.width ?? ckpt.width ?? d.width ?? 512;
      body.height = req.size?.height ?? ckpt.height ?? d.height ?? 512;
    }
    if (req.kind === 'generation' && denoise !== undefined) {
      warnings.push(unsupported('provider_options.denoising_strength', `img2img strength applies to edits only on backend "${this.name}"; ignored`));
    }
    if (req.kind !== 'generation') {
      const image = req.inputImages[0]!;
      body.init_images = [Buffer.from(image.data).toString('base64')];
      body.denoising_strength = denoise ?? (req.kind === 'variation' ? d.variationDenoise : d.denoise);
      body.include_init_images = false;
      if (!req.size) {
        const meta = await sharp()(image.data).metadata().catch(() => undefined);
        if (meta?.width && meta.height) {
          body.width = meta.width;
          body.height = meta.height;
        }
      }
      if (req.mask) {
        body.mask = await this.maskB64(req.mask);
        // Start from the original pixels, over the whole image, unless options or config say otherwise.
        body.inpainting_fill ??= 1;
        body.inpaint_full_res ??= false;
      }
    }
    return { body, warnings };
  }

  /** OpenAI's masks are transparent where to repaint; A1111's are white there. */
  private async maskB64(mask: BackendImageInput): Promise<string> {
    try {
      const img = sharp()(mask.data);
      const meta = await img.metadata();
      if (!meta.hasAlpha) return Buffer.from(mask.data).toString('base64');
      const png = await img.extractChannel('alpha').negate().png().toBuffer();
      return png.toString('base64');
    } catch {
      throw new BackendError(`Backend "${this.name}": the mask is not a readable image`, { code: 'invalid_request' });
    }
  }

  private async probe(host: PoolHost, signal: AbortSignal): Promise<ProbeResult> {
    const res = await hostRequest(this.http, host, '/sdapi/v1/progress?skip_current_image=true', { signal });
    if (res.status === 401) return { ok: false, message: 'the host refused the credentials (401)' };
    if (!res.ok || !(await readJson(res))) return { ok: false, message: `/sdapi/v1/progress answered ${res.status}` };
    const result: ProbeResult = { ok: true };
    let options: { sd_model_checkpoint?: unknown } | undefined;
    try {
      options = (await readJson(await hostRequest(this.http, host, '/sdapi/v1/options', { signal }))) as typeof options;
    } catch {
      options = undefined;
    }
    if (typeof options?.sd_model_checkpoint === 'string' && options.sd_model_checkpoint) result.loaded = checkpointKey(options.sd_model_checkpoint);
    const fresh = host.status === 'up' || host.status === 'warming';
    const lorasAt = this.lorasAt.get(host.name) ?? 0;
    if (!fresh || host.loras === undefined || Date.now() - lorasAt > this.config.loraRefreshSeconds * 1000) {
      const list = await this.listLoras(host, signal).catch(() => undefined);
      if (list) {
        result.loras = list;
        this.lorasAt.set(host.name, Date.now());
      }
    }
    const at = this.modelsAt.get(host.name) ?? 0;
    if (!fresh || Date.now() - at > MODEL_REFRESH_MS) {
      const models = (await readJson(await hostRequest(this.http, host, '/sdapi/v1/sd-models', { signal }))) as SdModel[] | undefined;
      if (Array.isArray(models)) {
        const keys = new Set<string>();
        for (const m of models) for (const n of [m.title, m.model_name, m.filename]) if (typeof n === 'string' && n) keys.add(checkpointKey(n));
        result.checkpoints = [...keys];
        this.modelsAt.set(host.name, Date.now());
      }
    }
    return result;
  }
}

/** A1111's LoRA prompt syntax (`<lora:NAME:WEIGHT>`), one tag per adapter, after the prompt. */
export function withLoraTags(prompt: string, loras: ReadonlyArray<{ ref: string; weight: number }> | undefined): string {
  if (!loras?.length) return prompt;
  const tags = loras.map((l) => `<lora:${l.ref}:${l.weight}>`).join(' ');
  return prompt ? `${prompt} ${tags}` : tags;
}

/** A non-2xx answer to txt2img/img2img (5xx never gets here: it is the host's failure). */
function requestError(backend: string, host: PoolHost, status: number, body: unknown): BackendError {
  const b = (body ?? {}) as { detail?: unknown; error?: unknown; errors?: unknown };
  let detail: string;
  if (Array.isArray(b.detail)) {
    // FastAPI validation: [{loc, msg, type}]
    detail = b.detail.map((d: { loc?: unknown[]; msg?: string }) => `${(d.loc ?? []).filter((x) => x !== 'body').join('.')}: ${d.msg ?? 'invalid'}`).join('; ');
  } else {
    detail = [b.detail, b.errors].filter((x) => typeof x === 'string' && x).join(': ') || (typeof b.error === 'string' ? b.error : '');
  }
  if (status === 401 || status === 403) return new BackendError(`Backend "${backend}": host ${host.name} refused the credentials (${status})`, { code: 'backend_auth', status });
  return new BackendError(`Backend "${backend}": host ${host.name} rejected the request (${status})${detail ? `: ${detail}` : ''}`, { code: 'invalid_request', status });
}
