/**
 * Cost control, wired together: the router, the budget ledger, the image cache, the self-hosted cost
 * model and the metrics, offered to the API's admission pipeline (route → cache → budget →
 * create + enqueue), to batches, and to the worker (WorkerCostHooks).
 */
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { ApiError } from '../core/errors.ts';
import type { ImageRequest } from '../core/image-request.ts';
import type { Job, JobKind } from '../core/job.ts';
import { isTerminal } from '../core/job.ts';
import type { BackendRegistry, ResolvedModel } from '../backends/registry.ts';
import type { ImageBackend } from '../backends/image-backend.ts';
import { BackendError } from '../backends/image-backend.ts';
import type { EaselConfig, ModelConfig } from '../config/schema.ts';
import type { JobEventBus } from '../events/job-events.ts';
import type { PriceTable } from '../pricing/price-table.ts';
import type { JobQueue } from '../queue/job-queue.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import type { MetadataDb } from '../store/database.ts';
import type { ApiKey, JobStore } from '../store/job-store.ts';
import { BudgetLedger, fromMicros, keyBudgetRows, refusalMessage, toMicros, windowPeriod } from '../budgets/ledger.ts';
import type { LedgerRow } from '../budgets/ledger.ts';
import { CACHE_POLICIES, ImageCache, cacheKeys, encodeEmbedding } from '../cache/image-cache.ts';
import type { CacheHit, CachePolicy } from '../cache/image-cache.ts';
import { CircuitBreakers } from '../routing/circuit.ts';
import { CostModel } from '../pricing/cost-model.ts';
import { createEmbedder } from '../cache/embedders.ts';
import type { Embedder } from '../cache/embedders.ts';
import { CostMetrics } from '../observability/metrics.ts';
import { Router } from '../routing/router.ts';
import type { ChainEntry, RouteDecision, RouteInput, RoutingRecord } from '../routing/router.ts';
import type { AttemptRoute, CallOutcome, JobOutcome, WorkerCostHooks } from './worker-hooks.ts';

/** Failures that say the backend (not the request) is in trouble: they count against its circuit and may fall back. */
const BACKEND_TROUBLE = new Set(['backend_unavailable', 'backend_error', 'backend_auth', 'timeout', 'rate_limited', 'backend_timeout']);

export interface BatchAdmission {
  id: string;
  /** Hourly (per window) spend cap of the batch, USD. */
  capUsd: number | null;
  windowSeconds: number;
}

export interface AdmitInput {
  jobId: string;
  key: Pick<ApiKey, 'id' | 'name'>;
  kind: JobKind;
  decision: RouteDecision | undefined;
  route: ResolvedModel;
  request: ImageRequest;
  cachePolicy: CachePolicy;
  batch?: BatchAdmission;
  parent?: { jobId: string; index: number };
}

export interface Admission {
  hit?: CacheHit;
  estimateUsd: number;
  reserved: boolean;
  saved?: number;
  input: AdmitInput;
  embedding?: string;
}

/** Refusal when a batch's window cap is full: the batch waits rather than fails. */
export class CapReached extends Error {
  readonly resetsAt: Date;
  constructor(resetsAt: Date) {
    super('batch spend cap reached for this window');
    this.resetsAt = resetsAt;
  }
}

export interface JobCostRow {
  job_id: string;
  key_id: string;
  requested_model: string | null;
  routing: string | null;
  estimate_usd: number | string | null;
  reserved: number | string;
  cache_policy: string | null;
  embedding: string | null;
  cache_kind: string | null;
  cache_source_job: string | null;
  cache_similarity: number | string | null;
  saved_usd: number | string | null;
  backend: string | null;
  backend_model: string | null;
  images: number | string | null;
  megapixels: number | string | null;
  gpu_seconds: number | string | null;
  self_hosted: number | string;
  parent_job_id: string | null;
  parent_index: number | string | null;
  batch_id: string | null;
  created_at: number | string;
}

const num = (v: number | string | null | undefined): number | null => (v == null ? null : Number(v));
const round6 = (x: number) => Math.round(x * 1e6) / 1e6;

