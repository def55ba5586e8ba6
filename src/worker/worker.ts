/**
 * Takes jobs off the queue and runs them on their backend. The queue delivers at least once; the
 * store's attempt counter makes completion exactly once: a stale attempt (its worker was presumed
 * dead) can neither progress nor complete the job, and image keys are deterministic per job, so a
 * re-run overwrites rather than duplicates.
 */
import type { Logger } from 'pino';
import { newImageId } from '../core/ids.ts';
import { isTerminal, toWarning } from '../core/job.ts';
import type { Job, JobError, JobWarning, StoredImage } from '../core/job.ts';
import { MEDIA_TYPES } from '../core/image-request.ts';
import type { ImageRequest, ImageSize } from '../core/image-request.ts';
import type { BackendImageInput, BackendRequest, BackendResult } from '../backends/image-backend.ts';
import { resolveLoras } from '../backends/model-spec.ts';
import { BackendError } from '../backends/image-backend.ts';
import type { BackendRegistry } from '../backends/registry.ts';
import type { JobEventBus } from '../events/job-events.ts';
import type { Delivery, JobQueue, QueueConsumer } from '../queue/job-queue.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import type { JobStore } from '../store/job-store.ts';
import { normalizeImage } from '../images/encode.ts';
import { THUMB_MAX_SIDE, makeThumbnail } from '../images/thumbnail.ts';
import { imageKey, thumbKey } from '../images/keys.ts';
import { createHash } from 'node:crypto';
import type { ResolvedModel } from '../backends/registry.ts';
import type { JobSettler } from '../jobs/settle.ts';
import type { JobCosts } from '../jobs/job-costs.ts';
import type { AttemptRoute, AttemptRouting } from '../routing/fallback.ts';
import type { CostModel } from '../pricing/cost-model.ts';
import { measuredGpuMs } from './gpu-time.ts';

export interface WorkerOptions {
  concurrency: number;
  jobTimeoutMs: number;
  maxAttempts: number;
  /** Minimum gap between progress writes for one job. */
  progressIntervalMs?: number;
}

export interface WorkerDeps {
  store: JobStore;
  queue: JobQueue;
  storage: ImageStorage;
  backends: BackendRegistry;
  events: JobEventBus;
  log: Logger;
  /** Where every job ends (state change, event, then budgets, cache, metrics, webhooks). */
  settler: JobSettler;
  /** Fallback chains, circuit breakers, backend call metrics. */
  routing: AttemptRouting;
  /** What a call costs: the provider's figure, GPU time (self-hosted), or the price table. */
  costs: Pick<CostModel, 'callCost' | 'isSelfHosted'>;
  /** Self-hosted GPU time, recorded before the job shows as succeeded. */
  jobCosts: Pick<JobCosts, 'recordGpuTime' | 'commitsWithinTurn'>;
}

/** Why a running job's signal was aborted; decides its final state. */
type StopReason = 'canceled' | 'timeout' | 'lease_lost';

class StopSignal extends Error {
  readonly reason: StopReason;
  constructor(reason: StopReason) {
    super(reason);
    this.reason = reason;
  }
}

export { imageKey } from '../images/keys.ts';

export class Worker {
  private readonly deps: WorkerDeps;
  private readonly opts: Required<WorkerOptions>;
  private consumer: QueueConsumer | undefined;
  private readonly running = new Map<string, AbortController>();
  private unsubscribe: (() => void) | undefined;

  constructor(deps: WorkerDeps, opts: WorkerOptions) {
    this.deps = deps;
    this.opts = { progressIntervalMs: 250, ...opts };
  }

  start(): void {
    // A cancel accepted by any API instance reaches the worker holding the job through the bus.
    this.unsubscribe = this.deps.events.subscribeAll((event) => {
      if (event.type === 'cancel_requested') this.running.get(event.jobId)?.abort(new StopSignal('canceled'));
    });
    this.consumer = this.deps.queue.consume((d) => this.handle(d), { concurrency: this.opts.concurrency });
  }

  /** Stops taking jobs; in-flight ones get `graceMs` to finish, then go back to the queue. */
  async stop(graceMs: number): Promise<void> {
    await this.consumer?.stop(graceMs);
    this.unsubscribe?.();
  }

  get activeJobs(): number {
    return this.running.size;
  }

