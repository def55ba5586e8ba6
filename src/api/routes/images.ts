/** POST /v1/images/generations — sync (wait for the job) or async (202 + job). */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError } from '../../core/errors.ts';
import { newJobId } from '../../core/ids.ts';
import { isTerminal } from '../../core/job.ts';
import type { Job, JobKind, StoredImage } from '../../core/job.ts';
import type { ImageRequest } from '../../core/image-request.ts';
import type { Priority } from '../../core/job.ts';
import { parseGeneration } from '../generation-request.ts';
import { watchJob } from '../job-waiter.ts';
import type { JobWatch } from '../job-waiter.ts';
import type { JobViews } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';
import type { ResolvedModel } from '../../backends/registry.ts';
import { fingerprint, idempotencyKeyOf, idempotencyMismatch } from '../idempotency.ts';
import { isUniqueViolation } from '../../store/sql-job-store.ts';
import { parseCachePolicy } from '../../cost/service.ts';
import { streamImages, tapPartials } from '../image-stream.ts';
import type { PartialTap } from '../image-stream.ts';
import { streamTiming } from './events.ts';
import { modelLoadingError } from '../model-loading.ts';

export function prefersAsync(req: FastifyRequest): boolean {
  const prefer = req.headers.prefer;
  const values = Array.isArray(prefer) ? prefer.join(',') : (prefer ?? '');
  return values.split(',').some((p) => p.trim().toLowerCase() === 'respond-async');
}

/** HTTP status for a failed job's error code when a synchronous request reports it. */
const FAILURE_STATUS: Record<string, number> = {
  content_policy_violation: 400,
  invalid_request: 400,
  model_not_found: 404,
  backend_auth: 502,
  backend_unavailable: 503,
  timeout: 504,
};

export interface Submission {
  kind: JobKind;
  model: string | undefined;
  request: ImageRequest;
  priority: Priority;
  webhookUrl: string | null;
  metadata: Record<string, string> | null;
  async: boolean;
  /** Answer with OpenAI's image event stream (`stream: true`). */
  stream?: boolean;
  /** Edits and variations: what the uploads ask of the backend, checked before anything is stored. */
  inputs?: { images: number; mask: boolean };
  /**
   * Runs once the request is admitted, before the job exists: edits validate and store their uploads
   * under the job's id here, so any worker can read them. Returns request fields to add (their keys).
   */
  prepare?: (jobId: string) => Promise<Partial<ImageRequest>>;
  /** Digest of uploaded files, so an idempotent retry with other files is told apart. */
  uploadDigest?: string;
  /** Refinements (src/api/routes/refine.ts): rather an img2img-capable model, and the draft it refines. */
  preferEdit?: boolean;
  parent?: { jobId: string; index: number };
}

/** Refuses (400 naming the model) a job its model's backend does not declare it can run. */
export function checkCapability(route: ResolvedModel, kind: JobKind, inputs?: { images: number; mask: boolean }): void {
  const caps = route.backend.capabilities;
  const refuse = (message: string) => new ApiError(400, message, { param: 'model', code: 'unsupported_capability' });
  if (kind === 'generation' && !caps.generate) throw refuse(`Model '${route.name}' cannot generate images from a prompt alone.`);
  if (kind === 'variation' && !caps.variation) throw refuse(`Model '${route.name}' cannot do variations.`);
  if (kind === 'edit') {
    if (!caps.edit) throw refuse(`Model '${route.name}' cannot do edits (it takes no input images).`);
    if (inputs?.mask && !caps.mask) throw refuse(`Model '${route.name}' cannot do edits with a mask.`);
    if (inputs && inputs.images > caps.maxInputImages) {
      throw refuse(`Model '${route.name}' cannot do edits with ${inputs.images} input images (at most ${caps.maxInputImages}).`);
    }
  }
}

