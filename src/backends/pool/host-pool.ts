/**
 * A pool of self-hosted GPU hosts (ComfyUI, AUTOMATIC1111/Forge) shared by one backend, with its own
 * wait queue. The worker calls `generate()` for many jobs at once (its concurrency is far above the
 * number of GPUs); every call lands here and waits until a host can take it:
 *
 * - **Placement.** A call goes to a healthy host with a free slot (`maxConcurrent` running, usually
 *   1, plus `queueAhead` waiting in the host's own queue, filled once the running call is halfway,
 *   so the GPU never waits for a round trip),
 *   preferring one that already has the call's checkpoint loaded (affinity), then one that last ran
 *   the call's LoRA set (its patched weights are cached there), then the one with the fewest
 *   outstanding calls. A host that listed its LoRAs and lacks one the call needs is not chosen. When a host frees up it takes the oldest call for its own checkpoint,
 *   unless a call for a checkpoint no live host holds is older than that by `affinityMaxWait` (so
 *   nothing waits much longer than the work around it); else the oldest call whose checkpoint no
 *   host holds (it has no host of its own to wait for); else the oldest call whose host is not
 *   about to free up (past halfway); else nothing (it waits for its host rather than cost a load).
 * - **Batching.** The chosen call is coalesced with compatible waiting calls (same batch key: same
 *   checkpoint, LoRA set, prompt, size, steps, cfg, sampler; never a call with an explicit seed) into one host
 *   call of at most `maxBatchSize` images; its images are split back in order. The batch uses one
 *   seed, and each image records that seed and its index in the batch.
 * - **Failures.** A host whose call fails with a {@link HostFailure} (it died, vanished or answered
 *   5xx) is probed or taken out; the call's jobs go back to the front of the queue and run on another
 *   host, at most `maxHostRetries` times. Only the attempt that is current can deliver images: a
 *   failed attempt has finished (and been told to cancel) before its jobs are queued again, so a job
 *   never completes twice.
 * - **Health.** Hosts are probed every `healthInterval`; `unhealthyAfterFailures` failed probes take
 *   a host out, and it keeps being probed until it answers again, when it rejoins.
 * - **Warm-up.** With a `warmup` executor, a host that answers for the first time (at start, or when
 *   it rejoins) is `warming` until one small request has run on it: it takes no work meanwhile, and
 *   a pool with no host up but some warming says so in its health (`/ready`, `/v1/system`).
 * - **Abort.** A waiting call whose signal aborts leaves the queue at once; a running one is
 *   answered at once, and the host call is cancelled when none of its jobs is left.
 */
import { randomInt } from 'node:crypto';
import type {
  BackendCallContext,
  BackendHealth,
  BackendImage,
  BackendPartialImage,
  BackendRequest,
  BackendResult,
  BackendWarning,
} from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { otherWarning } from '../warnings.ts';
import { loraSetKey } from '../model-spec.ts';
import { normalizeHosts } from './options.ts';
import type { NormalizedHost, PoolHostConfig, PoolSettings } from './options.ts';

/**
 * A failure of the host rather than of the request: the call may succeed elsewhere. `hostDown`
 * (connection refused or reset, the host stopped answering) takes the host out of the pool at once;
 * otherwise (a 5xx) the host is probed and stays if it answers.
 */
export class HostFailure extends BackendError {
  readonly hostDown: boolean;
  constructor(message: string, opts: { hostDown?: boolean; status?: number; cause?: unknown } = {}) {
    super(message, { code: 'backend_unavailable', retryable: true, status: opts.status, cause: opts.cause });
    this.name = 'HostFailure';
    this.hostDown = opts.hostDown ?? true;
  }
}

export type HostStatus = 'unknown' | 'warming' | 'up' | 'down';

export interface PoolHost {
  readonly name: string;
  readonly url: string;
  readonly maxConcurrent: number;
  /** Calls it may hold at once: `maxConcurrent` running plus the queue-ahead. */
  readonly slots: number;
  status: HostStatus;
  /** Calls running on it now. */
  running: number;
  /** The checkpoint it has loaded: what it last ran for us, or what it reported. */
  loaded: string | undefined;
  /** Checkpoints it reported having (undefined until known). */
  checkpoints: string[] | undefined;
  /** LoRA files it reported having (undefined until known, or for backends that do not list them). */
  loras: string[] | undefined;
  /** The LoRA set it last ran (the affinity key; '' for none). */
  loadedLoras: string | undefined;
  freeVramBytes?: number;
  totalVramBytes?: number;
  consecutiveFailures: number;
  lastError?: string;
  lastProbeAt?: number;
  probing: boolean;
  /** Milliseconds with at least one call running (not counting the current stretch). */
  busyMs: number;
  busySince: number | undefined;
  calls: number;
  images: number;
  switches: number;
}

