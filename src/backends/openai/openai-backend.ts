/**
 * The `openai` backend: any endpoint that speaks the OpenAI Images API (OpenAI itself, LocalAI,
 * another easel), driven through the official SDK so its retry, timeout and multipart behaviour is
 * the one OpenAI ships. With a `preset` it drives one of the engines people run on their own GPUs
 * (vLLM-Omni, SGLang Diffusion, LocalAI, stable-diffusion.cpp; see engines.ts): their field names,
 * health route, capabilities, LoRAs and an optional warm-up.
 */
import OpenAI, { APIConnectionError, APIConnectionTimeoutError, APIError, APIUserAbortError, toFile } from 'openai';
import type {
  ImageCreateVariationParams,
  ImageEditCompletedEvent,
  ImageEditParamsNonStreaming,
  ImageEditParamsStreaming,
  ImageGenCompletedEvent,
  ImageGenerateParamsNonStreaming,
  ImageGenerateParamsStreaming,
  ImagesResponse,
} from 'openai/resources/images';
import type {
  BackendCallContext,
  BackendCapabilities,
  BackendHealth,
  BackendImage,
  BackendImageInput,
  BackendPartialImage,
  BackendRequest,
  BackendResult,
  BackendWarning,
  ImageBackend,
} from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { MEDIA_TYPES } from '../../core/image-request.ts';
import { openaiBackendConfigSchema } from './options.ts';
import type { OpenAIBackendConfig, OpenAIBackendConfigInput } from './options.ts';
import { applyOpenAIModelRules, openaiModelSpec, rulesApply } from './model-rules.ts';
import type { BackendModelSpec, LoraSupport } from '../model-spec.ts';
import { enginePreset } from './engines.ts';
import type { EnginePreset } from './engines.ts';
import { acceptedOptions } from '../provider-options.ts';
import { declaredOptionType } from '../declared-options.ts';
import { otherWarning, uniqueWarnings, unsupported } from '../warnings.ts';
import { z } from 'zod';
import { createPooledFetch } from '../../net/pooled-fetch.ts';
import { networkCause } from '../../net/network-cause.ts';

type FetchLike = typeof globalThis.fetch;

/** API calls share keep-alive pools; lighter per call than the global fetch (see src/net/pooled-fetch.ts). */
let apiFetch: FetchLike | undefined;

export interface OpenAIBackendDeps {
  /** Replaces global fetch for API calls and URL downloads (tests, proxies). */
  fetch?: FetchLike;
  /** Where `apiKeyEnv` is looked up; defaults to process.env. */
  env?: Record<string, string | undefined>;
  /** How long a health answer is reused (default 10 s). */
  healthCacheMs?: number;
}

/** Images a backend may hand us by URL are capped so a misbehaving endpoint cannot fill memory. */
const MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024;
const HEALTH_TIMEOUT_MS = 10_000;
/** A LoRA name a request asked for that is not listed makes the engine list again, at most this often. */
const LORA_REFRESH_THROTTLE_MS = 5_000;
const MODERATION_CODES = new Set(['moderation_blocked', 'content_policy_violation']);

type ModelFamily = 'dall-e-2' | 'dall-e-3' | 'gpt-image' | 'other';

function modelFamily(model: string): ModelFamily {
  if (model === '' || model.startsWith('dall-e-2')) return 'dall-e-2';
  if (model.startsWith('dall-e-3')) return 'dall-e-3';
  if (model.startsWith('gpt-image') || model.startsWith('chatgpt-image')) return 'gpt-image';
  return 'other';
}

/**
 * Settings a known OpenAI model family rejects. For unknown models (LocalAI, another easel) we send
 * everything that was set and let the endpoint decide. Output format and compression are dropped
 * silently for DALL·E: it always returns PNG and the worker converts.
 */
const UNSUPPORTED: Record<ModelFamily, { warn: string[]; drop: string[] }> = {
  'dall-e-2': { warn: ['style', 'background'], drop: ['output_format', 'output_compression'] },
  'dall-e-3': { warn: ['background'], drop: ['output_format', 'output_compression'] },
  'gpt-image': { warn: ['style'], drop: [] },
  other: { warn: [], drop: [] },
};

/** Fields each endpoint knows at all; the rest are warned about (for known families) and left out. */
const EDIT_UNSUPPORTED = ['style'];
const VARIATION_FIELDS = new Set(['model', 'n', 'size', 'response_format', 'user']);

/** Model ids whose specs are kept (a request names a configured model; this only bounds the odd caller). */
const SPEC_MEMO_MAX = 256;

export class OpenAIBackend implements ImageBackend {
  readonly type = 'openai';
  readonly name: string;
  readonly capabilities: BackendCapabilities;
  readonly config: OpenAIBackendConfig;