export function parseCachePolicy(raw: string | string[] | undefined): CachePolicy {
  if (raw === undefined) return 'auto';
  const v = (Array.isArray(raw) ? raw[0]! : raw).trim().toLowerCase();
  if ((CACHE_POLICIES as readonly string[]).includes(v)) return v as CachePolicy;
  throw new ApiError(400, `Invalid 'Easel-Cache' header: expected one of ${CACHE_POLICIES.join(', ')}, got "${v.slice(0, 40)}".`, { param: 'Easel-Cache', code: 'invalid_value' });
}

export class CostControl implements WorkerCostHooks {
  readonly config: EaselConfig;
  readonly ledger: BudgetLedger;
  readonly router: Router;
  readonly cache: ImageCache;
  readonly costs: CostModel;
  readonly circuits: CircuitBreakers;
  readonly metrics: CostMetrics;
  readonly embedder: Embedder | undefined;
  private readonly db: Kysely<any>;
  private readonly store: JobStore;
  private readonly events: JobEventBus;
  private readonly log: Logger;
  private timers: NodeJS.Timeout[] = [];
  /**
   * Jobs admitted by this process with nothing worth a `job_costs` row: a worker in the same process
   * (`easel serve`) and the 202 answer then skip reading one. Bounded; other processes just read.
   */
  private readonly rowless = new Set<string>();
  private unsubscribe: (() => void) | undefined;

  constructor(opts: {
    config: EaselConfig;
    mdb: MetadataDb;
    store: JobStore;
    storage: ImageStorage;
    backends: BackendRegistry;
    queue: JobQueue;
    events: JobEventBus;
    prices: Pick<PriceTable, 'priceFor'>;
    log: Logger;
    /** The models served (config, or the embedded default's); default `config.models`. */
    models?: ModelConfig[];
    embedder?: Embedder;
  }) {
    this.config = opts.config;
    this.db = opts.mdb.db;
    this.store = opts.store;
    this.events = opts.events;
    this.log = opts.log;
    this.ledger = new BudgetLedger(opts.mdb);
    this.costs = new CostModel({ config: opts.config.costModel, prices: opts.prices, unpricedImageUsd: opts.config.budgets.unpricedImageUsd, mdb: opts.mdb });
    this.circuits = new CircuitBreakers(opts.config.routing.circuit);
    this.circuits.onChange = (backend, state) => this.log.warn({ backend, circuit: state }, `circuit of backend ${backend} is ${state}`);
    this.router = new Router({ registry: opts.backends, models: opts.models ?? opts.config.models, config: opts.config.routing, costs: this.costs, circuits: this.circuits });
    this.embedder = opts.embedder ?? (opts.config.cache.semantic.enabled ? createEmbedder(opts.config.cache.semantic.embedder ?? { type: 'hashed', dimensions: 256 }) : undefined);
    this.cache = new ImageCache({ mdb: opts.mdb, store: opts.store, storage: opts.storage, config: opts.config.cache, embedder: this.embedder, log: opts.log });
    this.metrics = new CostMetrics();
    this.metrics.attach({ store: opts.store, queue: opts.queue, health: () => this.router.backendHealth(), circuits: () => this.circuits.snapshot() });
  }

  // ---------------------------------------------------------------- admission

  route(input: RouteInput): Promise<RouteDecision | undefined> {
    return this.router.route(input);
  }

  /** The ledger rows limiting this key (and batch) now. */
  budgetRows(key: Pick<ApiKey, 'id' | 'name'>, batch?: BatchAdmission, at = new Date()): LedgerRow[] {
    const rows = keyBudgetRows(this.config.budgets, key, at);
    if (batch?.capUsd != null) {
      const w = windowPeriod(at, batch.windowSeconds);
      rows.push({ scope: `batch:${batch.id}`, period: w.period, limitMicros: toMicros(batch.capUsd), label: `batch ${batch.id} spend cap`, resetsAt: w.resetsAt });
    }
    return rows;
  }

