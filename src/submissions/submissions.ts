/**
 * The one way in. Every submission (generations, edits, variations, drafts, refine, retry and each
 * request of a batch) is admitted here, by the same steps in the same order, so a promise made at
 * one door holds at all of them:
 *
 *   resolveModel        a model, an alias (tier or use case), or the default → the model that runs it
 *   checkCapability     the model can do this kind of job with these inputs (its spec says so)
 *   checkRequest        the size, quality, style and prompt length are ones the model takes
 *   checkLoras          the LoRA adapters named are ones the model offers (looked for again on a miss)
 *   checkProviderOptions  only options the model declares, none that would change what is priced,
 *                       moderated or limited
 *   checkIdempotency    the same key and request answer the job they created; another request is a 422
 *   moderate            the prompt and negative prompt pass the content policy
 *   checkWebhook        the webhook URL is one easel may call
 *   checkQueueLimit     the key (and its group) has room in the queue (src/fairness; a batch waits instead)
 *   admitBudget         the cache answers it, or its estimated cost is reserved on every budget
 *   storeInputs         input images checked and stored under the job's id
 *   createJob           the job is durable
 *   answerFromCache | enqueue
 *
 * Rate limits are enforced at the door (each HTTP route declares its group; a batch is limited when
 * it is submitted, not per request). Errors are DomainErrors; the API maps them to HTTP.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { DomainError } from '../core/errors.ts';
import { newJobId } from '../core/ids.ts';
import type { ImageRequest } from '../core/image-request.ts';
import type { Job, JobKind } from '../core/job.ts';
import { capabilityProblem, guardedOptionsProblem, loraProblem, providerOptionsProblem, requestProblem } from '../backends/model-spec.ts';
import type { SpecProblem } from '../backends/model-spec.ts';
import type { BackendRegistry, ResolvedModel } from '../backends/registry.ts';
import type { Router, RouteDecision } from '../routing/router.ts';
import type { BudgetGate } from '../budgets/gate.ts';
import type { CacheHit, ImageCache } from '../cache/image-cache.ts';
import type { FairShare } from '../fairness/fair-share.ts';
import type { JobCosts } from '../jobs/job-costs.ts';
import type { JobSettler } from '../jobs/settle.ts';
import type { PromptModerator } from '../moderation/prompt-moderator.ts';
import type { JobQueue } from '../queue/job-queue.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import type { JobStore } from '../store/job-store.ts';
import { isUniqueViolation } from '../store/sql-job-store.ts';
import type { Caller, SubmitCommand, SubmitOptions, Submitted } from './command.ts';
import { inputCounts, storeInputs } from './inputs.ts';
import type { UploadLimits } from './inputs.ts';
import { fingerprint } from './fingerprint.ts';
import { lorasProblem } from './loras.ts';

export interface SubmissionsDeps {
  store: JobStore;
  queue: JobQueue;
  storage: ImageStorage;
  backends: BackendRegistry;
  router: Router;
  budgets: BudgetGate;
  cache: ImageCache;
  jobCosts: JobCosts;
  settler: JobSettler;
  moderator: PromptModerator;
  /** Refuses webhook URLs easel must not call (private addresses). */
  checkWebhookUrl: (url: string) => Promise<void>;
  uploads: UploadLimits;
  log: Logger;
  /**
   * Why nothing can run yet when no model is configured (no backend, or the built-in engine's model
   * still downloading): the error to answer with.
   */
  unavailable?: () => DomainError | undefined;
  /** Fair sharing between keys: queue limits at admission, queue depth per key (src/fairness). */
  fairness?: FairShare;
}

/** A command after its model is resolved: the job's kind and request as they will run. */
interface Resolved {
  decision: RouteDecision;
  route: ResolvedModel;
  kind: JobKind;
  request: ImageRequest;
  inputs: SubmitCommand['inputs'];
  /** What the caller asked for as `model` (an alias as asked: its pick may change). */
  asked: string;
}

interface Admission {
  jobId: string;
  estimateUsd: number;
  reserved: boolean;
  hit?: CacheHit;
  embedding?: string;
}

