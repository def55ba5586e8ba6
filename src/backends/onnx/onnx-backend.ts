/**
 * The `onnx` backend: easel's own engine. Requests become engine runs on worker threads; queued
 * text-to-image jobs that agree on model, size, steps and settings share UNet calls (one run, one
 * batch); images come back encoded in the requested format.
 */
import { existsSync, readdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { randomInt } from 'node:crypto';
import { sharp } from '../../images/sharp.ts';
import type {
  BackendCallContext,
  BackendCapabilities,
  BackendHealth,
  BackendImage,
  BackendRequest,
  BackendResult,
  BackendWarning,
  ImageBackend,
} from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { MEDIA_TYPES } from '../../core/image-request.ts';
import { onnxBackendConfigSchema, onnxProviderOptionsSchema } from './options.ts';
import type { z } from 'zod';
import type { OnnxBackendConfig, OnnxBackendConfigInput } from './options.ts';
import { EngineHost, EngineThreadError } from './engine-host.ts';
import type { EngineItem, EngineRequest, EngineResult } from './engine.ts';
import { readDecoderFolder, readModelFolder, resolveModelDir } from './model-folder.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { uniqueWarnings, unsupported } from '../warnings.ts';

export interface OnnxBackendDeps {
  /** Where the one-line notices go (CUDA fallback); default: `log`, else stderr. */
  warn?: (message: string) => void;
  log?: { warn(obj: object, msg: string): void };
}

/** An engine run's result for one job, with how many images (of all jobs) the run denoised together. */
type RunResult = EngineResult & { batchImages: number };

interface Pending {
  key: string | undefined;
  request: EngineRequest;
  signal: AbortSignal;
  reportProgress(p: number): void;
  resolve(r: RunResult): void;
  reject(e: Error): void;
  settled: boolean;
}

const CAPS_TTL_MS = 2000;

export class OnnxBackend implements ImageBackend {
  readonly type = 'onnx';
  readonly name: string;
  readonly config: OnnxBackendConfig;
  readonly modelsDir: string;
  private readonly hosts: EngineHost[];
  private readonly queue: Pending[] = [];
  private readonly warnLine: (message: string) => void;
  private saidCuda = false;
  private capsCache: { at: number; value: BackendCapabilities } | undefined;
  private closed = false;

  constructor(config: OnnxBackendConfigInput | OnnxBackendConfig, deps: OnnxBackendDeps = {}) {
    this.config = onnxBackendConfigSchema.parse(config);
    this.name = this.config.name;
    this.modelsDir = resolve(this.config.modelsDir ?? './data/models');
    this.warnLine =
      deps.warn ??
      (deps.log ? (m) => deps.log!.warn({ backend: this.name }, m) : (m) => process.stderr.write(`easel: onnx backend "${this.name}": ${m}\n`));
    const engineOptions = {
      executionProvider: this.config.executionProvider,
      deviceId: this.config.deviceId,
      intraOpThreads: this.config.intraOpThreads ?? availableParallelism(),
      keepLoaded: this.config.keepLoaded,
    };
    const warn = (m: string) => {
      // Each thread finds out on its own; the operator hears it once.
      if (/^CUDA/.test(m)) {
        if (this.saidCuda) return;
        this.saidCuda = true;
      }
      this.warnLine(m);
    };
    this.hosts = Array.from({ length: this.config.workers }, () => new EngineHost(engineOptions, warn));
  }

  /** Edits need a VAE encoder in some served model; recomputed briefly as models are pulled or removed. */
  get capabilities(): BackendCapabilities {
    const now = Date.now();
    if (this.capsCache && now - this.capsCache.at < CAPS_TTL_MS) return this.capsCache.value;
    const edit = this.modelIds().some((id) => this.canEdit(id));
    const value: BackendCapabilities = {
      generate: true,
      edit,
      mask: false,
      variation: false,
      maxInputImages: edit ? 1 : 0,
      maxImagesPerCall: this.config.maxBatch,
    };
    this.capsCache = { at: now, value };
    return value;
  }

  /** Model folders under modelsDir (pipelines only, not decoders such as TAESD). */
  modelIds(): string[] {
    if (!existsSync(this.modelsDir)) return [];
    return readdirSync(this.modelsDir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(join(this.modelsDir, d.name, 'unet', 'model.onnx')))
      .map((d) => d.name)
      .sort();
  }

  /**
   * Every model makes images from a prompt at sizes in multiples of 8 up to `maxPixels`; one with a
   * VAE encoder (or TAESD's) also edits one image. No masks, no variations, no qualities (steps are
   * the quality knob). Costed by the time it runs.
   */
  modelSpec(model: string): BackendModelSpec {
    const edit = this.canEdit(model);
    return {
      capabilities: { generate: true, edit, mask: false, variation: false, maxInputImages: edit ? 1 : 0 },
      maxImagesPerCall: this.config.maxBatch,
      sizes: { kind: 'range', minSide: 8, maxSide: 8192, multipleOf: 8, maxPixels: this.config.maxPixels },
      pricing: 'gpu-time',
      providerOptions: onnxProviderOptionsSchema,
    };
  }

  async generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    if (this.closed) throw new BackendError(`Backend "${this.name}" is shut down`, { code: 'backend_unavailable', retryable: true });
    const refuse = (message: string) => new BackendError(message, { code: 'invalid_request' });
    if (request.kind === 'variation') throw refuse(`Backend "${this.name}" does not do variations; use an edit with a prompt`);
    if (request.mask) throw refuse(`Backend "${this.name}" does not do masked edits (inpainting)`);

    let modelDir: string;
    try {
      modelDir = resolveModelDir(this.modelsDir, request.model);
    } catch (err) {
      throw refuse((err as Error).message);
    }
    if (!existsSync(join(modelDir, 'unet', 'model.onnx'))) {
      throw new BackendError(`Model "${request.model}" is not installed in ${this.modelsDir}: run \`easel models pull ${request.model}\``, { code: 'model_not_found' });
    }

    const accepted = acceptedOptions(request.providerOptions, onnxProviderOptionsSchema, { backend: this.name, model: request.model });
    const opts = accepted.options as z.infer<typeof onnxProviderOptionsSchema>;
    const warnings: BackendWarning[] = [...accepted.warnings];
    if (request.style) warnings.push(unsupported('style', `style is not supported by backend "${this.name}"; ignored`));
    if (request.quality && !['auto', 'standard'].includes(request.quality)) warnings.push(unsupported('quality', `quality is not supported by backend "${this.name}"; use steps instead`));
    if (request.background === 'transparent') warnings.push(unsupported('background', `backend "${this.name}" makes opaque images; background=transparent ignored`));

    const size = request.size;
    if (size && size.width * size.height > this.config.maxPixels) {
      throw refuse(`${size.width}x${size.height} is larger than backend "${this.name}" allows (${this.config.maxPixels} pixels)`);
    }
    if (size && (size.width % 8 || size.height % 8)) throw refuse(`width and height must be multiples of 8, got ${size.width}x${size.height}`);

    const taesdDir = this.taesdFor(opts.decoder ?? this.config.decoder);
    const base: Omit<EngineRequest, 'items'> = {
      modelDir,
      ...(taesdDir ? { taesdDir } : {}),
      ...(request.steps !== undefined ? { steps: request.steps } : {}),
      ...(request.guidanceScale !== undefined ? { guidanceScale: request.guidanceScale } : {}),
      ...(opts.scheduler ? { scheduler: opts.scheduler } : {}),
    };
    if (request.kind === 'edit') {
      if (request.inputImages.length === 0) throw refuse('An edit needs an input image');
      if (request.inputImages.length > 1) warnings.push(unsupported('image', `backend "${this.name}" edits the first input image only`));
      if (!this.canEdit(request.model)) throw refuse(`Model "${request.model}" has no VAE encoder, so it cannot edit images`);
      const target = size ?? this.editSize(modelDir, await sharp()(request.inputImages[0]!.data).metadata());
      const rgb = await sharp()(request.inputImages[0]!.data)
        .autoOrient()
        .removeAlpha()
        .resize(target.width, target.height, { fit: 'cover' })
        .raw()
        .toBuffer();
      base.width = target.width;
      base.height = target.height;
      base.init = { rgb: new Uint8Array(rgb.buffer, rgb.byteOffset, rgb.byteLength), strength: opts.strength ?? this.config.defaultStrength };
    } else {
      if (opts.strength !== undefined) warnings.push(unsupported('provider_options.strength', 'strength applies to edits only; ignored'));
      if (size) {
        base.width = size.width;
        base.height = size.height;
      }
    }

    const seed0 = request.seed ?? randomInt(0, 2 ** 32 - 1);
    const items: EngineItem[] = Array.from({ length: request.n }, (_, i) => ({
      prompt: request.prompt,
      ...(request.negativePrompt ? { negativePrompt: request.negativePrompt } : {}),
      seed: seed0 + i,
    }));

    // More images than one batch holds run as several engine runs (the worker normally splits first).
    const groups: EngineItem[][] = [];
    for (let i = 0; i < items.length; i += this.config.maxBatch) groups.push(items.slice(i, i + this.config.maxBatch));
    const shares = groups.map(() => 0);
    const results = await Promise.all(
      groups.map((group, g) =>
        this.enqueue({ ...base, items: group }, ctx, (p) => {
          shares[g] = p;
          ctx.reportProgress(shares.reduce((a, b) => a + b, 0) / groups.length);
        }),
      ),
    );

    const images: BackendImage[] = [];
    for (const res of results) {
      warnings.push(...res.warnings);
      for (const img of res.images) {
        images.push({ data: await encode(img.rgb, img.width, img.height, request.outputFormat, request.outputCompression), mediaType: MEDIA_TYPES[request.outputFormat], seed: img.seed });
      }
    }
    ctx.reportProgress(1);
    const first = results[0]!;
    return {
      images,
      warnings: uniqueWarnings(warnings),
      providerMetadata: {
        seed: seed0,
        ...first.settings,
        batchImages: Math.max(...results.map((r) => r.batchImages)),
        timings: {
          totalMs: round(results.reduce((a, r) => a + r.timings.totalMs, 0)),
          runMs: round(results.reduce((a, r) => a + r.timings.runMs, 0)),
          unetMs: round(results.reduce((a, r) => a + r.timings.unetMs, 0)),
          decodeMs: round(results.reduce((a, r) => a + r.timings.decodeMs, 0)),
        },
      },
    };
  }

  async health(): Promise<BackendHealth> {
    const ids = this.modelIds();
    if (ids.length === 0) return { ok: false, message: `no model in ${this.modelsDir}: run \`easel models pull sd-turbo\`` };
    return { ok: true, message: `${ids.length} model(s): ${ids.join(', ')}` };
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.queue.splice(0)) this.settle(p, new BackendError(`Backend "${this.name}" is shutting down`, { code: 'backend_unavailable', retryable: true }));
    await Promise.all(this.hosts.map((h) => h.close()));
  }

  /** img2img needs an encoder: the model's VAE encoder, or TAESD's when TAESD decodes. */
  private canEdit(id: string): boolean {
    let dir: string;
    try {
      dir = resolveModelDir(this.modelsDir, id);
    } catch {
      return false;
    }
    if (existsSync(join(dir, 'vae_encoder', 'model.onnx'))) return true;
    const taesd = this.config.decoder !== 'vae' ? this.installedTaesd() : undefined;
    return Boolean(taesd && readDecoderFolder(taesd)?.encoder);
  }

  private installedTaesd(): string | undefined {
    const dir = resolveModelDir(this.modelsDir, this.config.taesd ?? 'taesd');
    return readDecoderFolder(dir) ? dir : undefined;
  }

  /** The TAESD folder to decode with, per the decoder setting; undefined means the model's VAE. */
  private taesdFor(choice: 'auto' | 'vae' | 'taesd'): string | undefined {
    if (choice === 'vae') return undefined;
    const found = this.installedTaesd();
    if (choice === 'taesd' && !found) {
      throw new BackendError(`decoder=taesd asked for, but no TAESD is installed in ${this.modelsDir}: run \`easel models pull taesd\``, { code: 'invalid_request' });
    }
    return found;
  }

  /** An edit with no size: the input's aspect at about the model's native area, in multiples of 8. */
  private editSize(modelDir: string, meta: { width?: number; height?: number }): { width: number; height: number } {
    const native = readModelFolder(modelDir).nativeSize;
    const w0 = meta.width ?? native;
    const h0 = meta.height ?? native;
    const k = Math.min(1, Math.sqrt((native * native) / (w0 * h0)), Math.sqrt(this.config.maxPixels / (w0 * h0)));
    return { width: Math.max(8, Math.floor((w0 * k) / 8) * 8), height: Math.max(8, Math.floor((h0 * k) / 8) * 8) };
  }

  private enqueue(request: EngineRequest, ctx: BackendCallContext, reportProgress: (p: number) => void): Promise<RunResult> {
    return new Promise<RunResult>((resolveRun, rejectRun) => {
      const p: Pending = {
        key: request.init ? undefined : batchKey(request),
        request,
        signal: ctx.signal,
        reportProgress,
        resolve: resolveRun,
        reject: rejectRun,
        settled: false,
      };
      if (ctx.signal.aborted) return this.settle(p, aborted(this.name));
      ctx.signal.addEventListener('abort', () => this.settle(p, aborted(this.name)), { once: true });
      this.queue.push(p);
      this.pump();
    });
  }

  private settle(p: Pending, outcome: RunResult | Error): void {
    if (p.settled) return;
    p.settled = true;
    if (outcome instanceof Error) p.reject(outcome);
    else p.resolve(outcome);
  }

  /** Starts runs while a thread is free: the oldest job, plus queued jobs that can share its batch. */
  private pump(): void {
    for (const host of this.hosts) {
      if (host.busy) continue;
      while (this.queue.length && this.queue[0]!.settled) this.queue.shift();
      const head = this.queue.shift();
      if (!head) return;
      const members = [head];
      let count = head.request.items.length;
      if (this.config.batchAcrossJobs && head.key !== undefined) {
        for (let i = 0; i < this.queue.length; i++) {
          const p = this.queue[i]!;
          if (p.settled || p.key !== head.key || count + p.request.items.length > this.config.maxBatch) continue;
          members.push(p);
          count += p.request.items.length;
          this.queue.splice(i--, 1);
        }
      }
      void this.runBatch(host, members);
    }
  }

  private async runBatch(host: EngineHost, members: Pending[]): Promise<void> {
    const controller = new AbortController();
    const onAbort = () => {
      if (members.every((m) => m.signal.aborted)) controller.abort();
    };
    for (const m of members) m.signal.addEventListener('abort', onAbort, { once: true });
    onAbort();
    const request: EngineRequest = { ...members[0]!.request, items: members.flatMap((m) => m.request.items) };
    try {
      const result = await host.run(request, {
        signal: controller.signal,
        onProgress: (f) => {
          for (const m of members) if (!m.settled) m.reportProgress(f);
        },
      });
      let offset = 0;
      for (const m of members) {
        const n = m.request.items.length;
        this.settle(m, { ...result, images: result.images.slice(offset, offset + n), batchImages: request.items.length });
        offset += n;
      }
    } catch (err) {
      const e = this.toBackendError(err);
      for (const m of members) this.settle(m, m.signal.aborted ? aborted(this.name) : e);
    } finally {
      for (const m of members) m.signal.removeEventListener('abort', onAbort);
      if (!this.closed) this.pump();
    }
  }

  private toBackendError(err: unknown): BackendError {
    if (err instanceof BackendError) return err;
    if (err instanceof EngineThreadError) {
      if (err.kind === 'aborted') return aborted(this.name);
      if (err.kind === 'request') return new BackendError(`Backend "${this.name}": ${err.message}`, { code: 'invalid_request', cause: err });
      if (err.kind === 'crash') return new BackendError(`Backend "${this.name}": ${err.message}`, { code: 'backend_unavailable', retryable: true, cause: err });
    }
    return new BackendError(`Backend "${this.name}" failed: ${(err as Error)?.message ?? String(err)}`, { code: 'backend_error', cause: err });
  }
}

function aborted(name: string): BackendError {
  return new BackendError(`Call to backend "${name}" was aborted`, { code: 'aborted' });
}

function batchKey(r: EngineRequest): string {
  return JSON.stringify([r.modelDir, r.taesdDir ?? null, r.width ?? null, r.height ?? null, r.steps ?? null, r.guidanceScale ?? null, r.scheduler ?? null]);
}

async function encode(rgb: Uint8Array, width: number, height: number, format: keyof typeof MEDIA_TYPES, compression?: number): Promise<Uint8Array> {
  const img = sharp()(Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength), { raw: { width, height, channels: 3 } });
  const quality = compression === undefined ? undefined : Math.max(1, Math.min(100, Math.round(compression)));
  const out = format === 'png' ? img.png() : format === 'jpeg' ? img.jpeg(quality ? { quality } : {}) : img.webp(quality ? { quality } : {});
  return new Uint8Array(await out.toBuffer());
}

const round = (v: number) => Math.round(v * 10) / 10;
