/**
 * Fair sharing between keys, as one object the runtime wires in (src/app.ts):
 *
 * - `policy`: the `fairness` config read per key (weights, running and queued limits, groups); the
 *   queues order and limit jobs by it (src/queue/embedded-queue.ts, src/queue/fair-room.ts).
 * - `checkQueueLimit`: the admission step (src/fairness/limits.ts), called by Submissions.submit().
 * - `depthByKey`: queued and running jobs per key, for `GET /v1/system` and the per-key metrics.
 */
import { Counter, Gauge } from 'prom-client';
import type { Registry } from 'prom-client';
import type { MetadataDb } from '../store/database.ts';
import type { KeyStore } from '../store/job-store.ts';
import type { FairnessConfig } from './config.ts';
import { QueueLimits } from './limits.ts';
import { FairPolicy } from './policy.ts';

export interface KeyDepth {
  keyId: string;
  /** The key's name (null when the key is gone). */
  name: string | null;
  queued: number;
  running: number;
}

export interface FairShareDeps {
  config: FairnessConfig;
  mdb: MetadataDb;
  keys: Pick<KeyStore, 'listKeys'>;
}

/** The label that sums the keys past `fairness.metricsMaxKeys`. */
export const OTHER_KEYS = '_others';

export class FairShare {
  readonly policy: FairPolicy;
  private readonly limits: QueueLimits;
  private readonly deps: FairShareDeps;
  private refusals: Counter<'scope'> | undefined;

  constructor(deps: FairShareDeps) {
    this.deps = deps;
    this.policy = new FairPolicy(deps.config);
    this.limits = new QueueLimits({ policy: this.policy, mdb: deps.mdb, onRefusal: (scope) => this.refusals?.inc({ scope }) });
  }

  /** Learns every key's name, so config entries that name keys apply to jobs queued before this start. */
  async learnKeys(): Promise<void> {
    for (const k of await this.deps.keys.listKeys()) this.policy.remember(k);
  }

  /** The admission step: refuses (QueueLimitReached, a 429) when the key or its group has a full queue. */
  checkQueueLimit(caller: { keyId: string; keyName: string }): Promise<void> {
    return this.limits.check({ id: caller.keyId, name: caller.keyName });
  }

  /** Queued and running jobs of every key with any (or of one key), most first. */
  async depthByKey(keyId?: string): Promise<KeyDepth[]> {
    let q = this.deps.mdb.db
      .selectFrom('jobs')
      .leftJoin('api_keys', 'api_keys.id', 'jobs.key_id')
      .select(['jobs.key_id', 'api_keys.name', 'jobs.status', (eb) => eb.fn.countAll<number>().as('n')])
      .where('jobs.status', 'in', ['queued', 'running']);
    if (keyId !== undefined) q = q.where('jobs.key_id', '=', keyId);
    const rows = await q.groupBy(['jobs.key_id', 'api_keys.name', 'jobs.status']).execute();
    const byKey = new Map<string, KeyDepth>();
    for (const r of rows) {
      const d = byKey.get(r.key_id) ?? { keyId: r.key_id, name: r.name ?? null, queued: 0, running: 0 };
      if (r.status === 'queued') d.queued += Number(r.n);
      else d.running += Number(r.n);
      byKey.set(r.key_id, d);
    }
    return [...byKey.values()].sort((a, b) => b.queued + b.running - (a.queued + a.running) || (a.name ?? a.keyId).localeCompare(b.name ?? b.keyId));
  }

  /**
   * `easel_key_jobs{key,state}` (queued and running per key name, read from the store at scrape time:
   * the `fairness.metricsMaxKeys` busiest keys by name, the rest summed as `other`) and
   * `easel_queue_limit_refusals_total{scope}`.
   */
  registerMetrics(registry: Registry): void {
    const self = this;
    const max = this.deps.config.metricsMaxKeys;
    new Gauge({
      name: 'easel_key_jobs',
      help: `Jobs queued and running per API key (the ${max} busiest by name, the rest as "${OTHER_KEYS}")`,
      labelNames: ['key', 'state'],
      registers: [registry],
      async collect() {
        const depth = await self.depthByKey().catch(() => undefined);
        if (!depth) return;
        this.reset();
        const other = { queued: 0, running: 0 };
        depth.forEach((d, i) => {
          if (i < max) {
            const key = d.name ?? d.keyId;
            this.set({ key, state: 'queued' }, d.queued);
            this.set({ key, state: 'running' }, d.running);
          } else {
            other.queued += d.queued;
            other.running += d.running;
          }
        });
        if (depth.length > max) {
          this.set({ key: OTHER_KEYS, state: 'queued' }, other.queued);
          this.set({ key: OTHER_KEYS, state: 'running' }, other.running);
        }
      },
    });
    this.refusals = new Counter({ name: 'easel_queue_limit_refusals_total', help: 'Submissions refused because the key (or its group) had a full queue (fairness maxQueued)', labelNames: ['scope'], registers: [registry] });
  }
}