/** Shared by generations, edits and variations: admit, enqueue, then answer sync or async. */
export async function submitJob(deps: ApiDeps & { views: JobViews }, req: FastifyRequest, reply: FastifyReply, sub: Submission) {
  // Cost control routes aliases (tiers, use cases) and fallbacks to the cheapest healthy capable model.
  const cachePolicy = deps.cost ? parseCachePolicy(req.headers['easel-cache']) : 'auto';
  const decision = deps.cost ? await deps.cost.route({ model: sub.model, kind: sub.kind, request: sub.request, inputs: sub.inputs, preferEdit: sub.preferEdit }) : undefined;
  const route = decision?.route ?? deps.backends.resolve(sub.model);
  if (!route) {
    // issue-20 (first start): while the default model downloads, 503 model_loading with its progress
    // and Retry-After instead of no_backend. Keep this check when submitJob is rewritten.
    const loading = deps.backends.listModels().length === 0 ? modelLoadingError(deps.autoPull) : undefined;
    if (loading) throw loading;
    if (sub.model === undefined || deps.backends.listModels().length === 0) {
      throw new ApiError(503, 'No image model is configured on this server. Pull one for the built-in engine (npm run easel -- models pull sd-turbo) or add a backend and a model to the config (see the README).', { code: 'no_backend' });
    }
    throw new ApiError(404, `The model '${sub.model}' does not exist or you do not have access to it.`, { param: 'model', code: 'model_not_found' });
  }
  checkCapability(route, sub.kind, sub.inputs);

  // A retried submission returns the job the first one created (an alias is fingerprinted as asked: its pick may change).
  const idemKey = idempotencyKeyOf(req);
  const askedModel = decision ? (decision.record.alias ?? sub.model ?? deps.backends.defaultModel) : route.name;
  const idemPrint = idemKey
    ? fingerprint({ kind: sub.kind, model: askedModel, request: sub.request, priority: sub.priority, webhook: sub.webhookUrl, metadata: sub.metadata, uploads: sub.uploadDigest })
    : null;
  const replay = async (existing: Job) => {
    if (existing.idempotencyFingerprint !== idemPrint) throw idempotencyMismatch(idemKey!, existing.id);
    reply.header('idempotent-replayed', 'true');
    return answer(deps, reply, existing, sub);
  };
  if (idemKey) {
    const existing = await deps.store.findByIdempotencyKey(req.apiKey.id, idemKey);
    if (existing) return replay(existing);
  }

  if (deps.moderator) {
    await deps.moderator.assertAllowed(sub.request.prompt, 'prompt');
    if (sub.request.negativePrompt) await deps.moderator.assertAllowed(sub.request.negativePrompt, 'negative_prompt');
  }
  if (sub.webhookUrl && deps.checkWebhookUrl) await deps.checkWebhookUrl(sub.webhookUrl);
  const id = newJobId();
  // Cache lookup, then budget reservation (429 insufficient_quota when a budget would be exceeded).
  const routed = decision?.request ?? sub.request;
  const admission = deps.cost
    ? await deps.cost.admit({ jobId: id, key: req.apiKey, kind: sub.kind, decision, route, request: routed, cachePolicy, parent: sub.parent })
    : undefined;
  let job: Job;
  try {
    const request = sub.prepare ? { ...routed, ...(await sub.prepare(id)) } : routed;
    job = await deps.store.createJob({
      id,
      keyId: req.apiKey.id,
      kind: sub.kind,
      priority: sub.priority,
      model: route.name,
      request,
      metadata: sub.metadata,
      webhookUrl: sub.webhookUrl,
      idempotencyKey: idemKey ?? null,
      idempotencyFingerprint: idemPrint,
    });
  } catch (err) {
    await deps.cost?.abandon(admission);
    // Two submissions with one key raced: the other one won; answer with its job.
    if (idemKey && isUniqueViolation(err)) {
      const existing = await deps.store.findByIdempotencyKey(req.apiKey.id, idemKey);
      if (existing) return replay(existing);
    }
    throw err;
  }
  if (deps.cost && admission) {
    await deps.cost.recordAdmission(job, admission).catch((err) => req.log.warn({ err, jobId: job.id }, 'could not record the job\'s routing and cost'));
    // A cache hit completes the job here; it never reaches the queue.
    if (admission.hit && (await deps.cost.fulfil(job, admission))) {
      req.log.info({ jobId: job.id, model: job.model, keyId: job.keyId, cache: admission.hit.kind, source: admission.hit.sourceJobId }, 'job answered from the cache');
      return answer(deps, reply, (await deps.store.getJob(job.id)) ?? job, sub);
    }
  }
  // A sync request watches before the job is queued, so its end cannot slip by unseen and no first read is needed.
  const watch = sub.async ? undefined : watchJob(deps.store, deps.events, job.id, deps.config.server.syncTimeoutSeconds * 1000, { checkNow: false });
  // Likewise a stream listens for partial images before the job can run.
  const tap = sub.stream ? tapPartials(deps.events, job.id) : undefined;
  try {
    await deps.queue.enqueue({ jobId: job.id, priority: job.priority });
  } catch (err) {
    watch?.cancel();
    tap?.stop();
    // Not accepted after all: say so rather than leave a job nobody will run.
    await deps.store.failJob(job.id, null, { code: 'queue_unavailable', message: 'the job queue was unreachable when the job was submitted' }).catch(() => {});
    await deps.cost?.abandon(admission);
    req.log.error({ err, jobId: job.id }, 'enqueue failed');
    throw new ApiError(503, 'The job queue is unreachable; nothing was queued. Retry shortly.', { code: 'queue_unavailable' });
  }
  req.log.info({ jobId: job.id, model: job.model, keyId: job.keyId, async: sub.async }, 'job accepted');

  return answer(deps, reply, job, sub, watch, tap);
}