  /**
   * Cache lookup, then budget reservation. A hit needs no reservation (it costs nothing). A refused
   * reservation throws the 429 `insufficient_quota` error (or CapReached for a batch's window cap).
   */
  async admit(input: AdmitInput): Promise<Admission> {
    const estimate = input.decision?.estimate.usd ?? (await this.costs.estimate(input.route.backend, input.route.backendModel, input.request.size, input.request.quality, input.request.n)).usd;
    const admission: Admission = { estimateUsd: estimate, reserved: false, input };
    const elig = this.cache.eligibility(input.key, input.kind, input.request, input.cachePolicy);
    if (elig.exact || elig.semantic) {
      const keys = cacheKeys(input.route.name, input.request);
      let hit: CacheHit | undefined;
      // A hit is only a hit once its bytes are read: one whose files are gone is a miss (and dropped).
      const loaded = async (h: CacheHit | undefined) => (h ? await this.cache.load(h) : undefined);
      if (elig.exact) {
        hit = await this.cache.lookupExact(keys, input.key.id).then(loaded).catch((err) => (this.log.warn({ err }, 'cache lookup failed'), undefined));
        this.metrics.cacheLookups.inc({ kind: 'exact', result: hit ? 'hit' : 'miss' });
      }
      if (!hit && elig.semantic) {
        const v = await this.cache.embed(input.request.prompt);
        if (v) {
          admission.embedding = encodeEmbedding(this.embedder!.id, v);
          hit = await this.cache.lookupSemantic(keys, input.key.id, v).then(loaded).catch((err) => (this.log.warn({ err }, 'semantic cache lookup failed'), undefined));
          this.metrics.cacheLookups.inc({ kind: 'semantic', result: hit ? 'hit' : 'miss' });
        }
      }
      if (hit) {
        admission.hit = hit;
        admission.saved = estimate;
        return admission;
      }
    }
    const rows = this.budgetRows(input.key, input.batch);
    if (rows.length) {
      const amount = toMicros(estimate);
      const r = await this.ledger.reserve(input.jobId, input.key.id, rows, amount);
      if (!r.ok) {
        if (r.row.scope.startsWith('batch:')) throw new CapReached(r.row.resetsAt);
        this.metrics.budgetRefusals.inc({ scope: r.row.scope.split(':')[0]! });
        const left = Math.max(0, r.row.limitMicros - r.row.spentMicros - r.row.reservedMicros);
        throw new ApiError(429, refusalMessage(r.row, amount), {
          type: 'insufficient_quota' as never,
          code: 'insufficient_quota',
          headers: {
            'x-should-retry': 'false',
            'x-easel-budget-remaining-usd': fromMicros(left).toFixed(6),
            'x-easel-budget-resets-at': r.row.resetsAt.toISOString(),
          },
        });
      }
      admission.reserved = true;
    }
    return admission;
  }

  /** Gives back what an admission held when its job never came to be. */
  async abandon(admission: Admission | undefined): Promise<void> {
    if (admission?.reserved) await this.ledger.release(admission.input.jobId).catch((err) => this.log.error({ err }, 'releasing a reservation failed'));
  }

  /** Records the admission on the job (routing, estimate, reservation, links) when there is anything to keep. */
  async recordAdmission(job: Job, admission: Admission): Promise<void> {
    const d = admission.input.decision;
    const policy = this.cache.optedOut(admission.input.key) ? 'opt_out' : admission.input.cachePolicy;
    const keep = !!d?.notable || admission.reserved || !!admission.hit || !!admission.input.batch || !!admission.input.parent || policy !== 'auto' || !!admission.embedding;
    if (!keep) {
      this.rowless.add(job.id);
      if (this.rowless.size > 50_000) this.rowless.delete(this.rowless.values().next().value!);
      return;
    }
    await this.db
      .insertInto('job_costs')
      .values({
        job_id: job.id,
        key_id: job.keyId,
        requested_model: d?.record.requested ?? null,
        routing: d?.notable ? JSON.stringify(d.record) : null,
        estimate_usd: admission.estimateUsd,
        reserved: admission.reserved ? 1 : 0,
        cache_policy: policy,
        embedding: admission.embedding ?? null,
        cache_kind: admission.hit?.kind ?? null,
        cache_source_job: admission.hit?.sourceJobId ?? null,
        cache_similarity: admission.hit?.similarity ?? null,
        saved_usd: admission.hit ? admission.saved ?? null : null,
        self_hosted: 0,
        parent_job_id: admission.input.parent?.jobId ?? null,
        parent_index: admission.input.parent?.index ?? null,
        batch_id: admission.input.batch?.id ?? null,
        created_at: job.createdAt.getTime(),
      })
      .onConflict((oc) => oc.column('job_id').doNothing())
      .execute();
  }