  private async handle(delivery: Delivery): Promise<void> {
    const { store, events, log } = this.deps;
    const jobId = delivery.message.jobId;
    // A first delivery of a job this process just created needs no read: nothing but a cancel can have
    // changed it, and startAttempt below refuses a canceled job.
    const created = store.takeCreated?.(jobId);
    const current = created && delivery.deliveryCount === 1 ? created : await store.getJob(jobId);
    if (!current || isTerminal(current.status)) return; // duplicate delivery of a finished job

    const { settler } = this.deps;
    if (current.attempt >= this.opts.maxAttempts) {
      // Every earlier delivery died mid-run (or was handed back); stop the crash loop.
      await settler.fail(current, null, { status: 'failed', error: { code: 'worker_lost', message: `job ${jobId} was interrupted ${current.attempt} times (worker crashed or was stopped); giving up` } });
      return;
    }

    // This attempt may run down the job's fallback chain (circuit open, backend overloaded, failed before).
    const picked = await this.deps.routing.beforeAttempt(current).catch((err) => (log.warn({ err, jobId }, 'routing the attempt failed'), undefined));
    const route = picked?.route ?? this.deps.backends.resolve(current.model);
    if (!route) {
      await settler.fail(current, null, { status: 'failed', error: { code: 'model_not_found', message: `model "${current.model}" is no longer served by this worker's configuration` } });
      return;
    }

    const job = await store.startAttempt(jobId, route.backend.name);
    if (!job) return;
    const jlog = log.child({ jobId, attempt: job.attempt, backend: route.backend.name });
    jlog.debug('job started');
    events.publish({ type: 'status', jobId, status: 'running', at: Date.now() });

    const controller = new AbortController();
    this.running.set(jobId, controller);
    const onLeaseLost = () => controller.abort(new StopSignal('lease_lost'));
    delivery.signal.addEventListener('abort', onLeaseLost, { once: true });
    const timer = setTimeout(() => controller.abort(new StopSignal('timeout')), this.opts.jobTimeoutMs);
    if (job.cancelRequested) controller.abort(new StopSignal('canceled'));

    const started = performance.now();
    try {
      const result = await this.run(job, route, controller.signal, picked);
      this.deps.routing.afterCall({ job, route, ok: true, ms: result.backendMs ?? performance.now() - started });
      this.throwIfStopped(controller.signal);
      const bytes = new Map<string, Uint8Array>();
      const images = await this.storeImages(job, result, bytes);
      const warnings = [...result.warnings.map(toWarning), ...sizeWarnings(job.request.size, images)];
      const end = {
        status: 'succeeded',
        result: { images: images.map((img) => ({ imageId: img.id, revisedPrompt: img.revisedPrompt ?? undefined })), warnings: warnings.length ? warnings : undefined },
        images,
        bytes,
        costUsd: result.costUsd ?? null,
        finishedAt: Date.now(),
        route,
        gpuSeconds: result.gpuSeconds,
        host: result.host,
      } as const;
      // GPU time is on record before the job shows as succeeded to anyone reading it: in the same
      // transaction as the completion where writes of one turn commit together (SQLite), else first.
      let gpuTime: Promise<void> | undefined;
      if (result.gpuSeconds !== undefined && this.deps.costs.isSelfHosted(route)) {
        const mp = job.request.size ? (job.request.size.width * job.request.size.height) / (1024 * 1024) : 1;
        gpuTime = this.deps.jobCosts
          .recordGpuTime(job, { backend: route.backend.name, backendModel: route.backendModel, images: images.length, megapixels: mp, gpuSeconds: result.gpuSeconds })
          .catch((err) => jlog.warn({ err }, 'recording GPU time failed'));
        if (!this.deps.jobCosts.commitsWithinTurn) await gpuTime;
      }
      const won = settler.succeed(job, job.attempt, end);
      await gpuTime;
      if (await won) jlog.info({ images: images.length }, 'job succeeded');
      else if (await settler.stopped(job, job.attempt, { status: 'canceled', route })) jlog.info('job canceled');
    } catch (err) {
      if (!(err instanceof StopSignal && err.reason !== 'timeout')) {
        const timedOut = controller.signal.aborted && controller.signal.reason instanceof StopSignal && controller.signal.reason.reason === 'timeout';
        this.deps.routing.afterCall({ job, route, ok: false, error: timedOut ? controller.signal.reason : err, ms: performance.now() - started });
      }
      await this.settleFailure(job, route, controller.signal, err, jlog);
    } finally {
      clearTimeout(timer);
      delivery.signal.removeEventListener('abort', onLeaseLost);
      this.running.delete(jobId);
    }
  }

  private throwIfStopped(signal: AbortSignal): void {
    if (signal.aborted) throw signal.reason instanceof StopSignal ? signal.reason : new StopSignal('lease_lost');
  }

