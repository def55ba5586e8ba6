/**
 * The normalised request a job carries. The API validates what a client sent (OpenAI fields plus
 * easel's extensions) into this shape; workers and backends only ever see this.
 */
export type OutputFormat = 'png' | 'jpeg' | 'webp';
export type ResponseFormat = 'url' | 'b64_json';

export interface ImageSize {
  width: number;
  height: number;
}

export interface ImageRequest {
  prompt: string;
  negativePrompt?: string;
  n: number;
  /** Undefined means "the backend's default" (OpenAI's `auto`). */
  size?: ImageSize;
  quality?: string;
  style?: string;
  responseFormat: ResponseFormat;
  outputFormat: OutputFormat;
  outputCompression?: number;
  background?: 'transparent' | 'opaque' | 'auto';
  user?: string;
  seed?: number;
  steps?: number;
  guidanceScale?: number;
  /**
   * Partial images (1–3) a backend that can stream them sends while it works (OpenAI's
   * `partial_images` on GPT image models); they go to the job's event stream. Others ignore it.
   */
  partialImages?: number;
  /**
   * OpenAI's own request fields: the strictness of its moderation (`low`, `auto`) and how closely an
   * edit follows its input images. A model that does not take them gets them dropped with a warning.
   */
  moderation?: 'low' | 'auto';
  inputFidelity?: 'high' | 'low';
  /** Storage keys of uploaded input images (edits, variations) and the mask. */
  inputImages?: string[];
  mask?: string;
  /**
   * LoRA adapters to apply, by the public names the model offers (`GET /v1/models`), in stacking
   * order; admission checks them against the model, the worker resolves them to the backend's own
   * references.
   */
  loras?: Array<{ name: string; weight: number }>;
  /** Backend-specific options, passed through untouched. */
  providerOptions?: Record<string, unknown>;
}

export const MEDIA_TYPES: Record<OutputFormat, string> = {
  png: 'image/png',
  jpeg: 'image/jpeg',
  webp: 'image/webp',
};

export function formatSize(size: ImageSize | undefined): string {
  return size ? `${size.width}x${size.height}` : 'auto';
}

/** Parses `WxH` (or `auto`); returns undefined for auto, null when malformed. */
export function parseSize(value: string): ImageSize | undefined | null {
  if (value === 'auto') return undefined;
  const m = /^(\d{2,5})x(\d{2,5})$/.exec(value);
  if (!m) return null;
  return { width: Number(m[1]), height: Number(m[2]) };
}