export interface ProbeResult {
  ok: boolean;
  message?: string;
  /** The checkpoint the host says is loaded, when it says. */
  loaded?: string;
  checkpoints?: string[];
  /** LoRA files it has (by the reference the backend sends), when it lists them. */
  loras?: string[];
  freeVramBytes?: number;
  totalVramBytes?: number;
}

export interface BatchMember {
  request: BackendRequest;
  ctx: BackendCallContext;
  /** Images this member asked for. */
  n: number;
  /** Index of its first image in the batch. */
  offset: number;
}

export interface PoolBatch {
  /** The first member's request with `n` = every image of the batch and `seed` = the batch seed. */
  request: BackendRequest;
  checkpoint: string;
  members: readonly BatchMember[];
  total: number;
  seed: number;
  /** True when the seed was chosen by the pool (no member asked for one). */
  seedChosen: boolean;
  /** 0 for the first host this batch runs on, 1 for the next, … */
  attempt: number;
}

export interface RunIO {
  /** Aborted when no member is left (all cancelled) or the pool gives up on this attempt. */
  signal: AbortSignal;
  /** 0..1 for the whole batch; forwarded to every member still waiting. */
  progress(p: number): void;
  /** A preview of batch image `index`; forwarded to the member that image belongs to. */
  partialImage(image: BackendPartialImage): void;
  /** The host's GPU part is over (outputs are being fetched): it may take its next call. */
  release(): void;
  /** Persists a durable note (e.g. the host's prompt id, seed, batch index) on every member's job. */
  saveState(state: (member: BatchMember) => unknown): void;
}

export interface BatchOutput {
  /** In batch order: member k gets images [offset, offset + n). */
  images: BackendImage[];
  warnings: BackendWarning[];
  providerMetadata?: Record<string, unknown>;
}

export interface PoolExecutor {
  run(host: PoolHost, batch: PoolBatch, io: RunIO): Promise<BatchOutput>;
  probe(host: PoolHost, signal: AbortSignal): Promise<ProbeResult>;
  /** One small request that loads the model and warms the GPU (config `warmup`); absent: hosts join at once. */
  warmup?(host: PoolHost, signal: AbortSignal): Promise<void>;
}

