/**
 * Metadata: jobs, their images and API keys. One implementation over Kysely serves SQLite (embedded)
 * and Postgres (scale-out). Every state change is conditional on the job's current state and attempt,
 * so concurrent or duplicate workers cannot finish a job twice.
 */
import type { Job, JobError, JobResult, JobStatus, NewJob, Priority, StoredImage } from '../core/job.ts';

export interface ListJobsQuery {
  keyId: string;
  status?: JobStatus;
  /** Page size, 1..100. */
  limit: number;
  /** Return jobs older than this job id (ids sort by creation time). */
  after?: string;
}

export interface ListImagesQuery {
  keyId: string;
  /** Page size, 1..100. */
  limit: number;
  /** Return images after this image id in the listing's order (newest job first, then index). */
  after?: string;
  /** Public model name of the job that made the image. */
  model?: string;
  /** Case-insensitive substring of the job's prompt. */
  prompt?: string;
  /** Epoch milliseconds: created at or after / before. */
  createdFrom?: number;
  createdTo?: number;
}

export interface ImagePage {
  items: { image: StoredImage; job: Job }[];
  hasMore: boolean;
}

export interface JobPage {
  jobs: Job[];
  hasMore: boolean;
}

export interface CompleteJob {
  result: JobResult;
  images: StoredImage[];
  costUsd: number | null;
  /** When it finished (epoch ms); now when absent. */
  finishedAt?: number;
}

export type CancelOutcome =
  | { outcome: 'canceled'; job: Job }
  | { outcome: 'cancel_requested'; job: Job }
  | { outcome: 'already_terminal'; job: Job }
  | { outcome: 'not_found' };

export interface JobStore {
  createJob(job: NewJob): Promise<Job>;
  getJob(id: string): Promise<Job | undefined>;
  /**
   * A job this store instance created and nobody has taken yet, as it was created (then forgotten):
   * a worker in the same process starts its first attempt without reading the job back. Only what
   * cannot change before a first attempt may be trusted from it; `startAttempt` decides the rest.
   */
  takeCreated?(id: string): Job | undefined;
  /** Finds a job by the API key's idempotency key. */
  findByIdempotencyKey(keyId: string, idempotencyKey: string): Promise<Job | undefined>;
  listJobs(query: ListJobsQuery): Promise<JobPage>;
  /**
   * Begins a new attempt: a queued or running job becomes running with attempt+1 and `backend` set.
   * Returns undefined when the job is terminal (a duplicate delivery) or unknown.
   */
  startAttempt(id: string, backend: string | null): Promise<Job | undefined>;
  /** Progress 0..1 for the given attempt; false when that attempt no longer owns the job. */
  setProgress(id: string, attempt: number, progress: number): Promise<boolean>;
  saveBackendState(id: string, attempt: number, state: unknown): Promise<boolean>;
  /** Succeeds the job and records its images in one transaction, only if `attempt` still owns it. */
  completeJob(id: string, attempt: number, done: CompleteJob): Promise<boolean>;
  /** Fails a non-terminal job. With an attempt, only if that attempt still owns it. */
  failJob(id: string, attempt: number | null, error: JobError): Promise<boolean>;
  /** Cancels a queued job at once; marks a running one cancel-requested. */
  cancelJob(id: string): Promise<CancelOutcome>;
  /** A running job whose cancel was requested ends canceled (the worker saw the abort). */
  finishCanceled(id: string, attempt: number): Promise<boolean>;
  getImage(id: string): Promise<StoredImage | undefined>;
  listImagesForJob(jobId: string): Promise<StoredImage[]>;
  /** A key's images with their jobs, newest job first (then by index), filtered and cursor-paginated. */
  listImages(query: ListImagesQuery): Promise<ImagePage>;
  /** Jobs by status: every key's, or one key's. */
  countByStatus(keyId?: string): Promise<Record<JobStatus, number>>;
  /** Queued and running jobs counted per public model (every key's, or one key's): queue depth for status pages. */
  countActiveByModel(keyId?: string): Promise<{ model: string; status: 'queued' | 'running'; count: number }[]>;
  /** Queued and running jobs, oldest first (for re-enqueueing after a queue lost messages). */
  listUnfinished(limit: number, after?: string): Promise<{ id: string; priority: Priority; keyId: string }[]>;
}

export interface ApiKey {
  id: string;
  name: string;
  /** First characters of the key, safe to show (e.g. `easel_sk_AbC1`). */
  prefix: string;
  admin: boolean;
  createdAt: Date;
  revokedAt: Date | null;
}

export interface NewApiKey {
  id: string;
  name: string;
  prefix: string;
  /** SHA-256 hex of the full key; the key itself is never stored. */
  hash: string;
  admin: boolean;
}

export interface KeyStore {
  createKey(key: NewApiKey): Promise<ApiKey>;
  /** The live (unrevoked) key with this hash. */
  findByHash(hash: string): Promise<ApiKey | undefined>;
  listKeys(): Promise<ApiKey[]>;
  /** Revokes by id or name; false when no live key matched. */
  revokeKey(idOrName: string): Promise<boolean>;
  countKeys(): Promise<number>;
}