  /** Completes a just-created job from its cache hit; false when it must run after all. */
  async fulfil(job: Job, admission: Admission): Promise<boolean> {
    const hit = admission.hit!;
    const ok = await this.cache.fulfil(job, hit);
    if (ok) {
      this.metrics.cacheSaved.inc({ kind: hit.kind }, admission.saved ?? 0);
      this.events.publish({ type: 'status', jobId: job.id, status: 'succeeded', at: Date.now(), webhook: job.webhookUrl != null });
    } else {
      await this.db.updateTable('job_costs').set({ cache_kind: null, cache_source_job: null, cache_similarity: null, saved_usd: null }).where('job_id', '=', job.id).execute().catch(() => {});
    }
    return ok;
  }

  // ---------------------------------------------------------------- worker hooks

  private async costRow(jobId: string): Promise<JobCostRow | undefined> {
    return (await this.db.selectFrom('job_costs').selectAll().where('job_id', '=', jobId).executeTakeFirst()) as JobCostRow | undefined;
  }

  async beforeAttempt(job: Job): Promise<AttemptRoute | undefined> {
    const primary = this.router.backendOf(job.model);
    if (!primary) return undefined;
    await this.router.backendHealth();
    // The happy path reads nothing: a first attempt whose backend can take work runs there.
    const firstTry = job.attempt === 0;
    if (firstTry && this.router.availability(primary.name).ok) {
      // A half-open circuit lets one trial through: this job takes the slot, others fall back meanwhile.
      if (this.circuits.state(primary.name) === 'half_open') this.circuits.acquire(primary.name);
      return undefined;
    }
    const row = await this.costRow(job.id);
    const record = row?.routing ? (JSON.parse(row.routing) as RoutingRecord) : undefined;
    const chain: ChainEntry[] = record?.chain ?? this.router.meta(job.model).fallback.map((model) => ({ model }));
    if (chain.length === 0) return undefined;
    const current = record?.fallbacks?.at(-1)?.to ?? job.model;
    const currentEntries = current === job.model ? chain : chain.slice(chain.findIndex((c) => c.model === current) + 1);
    const picked = this.router.pickForAttempt(current, currentEntries, firstTry ? null : job.backend);
    if (!picked || picked.route.name === current) {
      return current === job.model || !picked ? undefined : { route: picked.route, request: entryRequest(picked.entry) };
    }
    const reason = picked.reason || `moved from '${current}'`;
    const next: RoutingRecord = {
      ...(record ?? { requested: job.model, model: job.model, backend: primary.name, backendModel: this.router.backendOf(job.model) ? job.model : job.model, reason: `model '${job.model}' as requested`, chain }),
      fallbacks: [...(record?.fallbacks ?? []), { from: current, to: picked.route.name, reason, at: Date.now() }],
    };
    await this.db
      .insertInto('job_costs')
      .values({ job_id: job.id, key_id: job.keyId, requested_model: job.model, routing: JSON.stringify(next), reserved: 0, self_hosted: 0, created_at: job.createdAt.getTime() })
      .onConflict((oc) => oc.column('job_id').doUpdateSet({ routing: JSON.stringify(next) }))
      .execute();
    this.metrics.fallbacks.inc({ from: current, to: picked.route.name });
    this.log.warn({ jobId: job.id, from: current, to: picked.route.name, reason }, 'job falls back along its chain');
    return { route: picked.route, request: entryRequest(picked.entry) };
  }

  costOf(backend: ImageBackend, gpuSeconds: number, host: string | undefined): number | undefined {
    if (!this.costs.isSelfHosted(backend)) return undefined;
    return this.costs.gpuCost(backend.name, gpuSeconds, host);
  }

  afterCall(o: CallOutcome): void {
    const trouble = !o.ok && isBackendTrouble(o.error);
    if (o.ok) this.circuits.success(o.route.backend.name);
    else if (trouble) this.circuits.failure(o.route.backend.name);
    else this.circuits.release(o.route.backend.name);
    this.metrics.backendCall.observe({ model: o.route.name, backend: o.route.backend.name, outcome: o.ok ? 'ok' : trouble ? 'backend_error' : 'other' }, o.ms / 1000);
  }