/** The logger a backend hands the pool (pino fits). */
export interface PoolLog {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/** Logs hosts leaving and rejoining the pool. */
export function hostEventLogger(log: PoolLog | undefined, backend: string): PoolOptions['onHostEvent'] {
  if (!log) return undefined;
  return (e) => {
    if (e.event === 'down') log.warn({ backend, host: e.host, reason: e.message }, 'GPU host left the pool');
    else if (e.event === 'warming') log.info({ backend, host: e.host }, 'GPU host is warming up');
    else if (e.event === 'warmup_failed') log.warn({ backend, host: e.host, reason: e.message }, 'GPU host warm-up failed; it takes work anyway');
    else log.info({ backend, host: e.host }, 'GPU host (re)joined the pool');
  };
}

export interface SubmitOptions {
  /** The checkpoint (or workflow) the call needs loaded: the affinity key. */
  checkpoint: string;
  /** Calls with equal keys may share one host call; undefined never batches. */
  batchKey?: string;
  /** The call's LoRA set (`loraSetKey`): a host that last ran it is preferred. */
  loraSet?: string;
  /** LoRA files the call needs: a host that listed its LoRAs without them is not chosen. */
  loraRefs?: string[];
}

export interface PoolOptions extends PoolSettings {
  backendName: string;
  hosts: NormalizedHost[];
  /**
   * Calls a host may hold beyond `maxConcurrent`, waiting in its own queue (ComfyUI queues prompts):
   * the next one starts the moment the GPU frees, without waiting for easel's round trip.
   */
  queueAhead?: number;
  /** Timeout of one probe (default 5 s). */
  probeTimeoutMs?: number;
  /** Called on host changes (left, warming, rejoined); for logs. */
  onHostEvent?: (event: { host: string; event: 'down' | 'up' | 'warming' | 'warmup_failed'; message?: string }) => void;
  /** Limit of one warm-up request (default 10 min: a cold checkpoint load can take minutes). */
  warmupTimeoutMs?: number;
}

/** What every GPU backend's config entry carries (`poolFields` in options.ts). */
export interface PoolConfigFields extends Omit<PoolSettings, 'maxConcurrentPerHost'> {
  name: string;
  hosts: PoolHostConfig[];
  requestTimeoutSeconds: number;
  warmup?: { timeoutSeconds: number };
}

/** Pool options from a GPU backend's config entry. */
export function poolOptionsFrom(c: PoolConfigFields, opts: { maxConcurrentPerHost: number; queueAhead?: number; log?: PoolLog }): PoolOptions {
  return {
    backendName: c.name,
    hosts: normalizeHosts(c.hosts, opts.maxConcurrentPerHost),
    maxConcurrentPerHost: opts.maxConcurrentPerHost,
    ...(opts.queueAhead !== undefined ? { queueAhead: opts.queueAhead } : {}),
    maxBatchSize: c.maxBatchSize,
    affinity: c.affinity,
    affinityMaxWaitSeconds: c.affinityMaxWaitSeconds,
    maxQueueDepth: c.maxQueueDepth,
    maxHostRetries: c.maxHostRetries,
    healthIntervalSeconds: c.healthIntervalSeconds,
    unhealthyAfterFailures: c.unhealthyAfterFailures,
    probeTimeoutMs: Math.min(c.requestTimeoutSeconds * 1000, 10_000),
    onHostEvent: hostEventLogger(opts.log, c.name),
    ...(c.warmup ? { warmupTimeoutMs: c.warmup.timeoutSeconds * 1000 } : {}),
  };
}

/** Refuses what no GPU backend here runs: more images than one batch, or inputs that do not fit together. */
export function checkGpuRequest(request: BackendRequest, backendName: string, maxBatchSize: number): void {
  const refuse = (message: string) => new BackendError(message, { code: 'invalid_request' });
  if (request.n > maxBatchSize) throw refuse(`Backend "${backendName}" makes at most ${maxBatchSize} images per call`);
  if (request.kind !== 'generation' && request.inputImages.length === 0) throw refuse(`An ${request.kind} needs an input image`);
  if (request.inputImages.length > 1) throw refuse(`Backend "${backendName}" takes one input image`);
  if (request.mask && request.inputImages.length === 0) throw refuse('A mask needs an input image');
}

interface Waiting {
  id: number;
  request: BackendRequest;
  ctx: BackendCallContext;
  checkpoint: string;
  batchKey: string | undefined;
  loraSet: string;
  loraRefs: string[];
  n: number;
  enqueuedAt: number;
  /** Host attempts so far. */
  attempts: number;
  tried: Set<string>;
  errors: string[];
  settled: boolean;
  dispatch: Dispatch | undefined;
  resolve(result: BackendResult): void;
  reject(err: unknown): void;
  onAbort: () => void;
}

interface Dispatch {
  host: PoolHost;
  /** The host call's progress (0..1). */
  progress: number;
  members: Waiting[];
  live: Set<Waiting>;
  controller: AbortController;
  released: boolean;
}

export interface PoolStats {
  waiting: number;
  running: number;
  batches: number;
  /** How many host calls carried 1, 2, … images. */
  batchSizes: Record<number, number>;
  hostRetries: number;
  hosts: Array<{
    name: string;
    url: string;
    status: HostStatus;
    running: number;
    loaded: string | undefined;
    loadedLoras?: string;
    busyMs: number;
    calls: number;
    images: number;
    switches: number;
    freeVramBytes?: number;
    lastError?: string;
  }>;
}

/** Progress of a host's running call from which its queue-ahead slot may be filled. */
const QUEUE_AHEAD_AT = 0.5;

const abortedError = (backend: string, cause?: unknown) =>
  new BackendError(`Call to backend "${backend}" was aborted`, { code: 'aborted', cause });

export class HostPool {
  readonly hosts: PoolHost[];
  private readonly opts: PoolOptions;
  private readonly executor: PoolExecutor;
  private waiting: Waiting[] = [];
  private nextId = 1;
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private closed = false;
  private firstProbe: Promise<void> | undefined;
  private batches = 0;
  private hostRetries = 0;
  private readonly batchSizes: Record<number, number> = {};
  private readonly dispatches = new Set<Dispatch>();
  private lorasRefreshedAt = 0;
  private lorasRefreshing: Promise<void> = Promise.resolve();