  private async settleFailure(job: Job, route: ResolvedModel, signal: AbortSignal, err: unknown, jlog: Logger): Promise<void> {
    const { settler } = this.deps;
    const reason = signal.aborted && signal.reason instanceof StopSignal ? signal.reason.reason : err instanceof StopSignal ? err.reason : undefined;
    if (reason === 'lease_lost') {
      // This worker no longer owns the delivery (shutdown or lost lease): hand it back untouched.
      jlog.warn('job handed back to the queue');
      throw err;
    }
    if (reason === 'canceled') {
      await settler.stopped(job, job.attempt, { status: 'canceled', route });
      jlog.info('job canceled');
      return;
    }
    let error: JobError;
    if (reason === 'timeout') {
      error = { code: 'timeout', message: `job ${job.id} ran longer than ${Math.round(this.opts.jobTimeoutMs / 1000)}s on backend ${job.backend}` };
    } else if (err instanceof BackendError) {
      if (err.retryable && job.attempt < this.opts.maxAttempts) {
        jlog.warn({ err: err.message }, 'retryable backend failure; job goes back to the queue');
        throw err;
      }
      error = { code: err.code, message: err.message };
    } else {
      jlog.error({ err }, 'job failed unexpectedly');
      error = { code: 'internal_error', message: `job ${job.id} failed: ${(err as Error)?.message ?? String(err)}` };
    }
    // A backend in trouble with a fallback left: the next attempt runs further down the job's chain.
    const cause = reason === 'timeout' ? new StopSignal('timeout') : err;
    if (job.attempt < this.opts.maxAttempts && (await this.deps.routing.shouldFallBack(job, cause).catch(() => false))) {
      jlog.warn({ code: error.code }, 'backend failure; job goes back to the queue for its fallback');
      throw err instanceof Error ? err : cause;
    }
    await settler.fail(job, job.attempt, { status: 'failed', error, route });
    jlog.info({ code: error.code }, 'job failed');
  }

  private async run(job: Job, route: ResolvedModel, signal: AbortSignal, picked?: AttemptRoute): Promise<BackendResult & { gpuSeconds?: number; host?: string; backendMs?: number }> {
    const backend = route.backend;
    const backendModel = route.backendModel;
    const req = picked?.request ? { ...job.request, ...picked.request } : job.request;
    const inputImages = await Promise.all((req.inputImages ?? []).map((k) => this.loadInput(k)));
    const folded = foldOpenAIFields(req, route);
    const mask = req.mask ? await this.loadInput(req.mask) : undefined;
    const base: Omit<BackendRequest, 'n'> = {
      kind: job.kind,
      model: backendModel,
      prompt: req.prompt,
      negativePrompt: req.negativePrompt,
      size: req.size,
      quality: req.quality,
      style: req.style,
      outputFormat: req.outputFormat,
      outputCompression: req.outputCompression,
      background: req.background,
      seed: req.seed,
      steps: req.steps,
      guidanceScale: req.guidanceScale,
      user: req.user,
      partialImages: req.partialImages,
      inputImages,
      mask,
      loras: resolveLoras(route.spec, req.loras),
      providerOptions: folded.providerOptions,
    };

    // Split n across calls the backend can take; progress is the share of images done.
    const perCall = Math.max(1, route.spec.maxImagesPerCall);
    const out: BackendResult & { gpuSeconds?: number; host?: string; backendMs?: number } = { images: [], warnings: [...folded.warnings] };
    // The attempt's start counts as a write: a job that finishes within one interval writes no
    // progress at all (completion sets it to 1), which saves a write and an event per fast job.
    let lastWrite = Date.now();
    let done = 0;
    const report = (p: number) => {
      const overall = Math.min(0.99, (done + Math.max(0, Math.min(1, p)) * Math.min(perCall, req.n - done)) / req.n);
      const now = Date.now();
      if (now - lastWrite < this.opts.progressIntervalMs) return;
      lastWrite = now;
      void this.deps.store.setProgress(job.id, job.attempt, overall).catch(() => {});
      this.deps.events.publish({ type: 'progress', jobId: job.id, progress: overall, at: now });
    };
    while (done < req.n) {
      this.throwIfStopped(signal);
      const n = Math.min(perCall, req.n - done);
      const seed = req.seed === undefined ? undefined : req.seed + done;
      const callStart = performance.now();
      const res = await backend.generate(
        { ...base, n, seed },
        {
          jobId: job.id,
          signal,
          reportProgress: report,
          reportPartialImage: (img) => {
            if (signal.aborted) return;
            const b64Json = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength).toString('base64');
            this.deps.events.publish({ type: 'partial_image', jobId: job.id, attempt: job.attempt, index: done + img.index, partialIndex: img.partialIndex, b64Json, mediaType: img.mediaType, at: Date.now() });
          },
          savedState: job.backendState,
          saveState: async (state) => {
            if (!(await this.deps.store.saveBackendState(job.id, job.attempt, state))) throw new StopSignal('lease_lost');
          },
        },
      );
      // Measured backend time: GPU time a self-hosted backend reports (else the call's wall time) prices its images.
      const callMs = performance.now() - callStart;
      const gpu = measuredGpuMs(res.providerMetadata, callMs, Math.min(n, res.images.length));
      out.backendMs = (out.backendMs ?? 0) + callMs;
      out.gpuSeconds = (out.gpuSeconds ?? 0) + gpu.ms / 1000;
      out.host = gpu.host ?? out.host;
      out.images.push(...res.images.slice(0, n));
      out.warnings.push(...res.warnings);
      const cost = this.deps.costs.callCost(route, {
        reportedUsd: res.costUsd,
        gpuSeconds: gpu.ms / 1000,
        host: gpu.host,
        images: Math.min(n, res.images.length),
        size: req.size,
        quality: req.quality,
      });
      if (cost !== undefined) out.costUsd = Math.round(((out.costUsd ?? 0) + cost) * 1e6) / 1e6;
      done += n;
      if (res.images.length === 0) throw new BackendError(`backend ${backend.name} returned no images`, { code: 'backend_error' });
    }
    return out;
  }

  private async loadInput(key: string): Promise<BackendImageInput> {
    const obj = await this.deps.storage.get(key);
    if (!obj) throw new BackendError(`input image ${key} is missing from storage`, { code: 'input_missing' });
    return { data: obj.data, mediaType: obj.contentType };
  }

  /** Stores the images; `bytes` collects what was stored, by storage key. */
  private async storeImages(job: Job, result: BackendResult, bytes?: Map<string, Uint8Array>): Promise<StoredImage[]> {
    const req = job.request;
    return Promise.all(
      result.images.map(async (img, index) => {
        const norm = await normalizeImage(img.data, { format: req.outputFormat, compression: req.outputCompression });
        const storageKey = imageKey(job.id, index, norm.format);
        bytes?.set(storageKey, norm.data);
        // The gallery's WebP thumbnail is stored beside it (an image already no larger than a
        // thumbnail is its own); an image without one is still an image.
        const small = norm.width <= THUMB_MAX_SIDE && norm.height <= THUMB_MAX_SIDE;
        const [, thumb] = await Promise.all([
          this.deps.storage.put(storageKey, norm.data, MEDIA_TYPES[norm.format]),
          small ? null : this.storeThumbnail(job.id, index, norm.data),
        ]);
        return {
          id: newImageId(),
          jobId: job.id,
          keyId: job.keyId,
          index,
          storageKey,
          mediaType: MEDIA_TYPES[norm.format],
          width: norm.width,
          height: norm.height,
          bytes: norm.data.length,
          sha256: createHash('sha256').update(norm.data).digest('hex'),
          revisedPrompt: img.revisedPrompt ?? null,
          thumbKey: thumb,
          createdAt: new Date(),
        };
      }),
    );
  }

  private async storeThumbnail(jobId: string, index: number, data: Uint8Array): Promise<string | null> {
    try {
      const key = thumbKey(jobId, index);
      await this.deps.storage.put(key, await makeThumbnail(data), 'image/webp');
      return key;
    } catch (err) {
      this.deps.log.warn({ err, jobId, index }, 'could not store a thumbnail');
      return null;
    }
  }
}

