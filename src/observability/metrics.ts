/**
 * Prometheus metrics (prom-client, one registry per runtime). Recorded where things happen (the
 * worker finishing a job, admission answering from the cache or refusing on budget) and collected at
 * scrape time from the store, the queue and the backends (jobs by state, queue depth, health,
 * circuits, GPU host busy time).
 *
 * p50/p95/p99 come from the histograms, e.g.
 *   histogram_quantile(0.95, sum by (le, model, backend) (rate(easel_job_duration_seconds_bucket[5m])))
 * and the cache hit rate from the counters (or the `easel_cache_hit_ratio` gauge):
 *   sum(rate(easel_cache_lookups_total{result="hit"}[5m])) / sum(rate(easel_cache_lookups_total[5m]))
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { BackendHealth } from '../backends/image-backend.ts';
import type { JobStatus } from '../core/job.ts';
import type { JobQueue } from '../queue/job-queue.ts';
import type { JobStore } from '../store/job-store.ts';
import type { CircuitState } from '../routing/circuit.ts';

export interface MetricSources {
  store?: Pick<JobStore, 'countByStatus'>;
  queue?: Pick<JobQueue, 'counts'>;
  health?: () => Promise<Record<string, BackendHealth>>;
  circuits?: () => Record<string, { state: CircuitState }>;
}

const LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 180, 300, 600];
const COST_BUCKETS = [0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.2, 0.5, 1];

export class CostMetrics {
  readonly registry = new Registry();
  readonly imageCost: Histogram<'model' | 'backend'>;
  readonly spend: Counter<'model' | 'backend'>;
  readonly images: Counter<'model' | 'backend'>;
  readonly jobDuration: Histogram<'model' | 'backend' | 'status'>;
  readonly backendCall: Histogram<'model' | 'backend' | 'outcome'>;
  readonly queueWait: Histogram<'priority'>;
  readonly cacheLookups: Counter<'kind' | 'result'>;
  readonly cacheSaved: Counter<'kind'>;
  readonly budgetRefusals: Counter<'scope'>;
  readonly rateLimited: Counter<'endpoint' | 'scope'>;
  readonly gpuSeconds: Counter<'backend' | 'host'>;
  readonly fallbacks: Counter<'from' | 'to'>;
  private sources: MetricSources = {};

  constructor() {
    const registers = [this.registry];
    this.imageCost = new Histogram({ name: 'easel_image_cost_usd', help: 'Cost of one image in USD (price table, provider-reported, or GPU time for self-hosted backends)', labelNames: ['model', 'backend'], buckets: COST_BUCKETS, registers });
    this.spend = new Counter({ name: 'easel_spend_usd_total', help: 'Money spent on finished jobs, USD', labelNames: ['model', 'backend'], registers });
    this.images = new Counter({ name: 'easel_images_total', help: 'Images generated (cache hits excluded)', labelNames: ['model', 'backend'], registers });
    this.jobDuration = new Histogram({ name: 'easel_job_duration_seconds', help: 'Job latency from submission to its end, seconds', labelNames: ['model', 'backend', 'status'], buckets: LATENCY_BUCKETS, registers });
    this.backendCall = new Histogram({ name: 'easel_backend_call_seconds', help: 'Time spent in the backend for one job attempt, seconds', labelNames: ['model', 'backend', 'outcome'], buckets: LATENCY_BUCKETS, registers });
    this.queueWait = new Histogram({ name: 'easel_queue_wait_seconds', help: 'Time from submission to the start of the first attempt, seconds', labelNames: ['priority'], buckets: LATENCY_BUCKETS, registers });
    this.cacheLookups = new Counter({ name: 'easel_cache_lookups_total', help: 'Image cache lookups by kind (exact, semantic) and result (hit, miss)', labelNames: ['kind', 'result'], registers });
    this.cacheSaved = new Counter({ name: 'easel_cache_saved_usd_total', help: 'Money cache hits saved (what the request would have cost), USD', labelNames: ['kind'], registers });
    this.budgetRefusals = new Counter({ name: 'easel_budget_refusals_total', help: 'Requests refused because a budget would be exceeded', labelNames: ['scope'], registers });
    this.rateLimited = new Counter({ name: 'easel_rate_limited_total', help: 'Requests refused by a rate limit', labelNames: ['endpoint', 'scope'], registers });
    this.gpuSeconds = new Counter({ name: 'easel_gpu_seconds_total', help: 'Measured GPU-seconds of self-hosted jobs', labelNames: ['backend', 'host'], registers });
    this.fallbacks = new Counter({ name: 'easel_routing_fallbacks_total', help: 'Jobs moved to another model of their fallback chain', labelNames: ['from', 'to'], registers });

    const self = this;
    new Gauge({
      name: 'easel_cache_hit_ratio',
      help: 'Cache hits / lookups since start (all kinds)',
      registers,
      async collect() {
        const values = (await self.cacheLookups.get()).values;
        const total = values.reduce((a, v) => a + v.value, 0);
        const hits = values.filter((v) => v.labels.result === 'hit').reduce((a, v) => a + v.value, 0);
        this.set(total ? hits / total : 0);
      },
    });
    new Gauge({
      name: 'easel_jobs',
      help: 'Jobs by state (whole install)',
      labelNames: ['state'],
      registers,
      async collect() {
        const counts = await self.sources.store?.countByStatus().catch(() => undefined);
        if (!counts) return;
        for (const [state, n] of Object.entries(counts) as [JobStatus, number][]) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'easel_queue_depth',
      help: 'Queue messages waiting and held by workers',
      labelNames: ['state'],
      registers,
      async collect() {
        const c = await self.sources.queue?.counts().catch(() => undefined);
        if (!c) return;
        this.set({ state: 'waiting' }, c.waiting);
        this.set({ state: 'active' }, c.active);
      },
    });
    const hostBusy = new Gauge({ name: 'easel_gpu_host_busy_seconds', help: 'Time each GPU host has had work running since this process started watching it, seconds', labelNames: ['backend', 'host'], registers });
    const hostUp = new Gauge({ name: 'easel_gpu_host_up', help: 'GPU host up (1) or down (0)', labelNames: ['backend', 'host'], registers });
    new Gauge({
      name: 'easel_backend_healthy',
      help: 'Backend health: 1 healthy, 0 not',
      labelNames: ['backend'],
      registers,
      async collect() {
        const health = await self.sources.health?.().catch(() => undefined);
        if (!health) return;
        hostBusy.reset();
        hostUp.reset();
        for (const [backend, h] of Object.entries(health)) {
          this.set({ backend }, h.ok ? 1 : 0);
          const hosts = (h.details as { hosts?: { name: string; busyMs?: number; status?: string }[] } | undefined)?.hosts;
          if (Array.isArray(hosts)) {
            for (const host of hosts) {
              if (typeof host.busyMs === 'number') hostBusy.set({ backend, host: host.name }, host.busyMs / 1000);
              if (host.status) hostUp.set({ backend, host: host.name }, host.status === 'up' ? 1 : 0);
            }
          }
        }
      },
    });
    new Gauge({
      name: 'easel_backend_overloaded',
      help: 'Backend reports more queued work than it should take (1) or not (0)',
      labelNames: ['backend'],
      registers,
      async collect() {
        const health = await self.sources.health?.().catch(() => undefined);
        for (const [backend, h] of Object.entries(health ?? {})) this.set({ backend }, h.overloaded ? 1 : 0);
      },
    });
    new Gauge({
      name: 'easel_circuit_open',
      help: 'Circuit breaker per backend: 0 closed, 0.5 half-open, 1 open (this process)',
      labelNames: ['backend'],
      registers,
      collect() {
        for (const [backend, c] of Object.entries(self.sources.circuits?.() ?? {})) this.set({ backend }, c.state === 'open' ? 1 : c.state === 'half_open' ? 0.5 : 0);
      },
    });
  }

  /** Where scrape-time gauges read from. */
  attach(sources: MetricSources): void {
    this.sources = { ...this.sources, ...sources };
  }

  async text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