  constructor(opts: PoolOptions, executor: PoolExecutor) {
    this.opts = opts;
    this.executor = executor;
    this.hosts = opts.hosts.map((h) => ({
      name: h.name,
      url: h.url,
      maxConcurrent: h.maxConcurrent,
      slots: h.maxConcurrent + (opts.queueAhead ?? 0),
      status: 'unknown' as HostStatus,
      running: 0,
      loaded: undefined,
      checkpoints: undefined,
      loras: undefined,
      loadedLoras: undefined,
      consecutiveFailures: 0,
      probing: false,
      busyMs: 0,
      busySince: undefined,
      calls: 0,
      images: 0,
      switches: 0,
    }));
  }

  /** Runs one generate() call on some host, batched with others where allowed. */
  submit(request: BackendRequest, ctx: BackendCallContext, opts: SubmitOptions): Promise<BackendResult> {
    if (this.closed) return Promise.reject(new BackendError(`Backend "${this.opts.backendName}" is shutting down`, { code: 'backend_unavailable', retryable: true }));
    if (ctx.signal.aborted) return Promise.reject(abortedError(this.opts.backendName, ctx.signal.reason));
    this.start();
    return new Promise<BackendResult>((resolve, reject) => {
      const w: Waiting = {
        id: this.nextId++,
        request,
        ctx,
        checkpoint: opts.checkpoint,
        batchKey: this.opts.maxBatchSize > 1 ? opts.batchKey : undefined,
        loraSet: opts.loraSet ?? '',
        loraRefs: opts.loraRefs ?? [],
        n: request.n,
        enqueuedAt: Date.now(),
        attempts: 0,
        tried: new Set(),
        errors: [],
        settled: false,
        dispatch: undefined,
        resolve: (r) => {
          if (w.settled) return;
          w.settled = true;
          ctx.signal.removeEventListener('abort', w.onAbort);
          resolve(r);
        },
        reject: (e) => {
          if (w.settled) return;
          w.settled = true;
          ctx.signal.removeEventListener('abort', w.onAbort);
          reject(e);
        },
        onAbort: () => this.abortMember(w),
      };
      ctx.signal.addEventListener('abort', w.onAbort, { once: true });
      this.waiting.push(w);
      this.pump();
    });
  }

  /**
   * True when every live host has listed its checkpoints and none has this one: the call could only
   * fail, so backends refuse it up front.
   */
  lacks(checkpoint: string): boolean {
    const live = this.hosts.filter((h) => h.status !== 'down');
    return live.length > 0 && live.every((h) => h.checkpoints !== undefined && !h.checkpoints.includes(checkpoint));
  }

  /**
   * True when every live host has listed its LoRAs and none has all of these: the call could only
   * fail, so backends look again and then refuse it up front.
   */
  lacksLoras(refs: readonly string[]): boolean {
    if (refs.length === 0) return false;
    const live = this.hosts.filter((h) => h.status !== 'down');
    return live.length > 0 && live.every((h) => h.loras !== undefined && !refs.every((r) => h.loras!.includes(r)));
  }

  /** Every LoRA file some live host listed; undefined while none has listed its LoRAs. */
  loraFiles(): string[] | undefined {
    const lists = this.hosts.filter((h) => h.status !== 'down' && h.loras !== undefined).map((h) => h.loras!);
    if (lists.length === 0) return undefined;
    return [...new Set(lists.flat())].sort();
  }

  /** Jobs waiting for a host. */
  get queueDepth(): number {
    return this.waiting.length;
  }

  async health(): Promise<BackendHealth> {
    this.start();
    if (this.hosts.every((h) => h.status === 'unknown')) await this.firstProbe;
    const up = this.hosts.filter((h) => h.status === 'up');
    const warming = this.hosts.filter((h) => h.status === 'warming');
    const running = this.hosts.reduce((a, h) => a + h.running, 0);
    const parts = [`${up.length}/${this.hosts.length} hosts up`, `${this.waiting.length} waiting`, `${running} running`];
    if (warming.length) parts.push(`warming up: ${warming.map((h) => h.name).join(', ')}`);
    const down = this.hosts.filter((h) => h.status === 'down');
    if (down.length) parts.push(`down: ${down.map((h) => `${h.name} (${h.lastError ?? 'not answering'})`).join(', ')}`);
    const overloaded = this.waiting.length > this.opts.maxQueueDepth;
    if (overloaded) {
      parts.unshift(`overloaded: ${this.waiting.length} jobs waiting for a GPU host (limit ${this.opts.maxQueueDepth})`);
    }
    return {
      ok: up.length > 0,
      message: parts.join('; '),
      ...(overloaded ? { overloaded: true } : {}),
      ...(up.length === 0 && warming.length > 0 ? { warming: true } : {}),
      details: this.stats() as unknown as Record<string, unknown>,
    };
  }