  private readonly client: OpenAI;
  private readonly fetchImpl: FetchLike;
  private readonly authHeaders: Record<string, string>;
  private readonly healthCacheMs: number;
  private healthCache: { at: number; value: BackendHealth } | undefined;
  private healthInFlight: Promise<BackendHealth> | undefined;
  /** The zod shape of the provider options config declares, if any. */
  private readonly declaredOptions: Record<string, z.ZodType> | undefined;
  /** The engine this endpoint is, when config names one. */
  readonly preset: EnginePreset | undefined;
  /** LoRA files the engine listed (discovered presets), and when. */
  private loraFiles: Array<{ name: string; path: string }> | undefined;
  private lorasMemo: { files: Array<{ name: string; path: string }> | undefined; support: LoraSupport } | undefined;
  /** The last spec given per model id, with the LoRA support it was built on. */
  private readonly specMemo = new Map<string, { loras: LoraSupport | undefined; spec: BackendModelSpec }>();
  private lorasAt = 0;
  private lorasRefreshing: Promise<void> | undefined;
  /** Warm-up state: undefined until the server first answers; then running, then done. */
  private warmup: { done: boolean; promise: Promise<void> } | undefined;

  /** Takes any backend config entry (tests' factories hand it the union); the schema refuses non-openai ones. */
  constructor(config: OpenAIBackendConfigInput | OpenAIBackendConfig | { type: string; name: string }, deps: OpenAIBackendDeps = {}) {
    this.config = openaiBackendConfigSchema.parse(config);
    this.name = this.config.name;
    this.fetchImpl = deps.fetch ?? globalThis.fetch;
    this.healthCacheMs = deps.healthCacheMs ?? 10_000;
    const declared = this.config.providerOptions;
    this.declaredOptions = declared && Object.fromEntries(Object.entries(declared).map(([k, d]) => [k, declaredOptionType(d).optional()]));
    this.preset = this.config.preset ? enginePreset(this.config.preset) : undefined;

    const env = deps.env ?? process.env;
    const apiKey = this.config.apiKey ?? env[this.config.apiKeyEnv ?? 'OPENAI_API_KEY'];
    const headers: Record<string, string | null> = { ...this.config.headers };
    // A keyless endpoint (a local LocalAI) gets no Authorization header at all; the SDK insists on a
    // key, so it is given a placeholder that the null header then suppresses.
    if (!apiKey) headers['Authorization'] = null;

    this.client = new OpenAI({
      apiKey: apiKey || 'unused',
      baseURL: this.config.baseUrl,
      organization: this.config.organization ?? null,
      project: null,
      timeout: this.config.timeoutSeconds * 1000,
      maxRetries: this.config.maxRetries,
      defaultHeaders: headers,
      fetch: deps.fetch ?? (apiFetch ??= createPooledFetch()),
    });
    this.authHeaders = {
      ...this.config.headers,
      ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}),
      ...(this.config.organization ? { 'OpenAI-Organization': this.config.organization } : {}),
    };

    const caps = this.config.capabilities ?? {};
    const base = this.preset?.capabilities ?? { edit: true, mask: true, variation: true, maxInputImages: 16 };
    const edit = caps.edit ?? base.edit;
    this.capabilities = {
      generate: true,
      edit,
      mask: edit && (caps.mask ?? base.mask),
      variation: caps.variation ?? base.variation,
      maxInputImages: edit ? (caps.maxInputImages ?? base.maxInputImages) : 0,
      maxImagesPerCall: this.config.maxImagesPerCall,
    };
  }

  /**
   * With model rules on, the request is checked and adapted to the model first, and an `n` larger
   * than the model takes per call (dall-e-3: 1) is split into parallel calls.
   */
  /**
   * OpenAI's own endpoint is priced by its list prices; any other OpenAI-compatible endpoint (LocalAI,
   * vLLM-Omni, another easel) is a GPU somebody runs: costed by measured time unless the price table
   * names this backend.
   */
  modelSpec(model: string): BackendModelSpec {
    // Asked for every request and every attempt: the same object while nothing it depends on changed
    // (config is fixed; a discovered LoRA list changes only when it is read again), so callers may
    // keep what they derive from it (the registry does).
    const loras = this.loraSupport();
    const memo = this.specMemo.get(model);
    if (memo && memo.loras === loras) return memo.spec;
    const official = this.config.listPrices === 'auto' ? rulesApply('auto', this.config.baseUrl) : this.config.listPrices;
    let spec = openaiModelSpec(model, this.capabilities, rulesApply(this.config.modelRules, this.config.baseUrl), official ? 'price-table' : 'gpu-time');
    // What another OpenAI-compatible server takes besides OpenAI's own (LocalAI, vLLM-Omni, …), as config declares it.
    if (this.declaredOptions && spec.providerOptions instanceof z.ZodObject) spec = { ...spec, providerOptions: spec.providerOptions.extend(this.declaredOptions) };
    if (loras) spec = { ...spec, loras };
    if (this.specMemo.size >= SPEC_MEMO_MAX) this.specMemo.clear();
    this.specMemo.set(model, { loras, spec });
    return spec;
  }

  /**
   * How the engine takes LoRAs: vLLM-Omni one per request, by a server path config names; sd-server
   * the files it lists (under `loraDir`), else what config names; the others none.
   */
  private loraSupport(): LoraSupport | undefined {
    const p = this.preset;
    if (!p || p.loras === 'none') return undefined;
    if (p.loras === 'discovered' && this.config.loraDir) {
      if (Date.now() - this.lorasAt > this.config.loraRefreshSeconds * 1000) void this.refreshLoras();
      // One object per list read: a spec built on it stays valid until the list is read again.
      let memo = this.lorasMemo;
      if (!memo || memo.files !== this.loraFiles) {
        const dir = this.config.loraDir.replace(/\/+$/, '');
        const available = (this.loraFiles ?? []).map((f) => ({ name: f.name, ref: f.path.startsWith('/') ? f.path : `${dir}/${f.path}` }));
        memo = this.lorasMemo = { files: this.loraFiles, support: { source: 'discovered', available, ...(p.maxLoras ? { max: p.maxLoras } : {}) } };
      }
      return memo.support;
    }
    this.lorasMemo ??= { files: undefined, support: { source: 'configured', available: [], ...(p.maxLoras ? { max: p.maxLoras } : {}) } };
    return this.lorasMemo.support;
  }

  /** Reads the engine's LoRA list again (discovered presets); one look at a time, at most every few seconds. */
  async refreshLoras(): Promise<void> {
    const p = this.preset;
    if (!p?.loraListPath || !this.config.loraDir) return;
    if (this.lorasRefreshing) return this.lorasRefreshing;
    if (Date.now() - this.lorasAt < Math.min(LORA_REFRESH_THROTTLE_MS, this.config.loraRefreshSeconds * 1000)) return;
    this.lorasAt = Date.now();
    this.lorasRefreshing = (async () => {
      try {
        const res = await this.fetchImpl(new URL(p.loraListPath!, this.config.baseUrl), { headers: this.authHeaders, signal: AbortSignal.timeout(HEALTH_TIMEOUT_MS) });
        const list = res.ok ? ((await res.json()) as unknown) : (await res.body?.cancel(), undefined);
        if (Array.isArray(list)) {
          this.loraFiles = list
            .filter((l): l is { name: string; path?: unknown } => !!l && typeof l === 'object' && typeof (l as { name?: unknown }).name === 'string')
            .map((l) => ({ name: l.name, path: typeof l.path === 'string' && l.path ? l.path : l.name }));
        }
      } catch {
        // Unreachable now: the last list stands; the next look may do better.
      } finally {
        this.lorasRefreshing = undefined;
      }
    })();
    return this.lorasRefreshing;
  }

  async generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    if (!rulesApply(this.config.modelRules, this.config.baseUrl)) return this.generateOnce(request, ctx);
    const ruled = applyOpenAIModelRules(request, this.name);
    if (ruled.calls.length === 1) {
      const result = await this.generateOnce(ruled.request, ctx);
      return { ...result, warnings: uniqueWarnings([...ruled.warnings, ...result.warnings]) };
    }
    let finished = 0;
    let before = 0;
    const parts = await Promise.all(
      ruled.calls.map((n) => {
        const first = before;
        const seed = ruled.request.seed === undefined ? undefined : ruled.request.seed + first;
        before += n;
        const part = { ...ruled.request, n, ...(seed === undefined ? {} : { seed }) };
        const report = ctx.reportPartialImage;
        return this.generateOnce(part, {
          ...ctx,
          reportProgress: (p) => {
            if (p >= 1) ctx.reportProgress(++finished / ruled.calls.length);
          },
          // Partials are numbered by image across the whole request.
          ...(report ? { reportPartialImage: (img: BackendPartialImage) => report({ ...img, index: img.index + first }) } : {}),
        });
      }),
    );
    return {
      images: parts.flatMap((p) => p.images),
      warnings: uniqueWarnings([...ruled.warnings, ...parts.flatMap((p) => p.warnings)]),
      providerMetadata: { calls: parts.map((p) => p.providerMetadata ?? {}) },
    };
  }

  private async generateOnce(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    this.checkSupported(request);
    const { body, warnings } = this.buildBody(request);
    const partials = this.partialsFor(request, ctx, warnings);
    if (partials > 0) return this.generateStreamed(request, body, warnings, partials, ctx);
    const options = { signal: ctx.signal };

    let response: ImagesResponse;
    let requestId: string | null | undefined;
    try {
      const call =
        request.kind === 'generation'
          ? this.client.images.generate(body as unknown as ImageGenerateParamsNonStreaming, options)
          : request.kind === 'edit'
            ? this.client.images.edit({ ...body, ...(await editFiles(request)) } as unknown as ImageEditParamsNonStreaming, options)
            : this.client.images.createVariation(
                { ...body, image: await asFile(request.inputImages[0], 'image') } as unknown as ImageCreateVariationParams,
                options,
              );
      // The raw answer, parsed here: the SDK's own parsing path keeps each answer alive long enough to
      // be promoted to the old generation (~3.5x the garbage promoted; `npm run bench:promotion`),
      // which lengthens the scavenges and brings on mark-compacts. Non-2xx answers still throw the
      // SDK's APIError before this point.
      const raw = await call.asResponse();
      response = (await raw.json()) as ImagesResponse;
      requestId = raw.headers.get('x-request-id');
    } catch (err) {
      throw this.toBackendError(err, ctx.signal);
    }

    const items = response.data ?? [];
    if (items.length === 0) {
      throw new BackendError(`Backend "${this.name}" returned no images`, { code: 'backend_error', retryable: true });
    }
    if (items.length < request.n) {
      warnings.push(otherWarning(`Backend "${this.name}" returned ${items.length} of ${request.n} requested images`));
    }

    // Used only when the bytes are not a recognisable PNG/JPEG/WebP.
    const format = String(response.output_format ?? body.output_format ?? 'png');
    const fallbackType = format in MEDIA_TYPES ? MEDIA_TYPES[format as keyof typeof MEDIA_TYPES] : `image/${format}`;
    let images: BackendImage[];
    try {
      images = await Promise.all(
        items.map(async (item) => {
          const data = item.b64_json
            ? Buffer.from(item.b64_json, 'base64')
            : item.url
              ? await this.download(item.url, ctx.signal)
              : undefined;
          if (!data || data.length === 0) {
            throw new BackendError(`Backend "${this.name}" returned an image with neither b64_json nor url`, {
              code: 'backend_error',
            });
          }
          const image: BackendImage = { data, mediaType: sniffMediaType(data) ?? fallbackType };
          if (item.revised_prompt) image.revisedPrompt = item.revised_prompt;
          const seed = (item as { seed?: unknown }).seed;
          if (typeof seed === 'number') image.seed = seed;
          return image;
        }),
      );
    } catch (err) {
      throw this.toBackendError(err, ctx.signal);
    }

    ctx.reportProgress(1);
    const providerMetadata = dropUndefined({
      requestId: requestId ?? undefined,
      created: response.created,
      usage: response.usage,
      size: response.size,
      quality: response.quality,
      background: response.background,
      outputFormat: response.output_format,
    });
    return { images, warnings, providerMetadata };
  }

  /**
   * How many partial images to stream for this call: those asked for, where the model streams (GPT
   * image models, generations and edits) and the caller takes them; otherwise 0, with a warning when
   * some were asked for.
   */
  private partialsFor(request: BackendRequest, ctx: BackendCallContext, warnings: BackendWarning[]): number {
    const asked = request.partialImages ?? 0;
    if (asked <= 0 || !ctx.reportPartialImage) return 0;
    if (request.kind === 'variation' || modelFamily(request.model) !== 'gpt-image') {
      warnings.push(unsupported('partial_images', `partial_images is not supported by ${request.model || 'dall-e-2'}${request.kind === 'variation' ? ' variations' : ''} on backend "${this.name}"; ignored`));
      return 0;
    }
    return Math.min(3, asked);
  }

  /**
   * `stream: true`: partial images go to `ctx.reportPartialImage` as they arrive, and the finished
   * image comes in the `*.completed` event. Streamed events carry no image index, so n > 1 is asked
   * as n calls of one image each, in parallel (each image is billed the same either way).
   */
  private async generateStreamed(request: BackendRequest, body: Record<string, unknown>, warnings: BackendWarning[], partials: number, ctx: BackendCallContext): Promise<BackendResult> {
    const progress = new Array<number>(request.n).fill(0);
    const report = (index: number, p: number) => {
      progress[index] = p;
      ctx.reportProgress(progress.reduce((a, b) => a + b, 0) / request.n);
    };
    const files = request.kind === 'edit' ? await editFiles(request) : {};
    const calls = await Promise.all(
      Array.from({ length: request.n }, (_, index) => {
        const seeded = request.seed === undefined || !('seed' in body) ? {} : { seed: request.seed + index };
        return this.streamOne(request.kind, { ...body, ...seeded, ...files, n: 1, stream: true, partial_images: partials }, partials, index, ctx, report);
      }),
    );
    const metadata = calls.map((c) => c.providerMetadata);
    if (calls.some((c) => !c.streamed)) warnings.push(unsupported('partial_images', `Backend "${this.name}" does not stream: it answered the streamed request with plain JSON, so no partial images came`));
    return { images: calls.map((c) => c.image), warnings, providerMetadata: metadata.length === 1 ? metadata[0] : { calls: metadata } };
  }

  private async streamOne(
    kind: BackendRequest['kind'],
    body: Record<string, unknown>,
    partials: number,
    index: number,
    ctx: BackendCallContext,
    report: (index: number, progress: number) => void,
  ): Promise<{ image: BackendImage; providerMetadata: Record<string, unknown>; streamed: boolean }> {
    const format = String(body.output_format ?? 'png');
    const fallbackType = format in MEDIA_TYPES ? MEDIA_TYPES[format as keyof typeof MEDIA_TYPES] : `image/${format}`;
    let final: ImageGenCompletedEvent | ImageEditCompletedEvent | undefined;
    let requestId: string | null | undefined;
    try {
      const options = { signal: ctx.signal };
      const call =
        kind === 'edit'
          ? this.client.images.edit(body as unknown as ImageEditParamsStreaming, options)
          : this.client.images.generate(body as unknown as ImageGenerateParamsStreaming, options);
      const { data: events, response, request_id } = await call.withResponse();
      requestId = request_id;
      // An endpoint that does not stream answers `stream: true` with the plain images response: the
      // image is in it (the SDK's stream, read lazily, is left unread).
      if (/\bjson\b/i.test(response.headers.get('content-type') ?? '')) {
        const image = await this.imageFromJson((await response.json()) as ImagesResponse, fallbackType, ctx.signal);
        report(index, 1);
        return { image, providerMetadata: dropUndefined({ requestId: requestId ?? undefined, streamed: false }), streamed: false };
      }
      for await (const event of events) {
        if (event.type === 'image_generation.completed' || event.type === 'image_edit.completed') {
          final ??= event;
        } else if (!final && (event.type === 'image_generation.partial_image' || event.type === 'image_edit.partial_image')) {
          // The finished image may come before the last partials; those are dropped.
          const data = Buffer.from(event.b64_json, 'base64');
          if (data.length === 0) continue;
          ctx.reportPartialImage?.({ index, partialIndex: event.partial_image_index, data, mediaType: sniffMediaType(data) ?? fallbackType });
          report(index, (event.partial_image_index + 1) / (partials + 1));
        }
      }
    } catch (err) {
      throw this.toBackendError(err, ctx.signal);
    }
    // The SDK ends a stream quietly when it is aborted.
    if (ctx.signal.aborted) throw this.toBackendError(ctx.signal.reason, ctx.signal);
    const data = final?.b64_json ? Buffer.from(final.b64_json, 'base64') : undefined;
    if (!data || data.length === 0) {
      // A protocol mismatch, not a passing fault: asking again gets the same answer.
      throw new BackendError(`Backend "${this.name}" ended its event stream without the finished image`, { code: 'backend_error', retryable: false });
    }
    report(index, 1);
    const providerMetadata = dropUndefined({
      requestId: requestId ?? undefined,
      created: final!.created_at,
      usage: final!.usage,
      size: final!.size,
      quality: final!.quality,
      background: final!.background,
      outputFormat: final!.output_format,
      partialImages: partials,
    });
    return { image: { data, mediaType: sniffMediaType(data) ?? fallbackType }, providerMetadata, streamed: true };
  }

  /** The first image of a plain images response (to a streamed request the endpoint did not stream). */
  private async imageFromJson(json: ImagesResponse, fallbackType: string, signal: AbortSignal): Promise<BackendImage> {
    const item = json.data?.[0];
    const data = item?.b64_json ? Buffer.from(item.b64_json, 'base64') : item?.url ? await this.download(item.url, signal) : undefined;
    if (!data || data.length === 0) {
      throw new BackendError(`Backend "${this.name}" answered the streamed request with JSON that holds no image`, { code: 'backend_error', retryable: false });
    }
    const image: BackendImage = { data, mediaType: sniffMediaType(data) ?? fallbackType };
    if (item?.revised_prompt) image.revisedPrompt = item.revised_prompt;
    return image;
  }

  async health(): Promise<BackendHealth> {
    const cached = this.healthCache;
    if (cached && Date.now() - cached.at < this.healthCacheMs) return this.warmed(cached.value);
    this.healthInFlight ??= this.checkHealth().finally(() => {
      this.healthInFlight = undefined;
    });
    return this.warmed(await this.healthInFlight);
  }

  /**
   * With `warmup`: a server that answers for the first time (or again, after failing) runs one small
   * generation first, and is reported warming (not ready) until it ends, failed or not.
   */
  private warmed(health: BackendHealth): BackendHealth {
    const w = this.config.warmup;
    if (!w) return health;
    if (!health.ok) {
      // Down: when it answers again it is cold again.
      if (this.warmup?.done) this.warmup = undefined;
      return health;
    }
    this.warmup ??= this.startWarmup(w);
    return this.warmup.done ? health : { ok: false, warming: true, message: `${this.preset?.label ?? 'the endpoint'} is warming up (its first, small generation is running)` };
  }

  private startWarmup(w: NonNullable<OpenAIBackendConfig['warmup']>): { done: boolean; promise: Promise<void> } {
    const state = { done: false, promise: Promise.resolve() };
    const request: BackendRequest = { kind: 'generation', model: w.model ?? '', prompt: w.prompt, n: 1, size: { width: w.width, height: w.height }, steps: w.steps, outputFormat: 'png', inputImages: [], providerOptions: {} };
    const signal = AbortSignal.timeout(w.timeoutSeconds * 1000);
    state.promise = this.generateOnce(request, { jobId: 'warmup', signal, reportProgress: () => {}, savedState: undefined, saveState: async () => {} })
      .then(
        () => undefined,
        () => undefined, // a failed warm-up says nothing certain; health checks decide whether it is up
      )
      .finally(() => {
        state.done = true;
      });
    return state;
  }

  async close(): Promise<void> {}

  /**
   * Reachability, not an API contract: GET `healthPath` (default `/models`) with the backend's key.
   * Any HTTP answer means the endpoint is up, except a 5xx (it is in trouble) and 401/403 (the key
   * is refused, so every generation would be too); a 404 from a server without `/models` is up.
   */
  private async checkHealth(): Promise<BackendHealth> {
    // An engine that lists its LoRAs is read again on the health checks' rhythm, not only on a miss.
    if (this.preset?.loras === 'discovered' && Date.now() - this.lorasAt > this.config.loraRefreshSeconds * 1000) void this.refreshLoras();
    // An engine's own route is on its origin (`/health`, `/readyz`); a configured path is under baseUrl.
    const path = this.config.healthPath ?? this.preset?.healthPath ?? '/models';
    const url = this.config.healthPath || !this.preset ? `${this.config.baseUrl.replace(/\/+$/, '')}${path}` : new URL(path, this.config.baseUrl).href;
    const timeoutMs = Math.min(HEALTH_TIMEOUT_MS, this.config.timeoutSeconds * 1000);
    let value: BackendHealth;
    try {
      const res = await this.fetchImpl(url, { method: 'GET', headers: this.authHeaders, signal: AbortSignal.timeout(timeoutMs) });
      const text = res.status >= 400 ? await res.text().catch(() => '') : (await res.body?.cancel().catch(() => {}), '');
      const said = providerText(text) ?? res.statusText;
      if (res.status === 401 || res.status === 403) value = { ok: false, message: `${this.config.baseUrl} refused the credentials (${res.status}): ${said}` };
      else if (res.status >= 500) value = { ok: false, message: `${this.config.baseUrl} answered ${res.status} on ${path}: ${said}` };
      else value = res.ok ? { ok: true } : { ok: true, message: `reachable (${path} answered ${res.status})` };
    } catch (err) {
      const timedOut = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
      value = { ok: false, message: timedOut ? `${this.config.baseUrl} did not answer in time` : `${this.config.baseUrl} is unreachable: ${networkCause(err).message}` };
    }
    this.healthCache = { at: Date.now(), value };
    return value;
  }

  private markUnhealthy(message: string): void {
    this.healthCache = { at: Date.now(), value: { ok: false, message } };
  }

  private checkSupported(request: BackendRequest): void {
    const caps = this.capabilities;
    const refuse = (message: string) => new BackendError(message, { code: 'invalid_request' });
    if (request.kind === 'edit') {
      if (!caps.edit) throw refuse(`Backend "${this.name}" does not support edits`);
      if (request.inputImages.length === 0) throw refuse('An edit needs at least one input image');
      if (request.inputImages.length > caps.maxInputImages) {
        throw refuse(`Backend "${this.name}" takes at most ${caps.maxInputImages} input images`);
      }
      if (request.mask && !caps.mask) throw refuse(`Backend "${this.name}" does not support masks`);
    } else if (request.kind === 'variation') {
      if (!caps.variation) throw refuse(`Backend "${this.name}" does not support variations`);
      if (request.inputImages.length === 0) throw refuse('A variation needs an input image');
    }
    if (request.n > caps.maxImagesPerCall) {
      throw refuse(`Backend "${this.name}" returns at most ${caps.maxImagesPerCall} images per call`);
    }
  }

  /**
   * The JSON or multipart fields (less the files), with what had to be left out said in warnings.
   * The accepted provider options go in first and easel's own fields over them, so options add
   * settings (OpenAI's `moderation`, `input_fidelity`) but never replace the model, count, size,
   * prompt or stream that easel priced and moderated.
   */
  private buildBody(request: BackendRequest): { body: Record<string, unknown>; warnings: BackendWarning[] } {
    const accepted = acceptedOptions(request.providerOptions, this.modelSpec(request.model).providerOptions, { backend: this.name, model: request.model || 'dall-e-2' });
    const warnings: BackendWarning[] = [...accepted.warnings];
    // An engine is never OpenAI's own model, whatever its id (an empty one means dall-e-2 to OpenAI).
    const family = this.preset ? 'other' : modelFamily(request.model);
    const fields: Record<string, unknown> = dropUndefined({
      model: request.model || undefined,
      prompt: request.kind === 'variation' ? undefined : request.prompt,
      n: request.n,
      size: request.size ? `${request.size.width}x${request.size.height}` : undefined,
      quality: request.quality,
      style: request.style,
      background: request.background,
      output_format: request.outputFormat,
      output_compression: request.outputCompression,
      // DALL·E answers with a URL unless told otherwise; asking for b64 saves a second download.
      response_format: family === 'dall-e-2' || family === 'dall-e-3' ? 'b64_json' : undefined,
      user: request.user,
    });

    const rules = UNSUPPORTED[family];
    const ignored = (key: string) => unsupported(key, `${key} is not supported by ${request.model || 'dall-e-2'} on backend "${this.name}"; ignored`);
    for (const key of rules.drop) delete fields[key];
    for (const key of rules.warn) {
      if (key in fields) {
        if (!(key === 'background' && fields[key] === 'auto')) warnings.push(ignored(key));
        delete fields[key];
      }
    }
    if (request.kind === 'edit' && family !== 'other') {
      for (const key of EDIT_UNSUPPORTED) {
        if (key in fields) {
          warnings.push(unsupported(key, `${key} is not supported for edits on backend "${this.name}"; ignored`));
          delete fields[key];
        }
      }
    }
    if (request.kind === 'variation') {
      for (const key of Object.keys(fields)) {
        if (VARIATION_FIELDS.has(key)) continue;
        // The worker always sets an output format; DALL·E variations are PNG and the worker converts.
        if (key !== 'output_format') warnings.push(unsupported(key, `${key} is not supported for variations on backend "${this.name}"; ignored`));
        delete fields[key];
      }
    }

    if (this.preset) {
      // The engine's own names for easel's fields (and its LoRA field), with what it lacks said.
      this.preset.map(request, fields, (w) => warnings.push(w));
      return { body: { ...accepted.options, ...fields }, warnings };
    }
    if (request.loras?.length) throw new BackendError(`Backend "${this.name}" takes no LoRAs`, { code: 'invalid_request' });

    const extras = dropUndefined({
      negative_prompt: request.negativePrompt,
      seed: request.seed,
      steps: request.steps,
      guidance_scale: request.guidanceScale,
    });
    for (const [key, value] of Object.entries(extras)) {
      if (this.config.extraBodyFields) fields[key] = value;
      else warnings.push(unsupported(key, `${key} is not supported by backend "${this.name}"; ignored`));
    }

    return { body: { ...accepted.options, ...fields }, warnings };
  }

  /**
   * Fetches an image the endpoint returned by URL (DALL·E's default, LocalAI, another easel). The URL
   * comes from the configured backend, but it is still limited to http(s) and 50 MB. Credentials
   * go along only to the backend's own origin, never to a CDN the URL points at.
   */
  private async download(url: string, signal: AbortSignal): Promise<Uint8Array> {
    let target: URL;
    try {
      target = new URL(url, this.config.baseUrl);
    } catch {
      throw new BackendError(`Backend "${this.name}" returned an unparseable image URL`, { code: 'backend_error' });
    }
    if (target.protocol !== 'http:' && target.protocol !== 'https:') {
      throw new BackendError(`Backend "${this.name}" returned an image URL with scheme ${target.protocol}`, {
        code: 'backend_error',
      });
    }
    const sameOrigin = target.origin === new URL(this.config.baseUrl).origin;
    const res = await this.fetchImpl(target, {
      headers: sameOrigin ? this.authHeaders : {},
      redirect: 'follow',
      signal: AbortSignal.any([signal, AbortSignal.timeout(this.config.timeoutSeconds * 1000)]),
    });
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw new BackendError(`Backend "${this.name}": downloading its image failed with ${res.status}`, {
        code: res.status >= 500 || res.status === 429 ? 'backend_unavailable' : 'backend_error',
        retryable: res.status >= 500 || res.status === 429,
        status: res.status,
      });
    }
    const tooBig = () =>
      new BackendError(`Backend "${this.name}" returned an image over ${MAX_DOWNLOAD_BYTES} bytes`, {
        code: 'backend_error',
      });
    const declared = Number(res.headers.get('content-length'));
    if (declared > MAX_DOWNLOAD_BYTES) {
      await res.body?.cancel().catch(() => {});
      throw tooBig();
    }
    if (!res.body) return new Uint8Array();
    const chunks: Uint8Array[] = [];
    let total = 0;
    for await (const chunk of res.body) {
      total += chunk.byteLength;
      if (total > MAX_DOWNLOAD_BYTES) {
        await res.body.cancel().catch(() => {});
        throw tooBig();
      }
      chunks.push(chunk);
    }
    return Buffer.concat(chunks, total);
  }

  private toBackendError(err: unknown, signal: AbortSignal): BackendError {
    if (signal.aborted || err instanceof APIUserAbortError) {
      return new BackendError(`Call to backend "${this.name}" was aborted`, { code: 'aborted', cause: err });
    }
    if (err instanceof BackendError) return err;
    if (err instanceof APIConnectionTimeoutError || (err instanceof Error && err.name === 'TimeoutError')) {
      return new BackendError(`Backend "${this.name}" did not answer within ${this.config.timeoutSeconds} s`, {
        code: 'timeout',
        retryable: true,
        cause: err,
      });
    }
    if (err instanceof APIConnectionError) {
      return new BackendError(`Backend "${this.name}" is unreachable: ${causeMessage(err)}`, {
        code: 'backend_unavailable',
        retryable: true,
        cause: err,
      });
    }
    if (err instanceof APIError && err.status === undefined && err.code && MODERATION_CODES.has(err.code)) {
      // Refused mid-stream: an `error` event, which has no HTTP status.
      return new BackendError(`Backend "${this.name}" refused the request under its content policy: ${providerMessage(err)}`, {
        code: 'content_policy_violation',
        cause: err,
      });
    }
    if (err instanceof APIError && typeof err.status === 'number') {
      const status = err.status;
      const message = providerMessage(err);
      const opts = { status, cause: err };
      if (err.code && MODERATION_CODES.has(err.code)) {
        return new BackendError(`Backend "${this.name}" refused the request under its content policy: ${message}`, {
          ...opts,
          code: 'content_policy_violation',
        });
      }
      if (status === 401 || status === 403) {
        const text = `Backend "${this.name}" refused the credentials (${status}): ${message}`;
        this.markUnhealthy(text);
        return new BackendError(text, { ...opts, code: 'backend_auth' });
      }
      if (status === 404) {
        if (err.code === 'model_not_found' || err.param === 'model' || /model/i.test(message)) {
          return new BackendError(`Backend "${this.name}": ${message}`, { ...opts, code: 'model_not_found' });
        }
        return new BackendError(`Backend "${this.name}" has no such endpoint (404): ${message}`, {
          ...opts,
          code: 'backend_error',
        });
      }
      if (status === 429 && err.code === 'insufficient_quota') {
        return new BackendError(`Backend "${this.name}" is out of quota: ${message}`, {
          ...opts,
          code: 'backend_quota_exceeded',
        });
      }
      if (status === 408 || status === 409 || status === 429 || status >= 500) {
        return new BackendError(`Backend "${this.name}" is unavailable (${status}): ${message}`, {
          ...opts,
          code: 'backend_unavailable',
          retryable: true,
        });
      }
      const param = err.param ? ` (param '${err.param}')` : '';
      return new BackendError(`Backend "${this.name}" rejected the request${param}: ${message}`, {
        ...opts,
        code: 'invalid_request',
      });
    }
    return new BackendError(
      `Backend "${this.name}" failed: ${err instanceof Error ? err.message : String(err)}`,
      { code: 'backend_error', cause: err },
    );
  }
}

