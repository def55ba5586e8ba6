/**
 * What the worker asks cost control at the edges of a job (src/worker/worker.ts calls these; each is
 * optional there, so a worker without cost control behaves exactly as before).
 */
import type { ImageRequest } from '../core/image-request.ts';
import type { Job } from '../core/job.ts';
import type { ImageBackend } from '../backends/image-backend.ts';
import type { ResolvedModel } from '../backends/registry.ts';

export interface AttemptRoute {
  route: ResolvedModel;
  /** Request fields this attempt changes (a fallback model's size or quality). */
  request?: Partial<ImageRequest>;
}

export interface CallOutcome {
  job: Job;
  route: ResolvedModel;
  ok: boolean;
  error?: unknown;
  /** Wall time of the attempt's backend calls. */
  ms: number;
}

export interface JobOutcome {
  status: 'succeeded' | 'failed' | 'canceled';
  /** The job's recorded cost (null: unknown). */
  costUsd: number | null;
  route?: ResolvedModel;
  /** Measured GPU-seconds (self-hosted backends), and the pool host that ran it when known. */
  gpuSeconds?: number;
  host?: string;
  images?: number;
}

export interface WorkerCostHooks {
  /** The backend this attempt runs on: fallback chains, circuit breakers, overloaded backends. */
  beforeAttempt(job: Job): Promise<AttemptRoute | undefined>;
  /** Cost of images on a self-hosted backend from measured GPU time; undefined for hosted ones. */
  costOf(backend: ImageBackend, gpuSeconds: number, host: string | undefined): number | undefined;
  /** After an attempt's backend work (circuit breaker, latency metrics). */
  afterCall(outcome: CallOutcome): void;
  /** A failure the job should survive by moving down its fallback chain (the worker re-queues it). */
  shouldFallBack(job: Job, error: unknown): Promise<boolean>;
  /**
   * The attempt produced its images and is about to complete the job: record the GPU time it
   * measured, so whoever sees the job succeeded sees its GPU time too. Never throws.
   */
  beforeComplete(job: Job, outcome: JobOutcome): Promise<void>;
  /** The job ended in this worker: settle its budget, fill the cache, metrics. */
  finished(job: Job, outcome: JobOutcome): Promise<void>;
}

/** GPU time a backend reports for one call, else the call's wall time; a pooled batch's share for this job's images. */
export function measuredGpuMs(providerMetadata: Record<string, unknown> | undefined, wallMs: number, images: number): { ms: number; host?: string } {
  const md = providerMetadata ?? {};
  const timings = md.timings as { runMs?: unknown } | undefined;
  let ms = typeof md.gpuMs === 'number' ? md.gpuMs : typeof timings?.runMs === 'number' ? timings.runMs : wallMs;
  const batch = md.batch as { size?: unknown } | undefined;
  // gpuMs of a pooled batch covers every image of the batch; this job pays for its own.
  if (typeof md.gpuMs === 'number' && typeof batch?.size === 'number' && batch.size > images && images > 0) ms = (ms * images) / batch.size;
  return { ms: Math.max(0, ms), host: typeof md.host === 'string' ? md.host : undefined };
}