  stats(): PoolStats {
    const now = Date.now();
    return {
      waiting: this.waiting.length,
      running: this.hosts.reduce((a, h) => a + h.running, 0),
      batches: this.batches,
      batchSizes: { ...this.batchSizes },
      hostRetries: this.hostRetries,
      hosts: this.hosts.map((h) => ({
        name: h.name,
        url: h.url,
        status: h.status,
        running: h.running,
        loaded: h.loaded,
        ...(h.loadedLoras ? { loadedLoras: h.loadedLoras } : {}),
        busyMs: h.busyMs + (h.busySince !== undefined ? now - h.busySince : 0),
        calls: h.calls,
        images: h.images,
        switches: h.switches,
        ...(h.freeVramBytes !== undefined ? { freeVramBytes: h.freeVramBytes } : {}),
        ...(h.lastError ? { lastError: h.lastError } : {}),
      })),
    };
  }

  /** Probes every host now (tests, and the first health answer). */
  /**
   * Lists every live host's LoRAs again (a request named one not listed), at most once per
   * `minIntervalMs`: a call within it waits for the last refresh instead. `list` asks one host
   * (undefined: it could not say); `listed` hears of each host whose list was replaced.
   */
  refreshLoras(minIntervalMs: number, list: (host: PoolHost, signal: AbortSignal) => Promise<string[] | undefined>, listed?: (host: PoolHost) => void): Promise<void> {
    if (Date.now() - this.lorasRefreshedAt < minIntervalMs) return this.lorasRefreshing;
    this.lorasRefreshedAt = Date.now();
    this.start();
    this.lorasRefreshing = Promise.all(
      this.hosts
        .filter((h) => h.status !== 'down')
        .map(async (h) => {
          const loras = await list(h, AbortSignal.timeout(10_000)).catch(() => undefined);
          if (!loras) return;
          h.loras = loras;
          listed?.(h);
        }),
    ).then(() => {});
    return this.lorasRefreshing;
  }

  async probeAll(): Promise<void> {
    await Promise.all(this.hosts.map((h) => this.probeHost(h)));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    const err = new BackendError(`Backend "${this.opts.backendName}" is shutting down`, { code: 'backend_unavailable', retryable: true });
    for (const w of this.waiting.splice(0)) w.reject(err);
    for (const d of this.dispatches) {
      for (const w of d.live) w.reject(err);
      d.controller.abort(err);
    }
  }

  /** Starts the probes (the first submit or health check does, too). */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.firstProbe = this.probeAll();
    this.timer = setInterval(() => void this.probeAll(), this.opts.healthIntervalSeconds * 1000);
    this.timer.unref();
  }

  private async probeHost(h: PoolHost): Promise<void> {
    if (h.probing || this.closed) return;
    h.probing = true;
    let result: ProbeResult;
    try {
      result = await this.executor.probe(h, AbortSignal.timeout(this.opts.probeTimeoutMs ?? 5000));
    } catch (err) {
      result = { ok: false, message: err instanceof Error ? err.message : String(err) };
    } finally {
      h.probing = false;
    }
    h.lastProbeAt = Date.now();
    if (this.closed) return;
    if (result.ok) {
      const wasDown = h.status !== 'up' && h.status !== 'warming';
      h.consecutiveFailures = 0;
      h.lastError = undefined;
      if (result.checkpoints) h.checkpoints = result.checkpoints;
      if (result.loras) h.loras = result.loras;
      if (result.freeVramBytes !== undefined) h.freeVramBytes = result.freeVramBytes;
      if (result.totalVramBytes !== undefined) h.totalVramBytes = result.totalVramBytes;
      // What the host says it has loaded wins while it is idle (someone else may have used it).
      if (result.loaded !== undefined && h.running === 0) h.loaded = result.loaded;
      if (wasDown && this.executor.warmup) this.warm(h);
      else if (wasDown) {
        h.status = 'up';
        this.opts.onHostEvent?.({ host: h.name, event: 'up' });
        this.pump();
      }
    } else {
      h.consecutiveFailures++;
      h.lastError = result.message ?? 'probe failed';
      if (h.status !== 'down' && (h.status === 'unknown' || h.consecutiveFailures >= this.opts.unhealthyAfterFailures)) {
        this.markDown(h, h.lastError);
      }
    }
  }