const refuse = (p: SpecProblem): DomainError => new DomainError('invalid', p.message, { param: p.param, code: p.code });

export class Submissions {
  private readonly deps: SubmissionsDeps;

  constructor(deps: SubmissionsDeps) {
    this.deps = deps;
  }

  /** Fair sharing's view of the queue (GET /v1/system shows it). */
  get fairness(): FairShare | undefined {
    return this.deps.fairness;
  }

  /** Admits a command: the job it created (or answered from the cache, or created before with the same key). */
  async submit(cmd: SubmitCommand, caller: Caller, opts: SubmitOptions = {}): Promise<Submitted> {
    const r = await this.resolveAndCheck(cmd);
    const print = this.fingerprintOf(cmd, r);
    const replay = await this.checkIdempotency(cmd, caller, print);
    if (replay) return replay;
    await this.moderate(r.request);
    await this.checkWebhook(cmd);
    await this.deps.fairness?.checkQueueLimit(caller);

    const admission = await this.admitBudget(cmd, caller, r);
    let job: Job;
    let stored: string[] = [];
    try {
      const inputs = r.inputs ? await storeInputs(this.deps.storage, admission.jobId, r.inputs, this.deps.uploads) : undefined;
      stored = inputs?.stored ?? [];
      const request = inputs ? { ...r.request, inputImages: inputs.inputImages, ...(inputs.mask ? { mask: inputs.mask } : {}) } : r.request;
      job = await this.createJob(cmd, caller, r, request, admission.jobId, print);
    } catch (err) {
      if (admission.reserved) await this.deps.budgets.release(admission.jobId);
      await Promise.all(stored.map((key) => this.deps.storage.delete(key).catch(() => {})));
      // Two submissions with one key raced: the other one won; answer with its job.
      if (cmd.idempotencyKey && isUniqueViolation(err)) {
        const replayed = await this.checkIdempotency(cmd, caller, print);
        if (replayed) return replayed;
      }
      if (cmd.batch && isUniqueViolation(err)) {
        const existing = await this.deps.store.getJob(admission.jobId);
        if (existing) return { job: existing, replayed: true, fromCache: false };
      }
      throw err;
    }
    await this.recordAdmission(job, cmd, caller, r, admission);
    opts.onCreated?.(job);
    if (admission.hit) {
      const answered = await this.answerFromCache(job, caller, admission, opts.log ?? this.deps.log);
      if (answered) return { job: answered, replayed: false, fromCache: true };
    }
    await this.enqueue(job, admission, opts.log ?? this.deps.log);
    return { job, replayed: false, fromCache: false };
  }

  /**
   * The checks that need no state (model, capability, request fields, provider options, moderation,
   * webhook URL), for a batch validating its requests when it is submitted. `submit` runs them again.
   */
  async check(cmd: SubmitCommand): Promise<void> {
    const r = await this.resolveAndCheck(cmd);
    await this.moderate(r.request);
    await this.checkWebhook(cmd);
  }

  /** The first steps of both: the model resolved, and what it is asked checked against its spec. */
  private async resolveAndCheck(cmd: SubmitCommand) {
    this.guardProviderOptions(cmd);
    const r = await this.resolveModel(cmd);
    this.checkCapability(r);
    this.checkRequest(r);
    await this.checkLoras(r);
    this.checkProviderOptions(r);
    return r;
  }

  // ---------------------------------------------------------------- the steps

  /**
   * Before anything else: provider options that would change what is priced, moderated or limited
   * (under any provider's name, at any depth), or nest too deep, are refused whatever the model.
   */
  guardProviderOptions(cmd: SubmitCommand): void {
    const problem = guardedOptionsProblem(cmd.request.providerOptions);
    if (problem) throw refuse(problem);
  }