  async shouldFallBack(job: Job, error: unknown): Promise<boolean> {
    if (!isBackendTrouble(error)) return false;
    const row = await this.costRow(job.id).catch(() => undefined);
    const record = row?.routing ? (JSON.parse(row.routing) as RoutingRecord) : undefined;
    const chain = record?.chain ?? this.router.meta(job.model).fallback.map((model) => ({ model }));
    const current = record?.fallbacks?.at(-1)?.to ?? job.model;
    const idx = current === job.model ? -1 : chain.findIndex((c) => c.model === current);
    return chain.length > idx + 1;
  }

  async beforeComplete(job: Job, o: JobOutcome): Promise<void> {
    // Self-hosted jobs keep their measured GPU time (estimates, utilization, break-even); hosted ones need no row.
    if (!o.route || o.gpuSeconds === undefined || !this.costs.isSelfHosted(o.route.backend)) return;
    try {
      const images = o.images ?? job.request.n;
      const mp = job.request.size ? (job.request.size.width * job.request.size.height) / (1024 * 1024) : 1;
      const values = {
        backend: o.route.backend.name,
        backend_model: o.route.backendModel,
        images,
        megapixels: mp,
        gpu_seconds: o.gpuSeconds,
        self_hosted: 1,
      };
      await this.db
        .insertInto('job_costs')
        .values({ job_id: job.id, key_id: job.keyId, reserved: 0, created_at: job.createdAt.getTime(), ...values })
        .onConflict((oc) => oc.column('job_id').doUpdateSet(values))
        .execute();
    } catch (err) {
      this.log.warn({ err, jobId: job.id }, 'recording GPU time failed');
    }
  }

  async finished(job: Job, o: JobOutcome): Promise<void> {
    try {
      const backend = o.route?.backend.name ?? job.backend ?? 'unknown';
      const labels = { model: job.model, backend };
      this.metrics.jobDuration.observe({ ...labels, status: o.status }, (Date.now() - job.createdAt.getTime()) / 1000);
      if (job.startedAt) this.metrics.queueWait.observe({ priority: job.priority }, Math.max(0, job.startedAt.getTime() - job.createdAt.getTime()) / 1000);
      // Rows written after admission (fallbacks, GPU time) never carry what is read here.
      const row = this.rowless.delete(job.id) ? undefined : await this.costRow(job.id);
      if (o.status === 'succeeded') {
        const images = o.images ?? job.request.n;
        if (o.costUsd != null) {
          this.metrics.spend.inc(labels, o.costUsd);
          for (let i = 0; i < images; i++) this.metrics.imageCost.observe(labels, o.costUsd / Math.max(1, images));
        }
        this.metrics.images.inc(labels, images);
        if (row?.reserved && Number(row.reserved)) await this.ledger.settle(job.id, o.costUsd == null ? null : toMicros(o.costUsd));
        const selfHosted = o.route ? this.costs.isSelfHosted(o.route.backend) : false;
        if (o.route && selfHosted && o.gpuSeconds !== undefined) {
          this.costs.observe(o.route.backend.name, o.route.backendModel, o.gpuSeconds, images, job.request.size);
          this.metrics.gpuSeconds.inc({ backend: o.route.backend.name, host: o.host ?? '' }, o.gpuSeconds);
        }
        if (!row?.cache_kind && this.cache.storable(job.kind, row?.cache_policy)) {
          await this.cache.record(job, o.costUsd, row?.embedding ?? null);
        }
      } else if (row?.reserved && Number(row.reserved)) {
        await this.ledger.release(job.id);
      }
    } catch (err) {
      // The sweep settles what this missed; the job itself is already final.
      this.log.warn({ err, jobId: job.id }, 'cost bookkeeping after the job failed');
    }
  }

  // ---------------------------------------------------------------- background

