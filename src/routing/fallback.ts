/**
 * Routing at run time, asked by the worker at the edges of each attempt: which backend this attempt
 * runs on (the job's own model while its backend can take work, else the next entry of its fallback
 * chain), whether a failure should move the job down its chain, and what each backend call says
 * about its backend's health (circuit breakers, latency metrics).
 */
import type { Logger } from 'pino';
import type { ImageRequest } from '../core/image-request.ts';
import type { Job } from '../core/job.ts';
import { BackendError } from '../backends/image-backend.ts';
import type { ResolvedModel } from '../backends/registry.ts';
import type { JobCosts } from '../jobs/job-costs.ts';
import type { CostMetrics } from '../observability/metrics.ts';
import type { CircuitBreakers } from './circuit.ts';
import type { ChainEntry, Router, RoutingRecord } from './router.ts';

/** Failures that say the backend (not the request) is in trouble: they count against its circuit and may fall back. */
const BACKEND_TROUBLE = new Set(['backend_unavailable', 'backend_error', 'backend_auth', 'timeout', 'rate_limited', 'backend_timeout']);

export function isBackendTrouble(error: unknown): boolean {
  if (error instanceof BackendError) return error.retryable || BACKEND_TROUBLE.has(error.code);
  if (error && typeof error === 'object' && (error as { reason?: unknown }).reason === 'timeout') return true;
  return false;
}

export interface AttemptRoute {
  route: ResolvedModel;
  /** Request fields this attempt changes (a fallback model's size or quality). */
  request?: Partial<ImageRequest>;
}

export interface CallOutcome {
  job: Job;
  route: ResolvedModel;
  ok: boolean;
  error?: unknown;
  /** Wall time of the attempt's backend calls. */
  ms: number;
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

export class AttemptRouting {
  private readonly router: Router;
  private readonly circuits: CircuitBreakers;
  private readonly jobCosts: JobCosts;
  private readonly metrics: CostMetrics;
  private readonly log: Logger;

  constructor(opts: { router: Router; jobCosts: JobCosts; metrics: CostMetrics; log: Logger }) {
    this.router = opts.router;
    this.circuits = opts.router.circuits;
    this.jobCosts = opts.jobCosts;
    this.metrics = opts.metrics;
    this.log = opts.log;
  }

  private async record(job: Job): Promise<RoutingRecord | undefined> {
    const row = await this.jobCosts.get(job.id);
    return row?.routing ? (JSON.parse(row.routing) as RoutingRecord) : undefined;
  }

  /** The backend this attempt runs on; undefined: the job's own model as it is. */
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
    const record = await this.record(job);
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
      ...(record ?? { requested: job.model, model: job.model, backend: primary.name, backendModel: job.model, reason: `model '${job.model}' as requested`, chain }),
      fallbacks: [...(record?.fallbacks ?? []), { from: current, to: picked.route.name, reason, at: Date.now() }],
    };
    await this.jobCosts.recordRouting(job, next);
    this.metrics.fallbacks.inc({ from: current, to: picked.route.name });
    this.log.warn({ jobId: job.id, from: current, to: picked.route.name, reason }, 'job falls back along its chain');
    return { route: picked.route, request: entryRequest(picked.entry) };
  }

  /** After an attempt's backend work: the circuit breaker and the call's latency. */
  afterCall(o: CallOutcome): void {
    const trouble = !o.ok && isBackendTrouble(o.error);
    if (o.ok) this.circuits.success(o.route.backend.name);
    else if (trouble) this.circuits.failure(o.route.backend.name);
    else this.circuits.release(o.route.backend.name);
    this.metrics.backendCall.observe({ model: o.route.name, backend: o.route.backend.name, outcome: o.ok ? 'ok' : trouble ? 'backend_error' : 'other' }, o.ms / 1000);
  }

  /** A failure the job should survive by moving down its fallback chain (the worker re-queues it). */
  async shouldFallBack(job: Job, error: unknown): Promise<boolean> {
    if (!isBackendTrouble(error)) return false;
    const record = await this.record(job).catch(() => undefined);
    const chain = record?.chain ?? this.router.meta(job.model).fallback.map((model) => ({ model }));
    const current = record?.fallbacks?.at(-1)?.to ?? job.model;
    const idx = current === job.model ? -1 : chain.findIndex((c) => c.model === current);
    return chain.length > idx + 1;
  }
}