  /** Runs the warm-up on a host that just answered; it joins when that ends (failed or not). */
  private warm(h: PoolHost): void {
    h.status = 'warming';
    this.opts.onHostEvent?.({ host: h.name, event: 'warming' });
    const stop = AbortSignal.timeout(this.opts.warmupTimeoutMs ?? 600_000);
    void Promise.resolve()
      .then(() => this.executor.warmup!(h, stop))
      .catch((err) => {
        // A warm-up that failed says nothing certain about the host: the probes decide whether it is up.
        this.opts.onHostEvent?.({ host: h.name, event: 'warmup_failed', message: err instanceof Error ? err.message : String(err) });
      })
      .finally(() => {
        if (this.closed || h.status !== 'warming') return;
        h.status = 'up';
        this.opts.onHostEvent?.({ host: h.name, event: 'up' });
        this.pump();
      });
  }

  private markDown(h: PoolHost, message: string): void {
    h.lastError = message;
    h.consecutiveFailures = Math.max(h.consecutiveFailures, this.opts.unhealthyAfterFailures);
    if (h.status === 'down') return;
    h.status = 'down';
    // What it had loaded is unknown once it comes back (a restart loads nothing).
    h.loaded = undefined;
    h.loadedLoras = undefined;
    this.opts.onHostEvent?.({ host: h.name, event: 'down', message });
  }

  private abortMember(w: Waiting): void {
    if (w.settled) return;
    const err = abortedError(this.opts.backendName, w.ctx.signal.reason);
    const d = w.dispatch;
    if (!d) {
      const i = this.waiting.indexOf(w);
      if (i >= 0) this.waiting.splice(i, 1);
      w.reject(err);
      return;
    }
    d.live.delete(w);
    w.reject(err);
    if (d.live.size === 0) d.controller.abort(err);
  }

  /** Starts as many host calls as there are free slots and waiting calls. */
  private pump(): void {
    if (this.closed) return;
    for (;;) {
      const pick = this.pick();
      if (!pick) return;
      const members = this.coalesce(pick.leader);
      const taken = new Set(members);
      this.waiting = this.waiting.filter((w) => !taken.has(w));
      this.run(pick.host, members);
    }
  }

  /**
   * Hosts that can take a call now: below `maxConcurrent`, or below their queue-ahead slots once
   * every call running there is past halfway.
   */
  private usable(): PoolHost[] {
    return this.hosts.filter((h) => {
      if (h.status === 'down' || h.status === 'warming') return false;
      // With a warm-up, a host takes work only once it has answered and warmed.
      if (h.status === 'unknown' && this.executor.warmup) return false;
      if (h.running < h.maxConcurrent) return true;
      if (h.running >= h.slots) return false;
      for (const d of this.dispatches) if (d.host === h && !d.released && d.progress < QUEUE_AHEAD_AT) return false;
      return true;
    });
  }

  private pick(): { host: PoolHost; leader: Waiting } | undefined {
    if (this.waiting.length === 0) return undefined;
    const free = this.usable();
    if (free.length === 0) return undefined;
    const oldest = this.waiting[0]!;
    if (!this.opts.affinity) return { leader: oldest, host: this.bestHost(free, oldest) };

    // Checkpoints some live host holds: their calls are served by that host in age order, so only
    // calls for a checkpoint nobody holds can be passed over for long.
    const held = new Set(this.hosts.filter((h) => h.status !== 'down' && h.loaded !== undefined).map((h) => h.loaded));
    const maxWaitMs = this.opts.affinityMaxWaitSeconds * 1000;
    const starving = this.waiting.find((w) => !held.has(w.checkpoint));
    // The oldest call some free host already has the checkpoint for (a host a call failed on does
    // not count: it goes elsewhere if it can).
    let match: { leader: Waiting; host: PoolHost } | undefined;
    for (const w of this.waiting) {
      const matching = free.filter((h) => h.loaded === w.checkpoint && !w.tried.has(h.name));
      if (matching.length) {
        match = { leader: w, host: this.bestHost(matching, w) };
        break;
      }
    }
    // Affinity may pass a call over only while the work served instead is at most affinityMaxWait
    // younger than it: no job waits much longer than the jobs around it.
    if (match && !(starving && match.leader.enqueuedAt - starving.enqueuedAt >= maxWaitMs)) return match;
    if (starving) return { leader: starving, host: this.bestHost(free, starving) };
    // Every waiting checkpoint is held by a busy host, so this free host must switch to take one:
    // the oldest call, unless its host is past halfway (it frees soon; a load costs seconds).
    const nearlyFree = (checkpoint: string) =>
      [...this.dispatches].some((d) => !d.released && d.progress >= QUEUE_AHEAD_AT && d.host.status !== 'down' && d.host.loaded === checkpoint);
    const leader = this.waiting.find((w) => !nearlyFree(w.checkpoint));
    return leader ? { leader, host: this.bestHost(free, leader) } : undefined;
  }

