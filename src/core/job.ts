/**
 * The job model every part of easel shares. A job is one accepted request (generation, edit or
 * variation); it moves queued → running → succeeded | failed | canceled and never leaves a terminal
 * state. `attempt` counts deliveries to workers: only the worker holding the latest attempt may finish
 * the job, which is what makes a crashed-and-redelivered job end exactly once.
 */
import type { ImageRequest } from './image-request.ts';

export const JOB_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;
export type JobStatus = (typeof JOB_STATUSES)[number];
export const TERMINAL_STATUSES: ReadonlySet<JobStatus> = new Set(['succeeded', 'failed', 'canceled']);
export const isTerminal = (s: JobStatus): boolean => TERMINAL_STATUSES.has(s);

export type JobKind = 'generation' | 'edit' | 'variation';

export const PRIORITIES = ['high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];
/** Lower runs first (BullMQ's convention). */
export const PRIORITY_RANK: Record<Priority, number> = { high: 1, normal: 5, low: 10 };

export interface JobError {
  message: string;
  /** OpenAI-style error code: `backend_error`, `timeout`, `content_policy_violation`, `worker_lost`, … */
  code: string;
}

export interface JobImageRef {
  imageId: string;
  revisedPrompt?: string;
}

/**
 * A setting that was not honoured as asked, said rather than dropped: `unsupported` (ignored),
 * `compatibility` (honoured differently, e.g. a quality word mapped to the model's own), `other`.
 */
export interface JobWarning {
  type: 'unsupported' | 'compatibility' | 'other';
  /** The request setting concerned (`style`, `quality`, `provider_options.x`…), when there is one. */
  setting?: string;
  detail: string;
}

export interface JobResult {
  images: JobImageRef[];
  /** Settings the backend (or easel) could not honour as asked. */
  warnings?: JobWarning[];
}

/** Reads a stored warning: rows written before warnings were structured hold plain sentences. */
export function toWarning(w: JobWarning | string): JobWarning {
  return typeof w === 'string' ? { type: 'other', detail: w } : w;
}

export interface Job {
  id: string;
  keyId: string;
  kind: JobKind;
  status: JobStatus;
  priority: Priority;
  /** The public model name the client asked for (or the default). */
  model: string;
  /** The backend that ran (or is running) the job; null until a worker picks it. */
  backend: string | null;
  request: ImageRequest;
  progress: number;
  attempt: number;
  error: JobError | null;
  result: JobResult | null;
  metadata: Record<string, string> | null;
  webhookUrl: string | null;
  idempotencyKey: string | null;
  /** Digest of what an idempotent submission asked for. */
  idempotencyFingerprint: string | null;
  cancelRequested: boolean;
  /** A backend's durable handle (e.g. a provider's prediction id) so a new worker resumes, not resubmits. */
  backendState: unknown;
  costUsd: number | null;
  createdAt: Date;
  startedAt: Date | null;
  finishedAt: Date | null;
  updatedAt: Date;
}

export interface NewJob {
  id: string;
  keyId: string;
  kind: JobKind;
  priority: Priority;
  model: string;
  request: ImageRequest;
  metadata: Record<string, string> | null;
  webhookUrl: string | null;
  idempotencyKey: string | null;
  idempotencyFingerprint?: string | null;
}

export interface StoredImage {
  id: string;
  jobId: string;
  keyId: string;
  index: number;
  storageKey: string;
  mediaType: string;
  width: number;
  height: number;
  bytes: number;
  sha256: string;
  revisedPrompt: string | null;
  /** A small WebP preview stored beside the image (see src/images/keys.ts); null when none was made. */
  thumbKey?: string | null;
  createdAt: Date;
}

/** Events published while a job runs; the API's sync waiters and (later) SSE streams listen to them. */
export type JobEvent =
  | {
      type: 'status';
      jobId: string;
      status: JobStatus;
      at: number;
      /**
       * The finished job as its worker just wrote it, for listeners in the same process (a sync request
       * answers from it without reading the job back). Never sent across processes.
       */
      local?: { job: Job; images: StoredImage[]; bytes?: Map<string, Uint8Array> };
      /**
       * On terminal statuses: whether the job has a webhook URL. `false` lets the webhook sweeper skip
       * its database probe for a job that needs no delivery; absent means unknown (it probes).
       */
      webhook?: boolean;
    }
  | { type: 'progress'; jobId: string; progress: number; at: number }
  | { type: 'cancel_requested'; jobId: string; at: number }
  /**
   * A provider webhook an API process verified, relayed to the worker processes (whose backend
   * instances hold the waiting calls); they verify it again before using it. `jobId` is
   * `provider:<backend>`, so per-job listeners never see it.
   */
  | { type: 'provider_webhook'; jobId: string; backend: string; headers: Record<string, string>; body: string; at: number }
  /**
   * An API key was revoked: every API process drops its cached authentication at once. `jobId` is
   * `keys`, so per-job listeners never see it.
   */
  | { type: 'key_revoked'; jobId: 'keys'; keyId: string; at: number };