  /** A model, an alias (its cheapest capable healthy candidate), or the default model. */
  async resolveModel(cmd: SubmitCommand): Promise<Resolved> {
    const unavailable = this.deps.backends.listModels().length === 0 ? this.deps.unavailable?.() : undefined;
    if (unavailable) throw unavailable;
    const { router } = this.deps;
    const counts = inputCounts(cmd.inputs);
    let kind = cmd.kind;
    let inputs = cmd.inputs;
    let decision: RouteDecision | undefined;
    if (cmd.refine && cmd.inputs) {
      // img2img from the draft when the refining model can take it as its input image.
      const asEdit = await router.route({ model: cmd.model, kind: 'edit', request: cmd.request, inputs: counts, preferEdit: true });
      if (asEdit && router.canEdit(asEdit.route, counts.images)) {
        decision = asEdit;
        kind = 'edit';
        // A strength the model takes goes with it; one it does not is a hint dropped, not a refusal.
        const strength = cmd.refine.strength;
        if (strength !== undefined) {
          const withStrength = { ...asEdit.request.providerOptions, strength };
          if (asEdit.route.spec.providerOptions.safeParse(withStrength).success) decision = { ...asEdit, request: { ...asEdit.request, providerOptions: withStrength } };
        }
      } else {
        inputs = undefined;
        kind = 'generation';
      }
    }
    decision ??= await router.route({ model: cmd.model, kind, request: cmd.request, inputs: inputCounts(inputs) });
    if (!decision) {
      if (cmd.model === undefined || this.deps.backends.listModels().length === 0) {
        throw new DomainError('unavailable', 'No image model is configured on this server. Pull one for the built-in engine (npm run easel -- models pull sd-turbo) or add a backend and a model to the config (see the README).', { code: 'no_backend' });
      }
      const shown = cmd.model.length > 100 ? `${cmd.model.slice(0, 100)}…` : cmd.model;
      if (router.isAlias(cmd.model)) throw this.aliasRefusal(cmd.model, shown, kind, cmd);
      throw new DomainError('not_found', `The model '${shown}' does not exist or you do not have access to it.`, { param: 'model', code: 'model_not_found' });
    }
    return { decision, route: decision.route, kind, request: decision.request, inputs, asked: decision.record.alias ?? cmd.model ?? this.deps.backends.defaultModel ?? decision.route.name };
  }

  /** The chosen model can do this kind of job with these inputs. */
  checkCapability(r: Resolved): void {
    const counts = inputCounts(r.inputs);
    const problem = capabilityProblem(r.route.name, r.route.spec, { kind: r.kind, inputImages: counts.images, mask: counts.mask });
    if (problem) throw refuse(problem);
  }

  /** The size, quality, style and prompt length are ones the chosen model takes. */
  checkRequest(r: Resolved): void {
    const problem = requestProblem(r.route.name, r.route.spec, r.request, r.kind);
    if (problem) throw refuse(problem);
  }

  /** The LoRA adapters named are ones the chosen model offers. */
  async checkLoras(r: Resolved): Promise<void> {
    const problem = await lorasProblem(r.route, r.request, this.deps.backends);
    if (problem) throw refuse(problem);
  }

  /** Provider options the model declares, and none that would change what is priced, moderated or limited. */
  checkProviderOptions(r: Resolved): void {
    const problem = providerOptionsProblem(r.route.name, r.route.spec, r.request.providerOptions);
    if (problem) throw refuse(problem);
  }

  /** A key seen before: the same request answers its job; another request is refused. */
  async checkIdempotency(cmd: SubmitCommand, caller: Caller, print: string | null): Promise<Submitted | undefined> {
    if (!cmd.idempotencyKey) return undefined;
    const existing = await this.deps.store.findByIdempotencyKey(caller.keyId, cmd.idempotencyKey);
    if (!existing) return undefined;
    if (existing.idempotencyFingerprint !== print) {
      throw new DomainError('unprocessable', `Idempotency-Key '${cmd.idempotencyKey}' was already used for job ${existing.id} with a different request. Use a new key for a new request.`, {
        param: 'Idempotency-Key',
        code: 'idempotency_key_reused',
      });
    }
    return { job: existing, replayed: true, fromCache: false };
  }