  /** Among free hosts, the best one for `w`. */
  private bestHost(free: PoolHost[], w: Waiting): PoolHost {
    let candidates = free.filter((h) => (!h.checkpoints || h.checkpoints.includes(w.checkpoint)) && (!h.loras || w.loraRefs.every((r) => h.loras!.includes(r))));
    if (candidates.length === 0) candidates = free;
    const untried = candidates.filter((h) => !w.tried.has(h.name));
    if (untried.length) candidates = untried;
    const wanted = new Set(this.waiting.map((x) => x.checkpoint));
    const score = (h: PoolHost): number[] => [
      this.opts.affinity && h.loaded === w.checkpoint ? 0 : 1,
      // The same LoRA set as last time: the host patched these weights already (ComfyUI caches the
      // LoraLoader outputs, A1111 keeps its networks loaded).
      this.opts.affinity && h.loadedLoras === w.loraSet ? 0 : 1,
      h.running,
      // Switching a host whose checkpoint nobody is waiting for keeps the other hosts' affinity.
      this.opts.affinity && h.loaded !== undefined && wanted.has(h.loaded) ? 1 : 0,
      h.status === 'up' ? 0 : 1,
    ];
    let best = candidates[0]!;
    let bestScore = score(best);
    for (const h of candidates.slice(1)) {
      const s = score(h);
      const better = s.findIndex((v, i) => v !== bestScore[i]!);
      if (better >= 0 && s[better]! < bestScore[better]!) {
        best = h;
        bestScore = s;
      }
    }
    return best;
  }

  private coalesce(leader: Waiting): Waiting[] {
    const members = [leader];
    if (leader.batchKey === undefined) return members;
    let total = leader.n;
    for (const w of this.waiting) {
      if (total >= this.opts.maxBatchSize) break;
      if (w === leader || w.batchKey !== leader.batchKey || total + w.n > this.opts.maxBatchSize) continue;
      members.push(w);
      total += w.n;
    }
    return members;
  }

  private run(host: PoolHost, members: Waiting[]): void {
    const now = Date.now();
    const leader = members[0]!;
    const total = members.reduce((a, w) => a + w.n, 0);
    const seedChosen = leader.request.seed === undefined;
    const seed = leader.request.seed ?? randomInt(0, 2 ** 32 - 1);
    let offset = 0;
    const batchMembers: BatchMember[] = members.map((w) => {
      const m = { request: w.request, ctx: w.ctx, n: w.n, offset };
      offset += w.n;
      return m;
    });
    const attempt = Math.max(...members.map((w) => w.attempts));
    const batch: PoolBatch = {
      request: { ...leader.request, n: total, seed },
      checkpoint: leader.checkpoint,
      members: batchMembers,
      total,
      seed,
      seedChosen,
      attempt,
    };

    if (host.running === 0) host.busySince = now;
    host.running++;
    if (host.loaded !== leader.checkpoint) host.switches++;
    host.loaded = leader.checkpoint;
    host.loadedLoras = leader.loraSet;
    this.batches++;
    this.batchSizes[total] = (this.batchSizes[total] ?? 0) + 1;

    const d: Dispatch = { host, progress: 0, members, live: new Set(members), controller: new AbortController(), released: false };
    this.dispatches.add(d);
    for (const w of members) {
      w.dispatch = d;
      w.attempts++;
      w.tried.add(host.name);
    }
    const memberOf = (index: number) => batchMembers.findIndex((m) => index >= m.offset && index < m.offset + m.n);
    const release = () => {
      if (d.released) return;
      d.released = true;
      host.running--;
      if (host.running === 0 && host.busySince !== undefined) {
        host.busyMs += Date.now() - host.busySince;
        host.busySince = undefined;
      }
      queueMicrotask(() => this.pump());
    };
    const io: RunIO = {
      signal: d.controller.signal,
      progress: (p) => {
        const crossed = d.progress < QUEUE_AHEAD_AT && p >= QUEUE_AHEAD_AT;
        d.progress = Math.max(d.progress, p);
        for (const w of d.live) w.ctx.reportProgress(p);
        // Halfway through, the host may take its queue-ahead call (formed as late as possible, so
        // it batches what has come in meanwhile).
        if (crossed && host.slots > host.maxConcurrent) queueMicrotask(() => this.pump());
      },
      partialImage: (img) => {
        const k = memberOf(img.index);
        const w = members[k];
        if (!w || !d.live.has(w)) return;
        w.ctx.reportPartialImage?.({ ...img, index: img.index - batchMembers[k]!.offset });
      },
      release,
      saveState: (state) => {
        members.forEach((w, k) => {
          if (d.live.has(w)) void w.ctx.saveState(state(batchMembers[k]!)).catch(() => {});
        });
      },
    };

    let output: Promise<BatchOutput>;
    // The host's time on this batch (not the jobs' wait for a host): what self-hosted cost is made of.
    const runStarted = Date.now();
    try {
      output = this.executor.run(host, batch, io);
    } catch (err) {
      output = Promise.reject(err);
    }
    output
      .then(
        (out) => {
          host.calls++;
          host.images += total;
          this.deliver(d, batch, out, Date.now() - runStarted);
        },
        (err) => this.failed(d, err),
      )
      .finally(() => {
        this.dispatches.delete(d);
        release();
      });
  }