/** A size asked for that the backend did not deliver, said on the job rather than passed over. */
function sizeWarnings(asked: ImageSize | undefined, images: StoredImage[]): JobWarning[] {
  if (!asked) return [];
  const off = images.filter((i) => i.width !== asked.width || i.height !== asked.height);
  if (off.length === 0) return [];
  const got = [...new Set(off.map((i) => `${i.width}x${i.height}`))].join(', ');
  return [{ type: 'compatibility', setting: 'size', detail: `asked for ${asked.width}x${asked.height}; the backend returned ${got}` }];
}

/**
 * OpenAI's own request fields (`moderation`, `input_fidelity`) go to the backend as the provider
 * options they are, where the model's spec takes them; elsewhere they are dropped, said on the job.
 */
function foldOpenAIFields(req: ImageRequest, route: ResolvedModel): { providerOptions: Record<string, unknown>; warnings: JobWarning[] } {
  const providerOptions: Record<string, unknown> = { ...(req.providerOptions ?? {}) };
  const warnings: JobWarning[] = [];
  const fields: [string, string, unknown][] = [
    ['moderation', 'moderation', req.moderation],
    ['input_fidelity', 'input_fidelity', req.inputFidelity],
  ];
  for (const [setting, option, value] of fields) {
    if (value === undefined) continue;
    if (route.spec.providerOptions.safeParse({ ...providerOptions, [option]: value }).success) providerOptions[option] = value;
    else warnings.push({ type: 'unsupported', setting, detail: `${setting} is not taken by model '${route.name}'; ignored` });
  }
  return { providerOptions, warnings };
}