  async moderate(request: ImageRequest): Promise<void> {
    if (request.prompt) await this.deps.moderator.assertAllowed(request.prompt, 'prompt');
    if (request.negativePrompt) await this.deps.moderator.assertAllowed(request.negativePrompt, 'negative_prompt');
  }

  async checkWebhook(cmd: SubmitCommand): Promise<void> {
    if (cmd.webhookUrl) await this.deps.checkWebhookUrl(cmd.webhookUrl);
  }

  /** The cache answers it (no charge), or its estimate is reserved on every budget limiting the key. */
  async admitBudget(cmd: SubmitCommand, caller: Caller, r: Resolved): Promise<Admission> {
    const jobId = cmd.batch?.jobId ?? newJobId();
    const estimateUsd = r.decision.estimate.usd;
    const key = { id: caller.keyId, name: caller.keyName };
    const found = await this.deps.cache.lookup({ key, kind: r.kind, model: r.route.name, request: r.request, policy: cmd.cachePolicy });
    if (found.hit) return { jobId, estimateUsd, reserved: false, hit: found.hit, embedding: found.embedding };
    const batch = cmd.batch ? { id: cmd.batch.id, capUsd: cmd.batch.capUsd, windowSeconds: cmd.batch.windowSeconds } : undefined;
    const reserved = await this.deps.budgets.reserve(jobId, key, estimateUsd, batch);
    return { jobId, estimateUsd, reserved, embedding: found.embedding };
  }

  async createJob(cmd: SubmitCommand, caller: Caller, r: Resolved, request: ImageRequest, id: string, print: string | null): Promise<Job> {
    return this.deps.store.createJob({
      id,
      keyId: caller.keyId,
      kind: r.kind,
      priority: cmd.priority,
      model: r.route.name,
      request,
      metadata: cmd.metadata,
      webhookUrl: cmd.webhookUrl,
      idempotencyKey: cmd.idempotencyKey ?? null,
      idempotencyFingerprint: print,
    });
  }

  /** A cache hit completes the job here: the source's images are copied under it; it never reaches the queue. */
  async answerFromCache(job: Job, caller: Caller, admission: Admission, log: Logger): Promise<Job | undefined> {
    const hit = admission.hit!;
    const started = await this.deps.store.startAttempt(job.id, 'cache');
    const images = started ? await this.deps.cache.copyFor(job, hit).catch((err) => (this.deps.log.warn({ err, jobId: job.id }, 'copying a cache hit failed'), undefined)) : undefined;
    if (started && images) {
      const finishedAt = Date.now();
      const detail = `answered from the ${hit.kind} cache${hit.similarity !== undefined ? ` (similarity ${hit.similarity})` : ''}`;
      const result = { images: images.map((i) => ({ imageId: i.id, revisedPrompt: i.revisedPrompt ?? undefined })), warnings: [{ type: 'other' as const, detail }] };
      const won = await this.deps.settler.succeed(started, started.attempt, { status: 'succeeded', result, images, costUsd: 0, finishedAt, cache: { kind: hit.kind, savedUsd: admission.estimateUsd } });
      if (won) {
        await this.deps.cache.countHit(hit.entryId).catch(() => {});
        log.info({ jobId: job.id, model: job.model, keyId: job.keyId, cache: hit.kind, source: hit.sourceJobId }, 'job answered from the cache');
        return { ...started, status: 'succeeded', progress: 1, result, costUsd: 0, finishedAt: new Date(finishedAt), updatedAt: new Date(finishedAt) };
      }
    }
    // The source's bytes are gone: it runs after all, and now it costs: its estimate is held like any
    // other job's (a budget that cannot take it ends the job here, refused).
    await this.deps.jobCosts.clearHit(job.id).catch(() => {});
    try {
      admission.reserved = await this.deps.budgets.reserve(job.id, { id: caller.keyId, name: caller.keyName }, admission.estimateUsd);
    } catch (err) {
      const error = err instanceof DomainError ? { code: err.code ?? 'insufficient_quota', message: err.message } : { code: 'internal_error', message: String(err) };
      await this.deps.settler.fail(started ?? job, null, { status: 'failed', error });
      throw err;
    }
    return undefined;
  }

