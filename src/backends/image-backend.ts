/**
 * The one contract every backend implements, shaped like the Vercel AI SDK's image model
 * (prompt, n, size, seed, input images, mask, provider options, abort signal), plus what a queueing
 * service needs on top: progress reporting, a durable handle for resumable providers, declared
 * capabilities and health.
 */
import type { ImageSize, OutputFormat } from '../core/image-request.ts';
import type { JobWarning } from '../core/job.ts';
import type { BackendModelSpec, ModelCapabilities, ResolvedLora } from './model-spec.ts';

/** What a backend as a whole can do at most (the union of its models); per model, see `modelSpec()`. */
export interface BackendCapabilities extends ModelCapabilities {
  /** Most images one backend call can return; the worker splits larger `n`. */
  maxImagesPerCall: number;
}

/** A setting the backend could not honour as asked (see JobWarning). */
export type BackendWarning = JobWarning;

export interface BackendImageInput {
  data: Uint8Array;
  mediaType: string;
}

export interface BackendRequest {
  kind: 'generation' | 'edit' | 'variation';
  /** The backend's own model id (after public-name mapping). */
  model: string;
  prompt: string;
  negativePrompt?: string;
  n: number;
  size?: ImageSize;
  quality?: string;
  style?: string;
  outputFormat: OutputFormat;
  outputCompression?: number;
  background?: 'transparent' | 'opaque' | 'auto';
  seed?: number;
  steps?: number;
  guidanceScale?: number;
  user?: string;
  /**
   * Partial images (1–3) to stream through `reportPartialImage` while the call runs, for backends
   * that can (OpenAI's GPT image models); the rest ignore it.
   */
  partialImages?: number;
  inputImages: BackendImageInput[];
  mask?: BackendImageInput;
  /**
   * LoRA adapters, in stacking order, each with the backend's own reference (a file name, a server
   * path, a provider URL) resolved from the model's spec. Admission let through only what the model
   * offers, so a backend maps every one of them or refuses the call.
   */
  loras?: ResolvedLora[];
  providerOptions: Record<string, unknown>;
}

export interface BackendImage {
  data: Uint8Array;
  /** What the bytes are; the worker converts to the requested output format when they differ. */
  mediaType: string;
  revisedPrompt?: string;
  seed?: number;
}

export interface BackendResult {
  images: BackendImage[];
  /** Settings the backend could not honour, said rather than silently dropped. */
  warnings: BackendWarning[];
  /** Cost in USD where the backend knows it (a provider-reported price wins over the price table). */
  costUsd?: number;
  providerMetadata?: Record<string, unknown>;
}

export interface BackendPartialImage {
  /** Which image of this call (0-based) it is a partial of. */
  index: number;
  /** The backend's count of partials for that image (0-based). */
  partialIndex: number;
  data: Uint8Array;
  mediaType: string;
}

export interface BackendCallContext {
  jobId: string;
  /** Aborted on cancel, on shutdown past the deadline, or when the worker lost its lease. */
  signal: AbortSignal;
  /** 0..1; callers throttle, so backends may call it as often as they like. */
  reportProgress(progress: number): void;
  /**
   * A partial (in-progress) image, for backends that stream them (OpenAI's `partial_images`); shown on
   * the job's event stream. Optional: callers outside the worker may leave it out.
   */
  reportPartialImage?(image: BackendPartialImage): void;
  /** The durable handle saved by an earlier attempt of this job, if any. */
  savedState: unknown;
  /** Persists a durable handle before waiting on it, so a restarted worker resumes instead of resubmitting. */
  saveState(state: unknown): Promise<void>;
}

export interface BackendHealth {
  ok: boolean;
  message?: string;
  /**
   * Alive but with more work waiting than it should take on (a GPU pool past its queue-depth limit):
   * `/ready` answers 503 so an outside load balancer sheds traffic.
   */
  overloaded?: boolean;
  /** Backend-specific state for status pages (hosts, loaded checkpoints, queue depth). */
  details?: Record<string, unknown>;
  /** Not taking work yet because it is warming up (its first, small request is running). */
  warming?: boolean;
}

export interface ImageBackend {
  /** The config name of this backend instance. */
  readonly name: string;
  /** The backend type (`openai`, `comfyui`, …). */
  readonly type: string;
  readonly capabilities: BackendCapabilities;
  /**
   * What one of its models accepts (capabilities, sizes, qualities, most images per call, provider
   * options, pricing). Admission, routing and the worker read it; config may narrow it.
   */
  modelSpec(model: string): BackendModelSpec;
  generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult>;
  /**
   * Looks for LoRA adapters again (a name a request asked for was not in the last list: it may have
   * been added since). Backends that discover their LoRAs offer it; it may be throttled.
   */
  refreshLoras?(): Promise<void>;
  health(): Promise<BackendHealth>;
  close?(): Promise<void>;
}

/**
 * A failure a backend reports. `retryable` failures (host died, 5xx after retries) may be run again
 * by the worker within the job's attempt budget; the rest fail the job with `code`.
 */
export class BackendError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  readonly status?: number;

  constructor(message: string, opts: { code?: string; retryable?: boolean; status?: number; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'BackendError';
    this.code = opts.code ?? 'backend_error';
    this.retryable = opts.retryable ?? false;
    this.status = opts.status;
  }
}