/** Async: 202 with the job. Sync: wait for it (up to the limit), then the images or its error. */
async function answer(deps: ApiDeps & { views: JobViews }, reply: FastifyReply, job: Job, sub: Pick<Submission, 'async' | 'stream'>, watch?: JobWatch, tap?: PartialTap) {
  const location = `${deps.publicUrl()}/v1/images/jobs/${job.id}`;
  if (sub.async) {
    return reply.status(202).header('location', location).send(await deps.views.job(job));
  }
  const timeoutMs = deps.config.server.syncTimeoutSeconds * 1000;
  if (sub.stream) {
    const streamDeps = {
      store: deps.store,
      storage: deps.storage,
      heartbeatMs: streamTiming.heartbeatMs,
      syncTimeoutSeconds: deps.config.server.syncTimeoutSeconds,
      failure: (j: Job) => unfinishedError(j).toBody(),
    };
    // A replayed or cached job that is not finished yet is watched from here.
    return streamImages(streamDeps, reply, job, location, isTerminal(job.status) ? undefined : (watch ?? watchJob(deps.store, deps.events, job.id, timeoutMs)), tap);
  }
  const done = isTerminal(job.status) ? { job } : await (watch ?? watchJob(deps.store, deps.events, job.id, timeoutMs)).done;
  if (!done) {
    throw new ApiError(
      504,
      `Job ${job.id} did not finish within ${deps.config.server.syncTimeoutSeconds}s. It is still running: fetch it at GET /v1/images/jobs/${job.id}.`,
      { type: 'timeout_error', code: 'sync_timeout', headers: { location, 'x-should-retry': 'false', 'x-easel-job-id': job.id } },
    );
  }
  return sendFinished(deps, reply, done.job, location, done.images, done.bytes);
}

async function sendFinished(deps: ApiDeps & { views: JobViews }, reply: FastifyReply, job: Job, location: string, known?: StoredImage[], bytes?: Map<string, Uint8Array>) {
  reply.header('x-easel-job-id', job.id).header('content-location', location);
  if (job.status === 'succeeded') {
    const images = known ?? (await deps.store.listImagesForJob(job.id));
    return reply.send(await deps.views.imagesResponse(job, images, bytes));
  }
  throw unfinishedError(job);
}

/** What a synchronous request (or a stream) answers for a job that ended other than succeeded. */
function unfinishedError(job: Job): ApiError {
  if (job.status === 'canceled') {
    return new ApiError(409, `Job ${job.id} was canceled.`, { code: 'job_canceled', headers: { 'x-should-retry': 'false' } });
  }
  const code = job.error?.code ?? 'backend_error';
  const status = FAILURE_STATUS[code] ?? 502;
  const retry: Record<string, string> = status === 503 ? {} : { 'x-should-retry': 'false' };
  return new ApiError(status, `Job ${job.id} failed: ${job.error?.message ?? 'unknown error'}`, { code, headers: retry });
}

export async function imageRoutes(app: FastifyInstance, deps: ApiDeps & { views: JobViews }) {
  app.post('/images/generations', async (req, reply) => {
    const parsed = parseGeneration(req.body, deps.config.limits, prefersAsync(req));
    return submitJob(deps, req, reply, { kind: 'generation', ...parsed });
  });
}
