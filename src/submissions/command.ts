/**
 * What a caller asks for, whichever door it came in by: the generations, edits, variations, drafts
 * and refine routes, a retry of an earlier job, or one request of a batch. Every one of them goes
 * through `Submissions.submit()` and nothing else.
 */
import type { ImageRequest } from '../core/image-request.ts';
import type { Job, JobKind, Priority } from '../core/job.ts';
import type { CachePolicy } from '../cache/image-cache.ts';
import type { Inputs } from './inputs.ts';
import type { Logger } from 'pino';

export type Entry = 'generations' | 'edits' | 'variations' | 'drafts' | 'refine' | 'retry' | 'batch';

export interface SubmitCommand {
  entry: Entry;
  kind: JobKind;
  /** What the caller sent as `model`: a model, an alias, or nothing for the default. */
  model: string | undefined;
  request: ImageRequest;
  priority: Priority;
  webhookUrl: string | null;
  metadata: Record<string, string> | null;
  cachePolicy: CachePolicy;
  idempotencyKey?: string;
  /** Input images: new uploads, or stored ones (a retry's, a draft to refine). */
  inputs?: Inputs;
  /**
   * A refinement: run as img2img from `inputs` when the chosen model can take an input image (and
   * prefer one that can among an alias's candidates), else as a generation from the prompt alone.
   */
  refine?: {
    parent: { jobId: string; index: number };
    /** How far img2img may move from the draft (0–1], for models whose provider options take `strength`. */
    strength?: number;
  };
  /** A batch's request: its batch (for the window cap) and the job id its claim assigned. */
  batch?: { id: string; capUsd: number | null; windowSeconds: number; jobId: string };
}

/** Who is asking. */
export interface Caller {
  keyId: string;
  keyName: string;
  admin: boolean;
}

export interface Submitted {
  job: Job;
  /** An `Idempotency-Key` seen before with the same request: the job that request created. */
  replayed: boolean;
  /** Answered from the cache (the job is already succeeded). */
  fromCache: boolean;
}

export interface SubmitOptions {
  /** The logger of the request that submitted (its lines then carry the request id). */
  log?: Logger;
  /**
   * Called once the job exists and before it can run or end: a synchronous caller starts watching
   * for its end here, so the end cannot slip by unseen.
   */
  onCreated?(job: Job): void;
}