  private deliver(d: Dispatch, batch: PoolBatch, out: BatchOutput, runMs: number): void {
    batch.members.forEach((m, k) => {
      const w = d.members[k]!;
      if (!d.live.has(w)) return;
      const images = out.images.slice(m.offset, m.offset + m.n);
      if (images.length === 0) {
        w.reject(new BackendError(`Backend "${this.opts.backendName}" returned no image for this job (host ${d.host.name})`, { code: 'backend_error', retryable: true }));
        return;
      }
      const warnings = [...out.warnings];
      if (images.length < m.n) warnings.push(otherWarning(`Backend "${this.opts.backendName}" returned ${images.length} of ${m.n} requested images`));
      w.resolve({
        images,
        warnings,
        providerMetadata: {
          gpuMs: runMs,
          ...out.providerMetadata,
          host: d.host.name,
          batch: { size: batch.total, jobs: batch.members.length, seed: batch.seed, firstIndex: m.offset },
        },
      });
    });
  }

  private failed(d: Dispatch, err: unknown): void {
    const live = [...d.live];
    if (live.length === 0) return; // every member was aborted; the run's failure is the cancel
    if (!d.controller.signal.aborted) d.controller.abort(err);
    if (err instanceof HostFailure) {
      if (err.hostDown) this.markDown(d.host, err.message);
      else {
        d.host.lastError = err.message;
        void this.probeHost(d.host);
      }
      let requeued = false;
      for (const w of live) {
        w.dispatch = undefined;
        w.errors.push(`${d.host.name}: ${err.message}`);
        if (w.attempts <= this.opts.maxHostRetries && !this.closed) {
          // Back in arrival order, so it is served before later calls.
          const at = this.waiting.findIndex((x) => x.enqueuedAt > w.enqueuedAt || (x.enqueuedAt === w.enqueuedAt && x.id > w.id));
          this.waiting.splice(at < 0 ? this.waiting.length : at, 0, w);
          this.hostRetries++;
          requeued = true;
        } else {
          w.reject(
            new BackendError(`Backend "${this.opts.backendName}": the job failed on ${w.attempts} host attempt(s): ${w.errors.join('; ')}`, {
              code: 'backend_unavailable',
              retryable: true,
              cause: err,
            }),
          );
        }
      }
      if (requeued) queueMicrotask(() => this.pump());
      return;
    }
    const error =
      err instanceof BackendError
        ? err
        : new BackendError(`Backend "${this.opts.backendName}" failed on host ${d.host.name}: ${err instanceof Error ? err.message : String(err)}`, {
            code: 'backend_error',
            cause: err,
          });
    for (const w of live) w.reject(error);
  }
}

/** Stable JSON (sorted keys) for batch keys. */
export function stableJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  return `{${Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${stableJson(obj[k])}`)
    .join(',')}}`;
}

/**
 * The batch key of a text-to-image call: calls with equal keys differ only in who asked. Edits,
 * calls with an explicit seed and calls with input images never batch.
 */
export function generationBatchKey(request: BackendRequest, checkpoint: string): string | undefined {
  if (request.kind !== 'generation' || request.seed !== undefined || request.inputImages.length > 0 || request.mask) return undefined;
  return stableJson({
    checkpoint,
    prompt: request.prompt,
    negativePrompt: request.negativePrompt ?? '',
    size: request.size ?? null,
    steps: request.steps ?? null,
    cfg: request.guidanceScale ?? null,
    quality: request.quality ?? null,
    style: request.style ?? null,
    background: request.background ?? null,
    loras: loraSetKey(request.loras),
    options: request.providerOptions,
  });
}
