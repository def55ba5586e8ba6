/**
 * The HTTP half of a submission: who is asking, sync or async, and the answer. Routes parse their
 * request into a SubmitCommand, call `submitAndAnswer`, and nothing else: admission is the
 * submission pipeline's (src/submissions).
 *
 * - Async (`Prefer: respond-async` or `"async": true`): 202 with the job.
 * - Sync: waits for the job (up to `server.syncTimeoutSeconds`), then OpenAI's `{created, data}` or
 *   the job's error; a 504 with the job's location when it takes longer.
 * - `stream: true`: OpenAI's image event stream (src/api/image-stream.ts).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { DomainError } from '../core/errors.ts';
import type { ErrorKind } from '../core/errors.ts';
import { isTerminal } from '../core/job.ts';
import type { Job, StoredImage } from '../core/job.ts';
import type { Caller, SubmitCommand } from '../submissions/command.ts';
import { errorBody } from './http-errors.ts';
import { visibleJobError } from './redact.ts';
import { streamImages, tapPartials } from './image-stream.ts';
import type { PartialTap } from './image-stream.ts';
import { watchJob } from './job-waiter.ts';
import type { JobWatch } from './job-waiter.ts';
import type { JobViews } from './job-view.ts';
import type { ApiDeps } from './server.ts';
import { streamTiming } from './routes/events.ts';

export type AnswerDeps = ApiDeps & { views: JobViews };

export function prefersAsync(req: FastifyRequest): boolean {
  const prefer = req.headers.prefer;
  const values = Array.isArray(prefer) ? prefer.join(',') : (prefer ?? '');
  return values.split(',').some((p) => p.trim().toLowerCase() === 'respond-async');
}

export function callerOf(req: FastifyRequest): Caller {
  return { keyId: req.apiKey.id, keyName: req.apiKey.name, admin: req.apiKey.admin };
}

export interface AnswerMode {
  async: boolean;
  /** Admin callers see a failed job's error in full; others without internal detail. */
  admin?: boolean;
  /** Answer with OpenAI's image event stream. */
  stream?: boolean;
}

/** Submits the command and answers it: 202 with the job, the finished images, or an event stream. */
export async function submitAndAnswer(deps: AnswerDeps, req: FastifyRequest, reply: FastifyReply, cmd: SubmitCommand, mode: AnswerMode) {
  let watch: JobWatch | undefined;
  let tap: PartialTap | undefined;
  const timeoutMs = deps.config.server.syncTimeoutSeconds * 1000;
  let submitted;
  try {
    submitted = await deps.submissions.submit(cmd, callerOf(req), {
      log: req.log as unknown as Logger,
      // Watching starts before the job can run, so its end (and its partial images) cannot slip by unseen.
      onCreated: (job) => {
        if (!mode.async) watch = watchJob(deps.store, deps.events, job.id, timeoutMs, { checkNow: false });
        if (mode.stream) tap = tapPartials(deps.events, job.id);
      },
    });
  } catch (err) {
    watch?.cancel();
    tap?.stop();
    throw err;
  }
  if (submitted.replayed) {
    watch?.cancel();
    tap?.stop();
    watch = undefined;
    tap = undefined;
    reply.header('idempotent-replayed', 'true');
  }
  return answer(deps, reply, submitted.job, { ...mode, admin: req.apiKey.admin }, watch, tap);
}

/** Async: 202 with the job. Sync: wait for it (up to the limit), then the images or its error. */
export async function answer(deps: AnswerDeps, reply: FastifyReply, job: Job, mode: AnswerMode, watch?: JobWatch, tap?: PartialTap) {
  const location = `${deps.publicUrl()}/v1/images/jobs/${job.id}`;
  if (mode.async) {
    watch?.cancel();
    return reply.status(202).header('location', location).send(await deps.views.job(job, undefined, { admin: !!mode.admin }));
  }
  const timeoutMs = deps.config.server.syncTimeoutSeconds * 1000;
  if (mode.stream) {
    const streamDeps = {
      store: deps.store,
      storage: deps.storage,
      heartbeatMs: streamTiming.heartbeatMs,
      syncTimeoutSeconds: deps.config.server.syncTimeoutSeconds,
      failure: (j: Job) => errorBody(unfinishedError(j, !!mode.admin)),
    };
    // A replayed or cached job that is not finished yet is watched from here.
    const w = isTerminal(job.status) ? (watch?.cancel(), undefined) : (watch ?? watchJob(deps.store, deps.events, job.id, timeoutMs));
    return streamImages(streamDeps, reply, job, location, w, tap ?? (isTerminal(job.status) ? undefined : tapPartials(deps.events, job.id)));
  }
  if (isTerminal(job.status)) watch?.cancel();
  const done = isTerminal(job.status) ? { job } : await (watch ?? watchJob(deps.store, deps.events, job.id, timeoutMs)).done;
  if (!done) {
    throw new DomainError('timeout', `Job ${job.id} did not finish within ${deps.config.server.syncTimeoutSeconds}s. It is still running: fetch it at GET /v1/images/jobs/${job.id}.`, {
      code: 'sync_timeout',
      jobId: job.id,
      retryable: false,
    });
  }
  return sendFinished(deps, reply, done.job, location, !!mode.admin, done.images, done.bytes);
}

async function sendFinished(deps: AnswerDeps, reply: FastifyReply, job: Job, location: string, admin: boolean, known?: StoredImage[], bytes?: Map<string, Uint8Array>) {
  reply.header('x-easel-job-id', job.id).header('content-location', location);
  if (job.status === 'succeeded') {
    const images = known ?? (await deps.store.listImagesForJob(job.id));
    return reply.send(await deps.views.imagesResponse(job, images, bytes));
  }
  throw unfinishedError(job, admin);
}

/** How a failed job's error code answers a synchronous request (or ends a stream). */
const FAILURE_KIND: Record<string, ErrorKind> = {
  content_policy_violation: 'policy',
  invalid_request: 'invalid',
  model_not_found: 'not_found',
  insufficient_quota: 'quota',
  backend_auth: 'upstream',
  backend_unavailable: 'unavailable',
  queue_unavailable: 'unavailable',
  timeout: 'timeout',
};

/** What a synchronous request (or a stream) answers for a job that ended other than succeeded. */
export function unfinishedError(job: Job, admin: boolean): DomainError {
  if (job.status === 'canceled') return new DomainError('conflict', `Job ${job.id} was canceled.`, { code: 'job_canceled', jobId: job.id, retryable: false });
  const error = visibleJobError(job.error ?? { code: 'backend_error', message: 'unknown error' }, job.id, admin);
  const kind = Object.hasOwn(FAILURE_KIND, error.code) ? FAILURE_KIND[error.code]! : 'upstream';
  return new DomainError(kind, `Job ${job.id} failed: ${error.message}`, { code: error.code, jobId: job.id, retryable: kind === 'unavailable' ? undefined : false });
}