/** An edit's multipart files: `image` (one) or `image[]` (several), and the mask. */
async function editFiles(request: BackendRequest): Promise<{ image: File | File[]; mask?: File }> {
  return {
    image:
      request.inputImages.length === 1
        ? await asFile(request.inputImages[0]!, 'image')
        : await Promise.all(request.inputImages.map((img, i) => asFile(img, `image-${i + 1}`))),
    ...(request.mask ? { mask: await asFile(request.mask, 'mask') } : {}),
  };
}

async function asFile(image: BackendImageInput, base: string): Promise<File> {
  const ext = image.mediaType === 'image/jpeg' ? 'jpg' : (image.mediaType.split('/')[1] ?? 'png');
  return toFile(image.data, `${base}.${ext}`, { type: image.mediaType });
}

/** The provider's own message, without the SDK's status prefix. */
function providerMessage(err: APIError): string {
  const inner = err.error as { message?: unknown } | undefined;
  if (inner && typeof inner.message === 'string' && inner.message) return inner.message;
  return err.message.replace(/^\d{3} /, '');
}

/** The `error.message` of an OpenAI-shaped error body, if the text is one. */
function providerText(text: string): string | undefined {
  try {
    const m = (JSON.parse(text) as { error?: { message?: unknown } }).error?.message;
    return typeof m === 'string' && m ? m : undefined;
  } catch {
    return text.trim().slice(0, 200) || undefined;
  }
}

function causeMessage(err: Error): string {
  const cause = err.cause;
  const detail = cause instanceof Error ? ((cause.cause as Error | undefined)?.message ?? cause.message) : undefined;
  return detail ? `${err.message} (${detail})` : err.message;
}

/** What the bytes are, by magic number; undefined when unrecognised. */
function sniffMediaType(data: Uint8Array): string | undefined {
  if (data.length >= 8 && data[0] === 0x89 && data[1] === 0x50 && data[2] === 0x4e && data[3] === 0x47) {
    return 'image/png';
  }
  if (data.length >= 3 && data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff) return 'image/jpeg';
  if (
    data.length >= 12 &&
    data[0] === 0x52 && data[1] === 0x49 && data[2] === 0x46 && data[3] === 0x46 &&
    data[8] === 0x57 && data[9] === 0x45 && data[10] === 0x42 && data[11] === 0x50
  ) {
    return 'image/webp';
  }
  return undefined;
}

function dropUndefined<T extends Record<string, unknown>>(obj: T): Partial<T> {
  const out: Partial<T> = {};
  for (const key of Object.keys(obj) as (keyof T)[]) {
    if (obj[key] !== undefined) out[key] = obj[key];
  }
  return out;
}
