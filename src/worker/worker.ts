/**
 * Takes jobs off the queue and runs them on their backend. The queue delivers at least once; the
 * store's attempt counter makes completion exactly once: a stale attempt (its worker was presumed
 * dead) can neither progress nor complete the job, and image keys are deterministic per job, so a
 * re-run overwrites rather than duplicates.
 */
import type { Logger } from 'pino';
import { newImageId } from '../core/ids.ts';
import { isTerminal, toWarning } from '../core/job.ts';
import type { Job, JobError, StoredImage } from '../core/job.ts';
import { MEDIA_TYPES } from '../core/image-request.ts';
import type { BackendImageInput, BackendRequest, BackendResult } from '../backends/image-backend.ts';
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
import type { PriceTable } from '../pricing/price-table.ts';
import type { AttemptRoute, WorkerCostHooks } from '../cost/worker-hooks.ts';
import { measuredGpuMs } from '../cost/worker-hooks.ts';
import type { ResolvedModel } from '../backends/registry.ts';

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
  /** Prices images the backend reports no cost for (a provider-reported cost always wins). */
  prices?: Pick<PriceTable, 'priceFor'>;
  /** Cost control (src/cost): fallback routing, circuit breakers, GPU-time costs, budget settlement, cache fill. */
  costHooks?: WorkerCostHooks;
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

    if (current.attempt >= this.opts.maxAttempts) {
      // Every earlier delivery died mid-run (or was handed back); stop the crash loop.
      const error = { code: 'worker_lost', message: `job ${jobId} was interrupted ${current.attempt} times (worker crashed or was stopped); giving up` };
      if (await store.failJob(jobId, null, error)) {
        this.publishStatus(jobId, 'failed', current);
        await this.deps.costHooks?.finished(current, { status: 'failed', costUsd: null });
      }
      return;
    }

    // Cost control may send this attempt down the job's fallback chain (circuit open, backend overloaded, failed before).
    const picked = await this.deps.costHooks?.beforeAttempt(current).catch((err) => (log.warn({ err, jobId }, 'routing hook failed'), undefined));
    const route = picked?.route ?? this.deps.backends.resolve(current.model);
    if (!route) {
      const error = { code: 'model_not_found', message: `model "${current.model}" is no longer served by this worker's configuration` };
      if (await store.failJob(jobId, null, error)) {
        this.publishStatus(jobId, 'failed', current);
        await this.deps.costHooks?.finished(current, { status: 'failed', costUsd: null });
      }
      return;
    }

    const job = await store.startAttempt(jobId, route.backend.name);
    if (!job) return;
    const jlog = log.child({ jobId, attempt: job.attempt, backend: route.backend.name });
    jlog.debug('job started');
    this.publishStatus(jobId, 'running');

    const controller = new AbortController();
    this.running.set(jobId, controller);
    const onLeaseLost = () => controller.abort(new StopSignal('lease_lost'));
    delivery.signal.addEventListener('abort', onLeaseLost, { once: true });
    const timer = setTimeout(() => controller.abort(new StopSignal('timeout')), this.opts.jobTimeoutMs);
    if (job.cancelRequested) controller.abort(new StopSignal('canceled'));

    const started = performance.now();
    try {
      const result = await this.run(job, route.backendModel, controller.signal, picked ?? { route });
      this.deps.costHooks?.afterCall({ job, route, ok: true, ms: result.backendMs ?? performance.now() - started });
      this.throwIfStopped(controller.signal);
      const bytes = new Map<string, Uint8Array>();
      const images = await this.storeImages(job, result, bytes);
      const finishedAt = Date.now();
      const done = {
        result: {
          images: images.map((img) => ({ imageId: img.id, revisedPrompt: img.revisedPrompt ?? undefined })),
          warnings: result.warnings.length ? result.warnings.map(toWarning) : undefined,
        },
        images,
        costUsd: result.costUsd ?? null,
        finishedAt,
      };
      const outcome = { status: 'succeeded', costUsd: result.costUsd ?? null, route, gpuSeconds: result.gpuSeconds, host: result.host, images: images.length } as const;
      // GPU time is on record before the job shows as succeeded to anyone reading it.
      await this.deps.costHooks?.beforeComplete(job, outcome);
      const won = await store.completeJob(jobId, job.attempt, done);
      if (won) {
        // Budget settled (and the cache filled) before anyone waiting is told, so they see it settled.
        await this.deps.costHooks?.finished(job, outcome);
        const at = new Date(finishedAt);
        const finished: Job = { ...job, status: 'succeeded', progress: 1, result: done.result, costUsd: done.costUsd, finishedAt: at, updatedAt: at };
        this.publishStatus(jobId, 'succeeded', job, { job: finished, images, bytes });
        jlog.info({ images: images.length }, 'job succeeded');
      } else if (await store.finishCanceled(jobId, job.attempt)) {
        this.publishStatus(jobId, 'canceled', job);
        await this.deps.costHooks?.finished(job, { status: 'canceled', costUsd: null, route });
      }
    } catch (err) {
      if (this.deps.costHooks && !(err instanceof StopSignal && err.reason !== 'timeout')) {
        const timedOut = controller.signal.aborted && controller.signal.reason instanceof StopSignal && controller.signal.reason.reason === 'timeout';
        this.deps.costHooks.afterCall({ job, route, ok: false, error: timedOut ? controller.signal.reason : err, ms: performance.now() - started });
      }
      await this.settleFailure(job, controller.signal, err, jlog);
    } finally {
      clearTimeout(timer);
      delivery.signal.removeEventListener('abort', onLeaseLost);
      this.running.delete(jobId);
    }
  }

  private throwIfStopped(signal: AbortSignal): void {
    if (signal.aborted) throw signal.reason instanceof StopSignal ? signal.reason : new StopSignal('lease_lost');
  }

  private async settleFailure(job: Job, signal: AbortSignal, err: unknown, jlog: Logger): Promise<void> {
    const { store } = this.deps;
    const reason = signal.aborted && signal.reason instanceof StopSignal ? signal.reason.reason : err instanceof StopSignal ? err.reason : undefined;
    if (reason === 'lease_lost') {
      // This worker no longer owns the delivery (shutdown or lost lease): hand it back untouched.
      jlog.warn('job handed back to the queue');
      throw err;
    }
    if (reason === 'canceled') {
      if (await store.finishCanceled(job.id, job.attempt)) {
        this.publishStatus(job.id, 'canceled', job);
        await this.deps.costHooks?.finished(job, { status: 'canceled', costUsd: null });
      }
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
    if (this.deps.costHooks && job.attempt < this.opts.maxAttempts && (await this.deps.costHooks.shouldFallBack(job, cause).catch(() => false))) {
      jlog.warn({ code: error.code }, 'backend failure; job goes back to the queue for its fallback');
      throw err instanceof Error ? err : cause;
    }
    if (await store.failJob(job.id, job.attempt, error)) {
      this.publishStatus(job.id, 'failed', job);
      await this.deps.costHooks?.finished(job, { status: 'failed', costUsd: null });
    }
    jlog.info({ code: error.code }, 'job failed');
  }

  private async run(job: Job, backendModel: string, signal: AbortSignal, picked?: AttemptRoute): Promise<BackendResult & { gpuSeconds?: number; host?: string; backendMs?: number }> {
    const route: ResolvedModel = picked?.route ?? this.deps.backends.resolve(job.model)!;
    const backend = route.backend;
    const req = picked?.request ? { ...job.request, ...picked.request } : job.request;
    const inputImages = await Promise.all((req.inputImages ?? []).map((k) => this.loadInput(k)));
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
      providerOptions: req.providerOptions ?? {},
    };

    // Split n across calls the backend can take; progress is the share of images done.
    const perCall = Math.max(1, backend.capabilities.maxImagesPerCall);
    const out: BackendResult & { gpuSeconds?: number; host?: string; backendMs?: number } = { images: [], warnings: [] };
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
      const cost =
        res.costUsd ??
        this.deps.costHooks?.costOf(backend, gpu.ms / 1000, gpu.host) ??
        this.deps.prices?.priceFor({ type: backend.type, name: backend.name }, backendModel, req.size, req.quality, Math.min(n, res.images.length));
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

  /** `job` (on terminal statuses) tells the webhook sweeper whether there is anything to deliver. */
  private publishStatus(jobId: string, status: Job['status'], job?: Job, local?: { job: Job; images: StoredImage[]; bytes?: Map<string, Uint8Array> }): void {
    const webhook = job ? { webhook: job.webhookUrl != null } : {};
    this.deps.events.publish({ type: 'status', jobId, status, at: Date.now(), ...webhook, ...(local ? { local } : {}) });
  }
}