  /** Queues the job; if the queue is unreachable the job ends failed at once (accepted work is never left waiting). */
  async enqueue(job: Job, admission: Admission, log: Logger): Promise<void> {
    try {
      await this.deps.queue.enqueue({ jobId: job.id, priority: job.priority, keyId: job.keyId });
    } catch (err) {
      log.error({ err, jobId: job.id }, 'enqueue failed');
      await this.deps.settler.fail(job, null, { status: 'failed', error: { code: 'queue_unavailable', message: 'the job queue was unreachable when the job was submitted' } }).catch(() => false);
      if (admission.reserved) await this.deps.budgets.release(job.id);
      throw new DomainError('unavailable', 'The job queue is unreachable; nothing was queued. Retry shortly.', { code: 'queue_unavailable', cause: err });
    }
    log.info({ jobId: job.id, model: job.model, keyId: job.keyId }, 'job accepted');
  }

  // ---------------------------------------------------------------- helpers

  /** Why no model behind an alias can take the request: the first candidate's problem names the field. */
  private aliasRefusal(alias: string, shown: string, kind: JobKind, cmd: SubmitCommand): DomainError {
    const counts = inputCounts(cmd.inputs);
    for (const m of this.deps.router.aliasCandidates(alias)) {
      const route = this.deps.backends.resolve(m);
      if (!route) continue;
      const p = providerOptionsProblem(route.name, route.spec, cmd.request.providerOptions) ?? loraProblem(route.name, route.spec, cmd.request.loras) ?? capabilityProblem(route.name, route.spec, { kind, inputImages: counts.images, mask: counts.mask });
      if (p) return new DomainError('invalid', `No model behind '${shown}' can take this request: ${p.message}`, { param: p.param, code: p.code });
    }
    return new DomainError('invalid', `No model behind '${shown}' can take this request; name a model instead.`, { param: 'model', code: 'unsupported_capability' });
  }

  private async recordAdmission(job: Job, cmd: SubmitCommand, caller: Caller, r: Resolved, a: Admission): Promise<void> {
    const policy = this.deps.cache.optedOut({ id: caller.keyId, name: caller.keyName }) ? 'opt_out' : cmd.cachePolicy;
    await this.deps.jobCosts
      .recordAdmission(job, {
        requestedModel: r.decision.record.requested,
        routing: r.decision.notable ? r.decision.record : null,
        estimateUsd: a.estimateUsd,
        reserved: a.reserved,
        cachePolicy: policy,
        embedding: a.embedding ?? null,
        // Another key's job (of a share group) is never named to this one.
        hit: a.hit ? { kind: a.hit.kind, sourceJobId: a.hit.sourceKeyId === caller.keyId ? a.hit.sourceJobId : null, similarity: a.hit.similarity, savedUsd: a.estimateUsd } : null,
        parent: cmd.refine?.parent ?? null,
        batchId: cmd.batch?.id ?? null,
      })
      .catch((err) => this.deps.log.warn({ err, jobId: job.id }, "could not record the job's routing and cost"));
  }

  /** What an idempotent submission asked for (an alias as asked, uploads by their digest). */
  private fingerprintOf(cmd: SubmitCommand, r: Resolved): string | null {
    if (!cmd.idempotencyKey) return null;
    const sha = (d: Uint8Array) => createHash('sha256').update(d).digest('hex');
    const uploads = cmd.inputs
      ? cmd.inputs.kind === 'uploads'
        ? { images: cmd.inputs.images.map((f) => sha(f.data)), mask: cmd.inputs.mask ? sha(cmd.inputs.mask.data) : null }
        : { stored: cmd.inputs.images, mask: cmd.inputs.mask ?? null }
      : undefined;
    return fingerprint({ kind: cmd.kind, model: r.asked, request: cmd.request, priority: cmd.priority, webhook: cmd.webhookUrl, metadata: cmd.metadata, uploads, refine: cmd.refine });
  }
}