  /** Worker role: settle reservations of jobs that ended elsewhere (a queued job canceled by the API), purge the cache. */
  start(): void {
    const sweep = async () => {
      const n = await this.ledger.sweep().catch((err) => (this.log.warn({ err }, 'budget sweep failed'), 0));
      if (n) this.log.info({ settled: n }, 'settled reservations of ended jobs');
    };
    this.timers.push(setInterval(sweep, this.config.budgets.sweepIntervalSeconds * 1000));
    this.timers.push(setInterval(() => void this.cache.purgeExpired().catch(() => {}), 3600_000));
    for (const t of this.timers) t.unref();
    void sweep();
    // A job canceled while queued never reaches a worker: settle it when its status event comes by.
    this.unsubscribe = this.events.subscribeAll((e) => {
      if (e.type === 'status' && e.status === 'canceled') void this.ledger.release(e.jobId).catch(() => {});
    });
  }

  async stop(): Promise<void> {
    await this.cache.flush().catch((err) => this.log.warn({ err }, 'writing cache entries failed'));
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.unsubscribe?.();
    await this.embedder?.close?.().catch(() => {});
  }

  // ---------------------------------------------------------------- views

  /** What the job object shows about cost, cache, routing and links. */
  async jobExtras(job: Job): Promise<Record<string, unknown>> {
    // A job this process just admitted without a row (the 202 answer) needs no read.
    const row = job.attempt === 0 && this.rowless.has(job.id) ? undefined : await this.costRow(job.id).catch(() => undefined);
    const out: Record<string, unknown> = {};
    const reservation = row && Number(row.reserved) ? await this.ledger.reservation(job.id).catch(() => undefined) : undefined;
    out.cost = {
      usd: job.costUsd,
      estimate_usd: num(row?.estimate_usd),
      ...(row?.gpu_seconds != null ? { gpu_seconds: Math.round(Number(row.gpu_seconds) * 1000) / 1000 } : {}),
      ...(row?.saved_usd != null ? { saved_usd: num(row.saved_usd) } : {}),
      ...(reservation ? { budget: { status: reservation.status, reserved_usd: reservation.amountUsd, charged_usd: reservation.chargedUsd } } : {}),
    };
    out.cache = row?.cache_kind ? { hit: true, kind: row.cache_kind, source_job_id: row.cache_source_job, ...(row.cache_similarity != null ? { similarity: num(row.cache_similarity) } : {}) } : { hit: false };
    if (row?.routing) {
      const r = JSON.parse(row.routing) as RoutingRecord;
      out.routing = { requested: r.requested, ...(r.alias ? { alias: r.alias } : {}), model: r.model, backend: r.backend, reason: r.reason, ...(r.fallbacks?.length ? { fallbacks: r.fallbacks.map((f) => ({ ...f, at: Math.floor(f.at / 1000) })) } : {}), ...(r.candidates ? { candidates: r.candidates } : {}) };
    } else {
      out.routing = { requested: row?.requested_model ?? job.model, model: job.model, backend: job.backend, reason: job.backend === 'cache' ? 'answered from the cache' : `model '${job.model}' as requested` };
    }
    if (row?.parent_job_id) out.refined_from = { job_id: row.parent_job_id, index: num(row.parent_index) };
    if (row?.batch_id) out.batch_id = row.batch_id;
    // Only a finished job can have been refined.
    if (job.status === 'succeeded' && job.kind === 'generation') {
      const children = (await this.db.selectFrom('job_costs').select(['job_id']).where('parent_job_id', '=', job.id).orderBy('job_id').limit(50).execute().catch(() => [])) as { job_id: string }[];
      if (children.length) out.refinements = children.map((c) => c.job_id);
    }
    return out;
  }

  /** Whether a job ended (for callers holding an admission across awaits). */
  static ended(job: Job): boolean {
    return isTerminal(job.status);
  }
}

function entryRequest(e: ChainEntry): Partial<ImageRequest> | undefined {
  if (!e.size && !e.quality) return undefined;
  const out: Partial<ImageRequest> = {};
  if (e.size) {
    const [w, h] = e.size.split('x').map(Number);
    out.size = { width: w!, height: h! };
  }
  if (e.quality) out.quality = e.quality;
  return out;
}

export function isBackendTrouble(error: unknown): boolean {
  if (error instanceof BackendError) return error.retryable || BACKEND_TROUBLE.has(error.code);
  if (error && typeof error === 'object' && (error as { reason?: unknown }).reason === 'timeout') return true;
  return false;
}

export { round6 };
