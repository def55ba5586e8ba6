/**
 * How jobs and images look on the wire: the job object of the async API, and OpenAI's
 * ImagesResponse (`created`, `data[].url|b64_json`, `revised_prompt`).
 */
import type { Job, StoredImage } from '../core/job.ts';
import { toWarning } from '../core/job.ts';
import { visibleJobError } from './redact.ts';
import { formatSize } from '../core/image-request.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import type { RequestView } from './schemas/job.ts';

export interface ImageData {
  url?: string;
  b64_json?: string;
  revised_prompt?: string;
}

export interface ImagesResponse {
  created: number;
  data: ImageData[];
  output_format?: string;
  size?: string;
}

const unix = (d: Date | null): number | null => (d ? Math.floor(d.getTime() / 1000) : null);

/** The request a job carries, as the job object shows it (also the gallery's image parameters). */
export function requestView(job: Job): RequestView {
  return {
    prompt: job.request.prompt,
    n: job.request.n,
    size: formatSize(job.request.size),
    response_format: job.request.responseFormat,
    output_format: job.request.outputFormat,
    ...(job.request.negativePrompt ? { negative_prompt: job.request.negativePrompt } : {}),
    ...(job.request.seed !== undefined ? { seed: job.request.seed } : {}),
    ...(job.request.steps !== undefined ? { steps: job.request.steps } : {}),
    ...(job.request.guidanceScale !== undefined ? { guidance_scale: job.request.guidanceScale } : {}),
    ...(job.request.quality ? { quality: job.request.quality } : {}),
    ...(job.request.style ? { style: job.request.style } : {}),
    ...(job.request.loras?.length ? { loras: job.request.loras.map((l) => ({ name: l.name, weight: l.weight })) } : {}),
  };
}

export class JobViews {
  private readonly storage: ImageStorage;
  private readonly urlTtlSeconds: number;
  /** Cost control's fields on the job (cost, cache hit, routing reason, draft/refine links). */
  private readonly extras: ((job: Job) => Promise<Record<string, unknown>>) | undefined;

  constructor(storage: ImageStorage, urlTtlSeconds: number, extras?: (job: Job) => Promise<Record<string, unknown>>) {
    this.storage = storage;
    this.urlTtlSeconds = urlTtlSeconds;
    this.extras = extras;
  }

  /** `bytes` (by storage key) spares reading back images the caller still holds. */
  async imagesResponse(job: Job, images: StoredImage[], bytes?: Map<string, Uint8Array>): Promise<ImagesResponse> {
    const b64 = job.request.responseFormat === 'b64_json';
    const data = await Promise.all(
      images.map(async (img): Promise<ImageData> => {
        const item: ImageData = {};
        if (b64) {
          const held = bytes?.get(img.storageKey);
          const data = held ?? (await this.storage.get(img.storageKey))?.data;
          item.b64_json = data ? Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') : '';
        } else {
          item.url = await this.storage.url(img.storageKey, this.urlTtlSeconds);
        }
        if (img.revisedPrompt) item.revised_prompt = img.revisedPrompt;
        return item;
      }),
    );
    return {
      created: unix(job.finishedAt ?? job.createdAt)!,
      data,
      output_format: job.request.outputFormat,
      ...(images[0] ? { size: `${images[0].width}x${images[0].height}` } : {}),
    };
  }

  /** The job object; `images` are given when the job succeeded. */
  /** The job object; `admin` viewers see failures in full, others without internal detail. */
  async job(job: Job, images?: StoredImage[], viewer: { admin: boolean } = { admin: false }): Promise<Record<string, unknown>> {
    return {
      id: job.id,
      object: 'image.job',
      kind: job.kind,
      status: job.status,
      progress: job.status === 'succeeded' ? 1 : job.progress,
      model: job.model,
      backend: job.backend,
      priority: job.priority,
      created_at: unix(job.createdAt),
      started_at: unix(job.startedAt),
      finished_at: unix(job.finishedAt),
      attempts: job.attempt,
      cancel_requested: job.cancelRequested,
      request: requestView(job),
      metadata: job.metadata,
      webhook_url: job.webhookUrl,
      cost_usd: job.costUsd,
      result: job.status === 'succeeded' && images ? await this.imagesResponse(job, images) : null,
      warnings: (job.result?.warnings ?? []).map(toWarning),
      error: job.error ? visibleJobError(job.error, job.id, viewer.admin) : null,
      ...(this.extras ? await this.extras(job) : {}),
    };
  }
}
