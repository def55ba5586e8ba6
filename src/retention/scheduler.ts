/**
 * Runs the retention sweep on its schedule in worker processes, one at a time across all of them.
 *
 * Every worker ticks (every `intervalSeconds`, at most every minute, with jitter); a tick takes the
 * `retention` lease only when nobody holds it and the last run started `intervalSeconds` ago or more
 * (src/retention/lease.ts), so however many workers run, the sweep runs once per interval. The holder
 * renews the lease while it runs; should it lose it (a long stall, its database gone), it stops
 * between batches. A worker that dies mid-run leaves a lease that lapses after `LEASE_TTL_MS`.
 */
import type { Logger } from 'pino';
import type { MetadataDb } from '../store/database.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import { DbLease } from './lease.ts';
import { retentionEnabled, runRetention } from './retention.ts';
import type { RetentionConfig, RetentionResult } from './retention.ts';

export const RETENTION_LEASE = 'retention';
const LEASE_TTL_MS = 60_000;
const MAX_TICK_MS = 60_000;

export interface RetentionSchedulerDeps {
  mdb: MetadataDb;
  storage: ImageStorage;
  config: RetentionConfig;
  log: Logger;
  /** Lease TTL (tests). */
  leaseTtlMs?: number;
}

export class RetentionScheduler {
  readonly lease: DbLease;
  private readonly deps: RetentionSchedulerDeps;
  private readonly ttlMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RetentionResult | undefined> | undefined;
  private controller: AbortController | undefined;
  private stopped = false;

  constructor(deps: RetentionSchedulerDeps) {
    this.deps = deps;
    this.ttlMs = deps.leaseTtlMs ?? LEASE_TTL_MS;
    this.lease = new DbLease(deps.mdb, RETENTION_LEASE);
  }

  get intervalMs(): number {
    return this.deps.config.intervalSeconds * 1000;
  }

  /** Starts ticking; does nothing when no retention is configured. */
  start(): void {
    if (!retentionEnabled(this.deps.config) || this.timer || this.stopped) return;
    const tickMs = Math.min(this.intervalMs, MAX_TICK_MS);
    // The first tick soon after start, spread so that workers started together do not all race for it.
    this.schedule(Math.random() * Math.min(tickMs, 5_000));
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.tick().finally(() => {
        const tickMs = Math.min(this.intervalMs, MAX_TICK_MS);
        this.schedule(tickMs * (0.8 + Math.random() * 0.4));
      });
    }, delayMs);
    this.timer.unref?.();
  }

  /** One tick: runs the sweep when this process gets the lease; returns its result, if it ran. */
  async tick(): Promise<RetentionResult | undefined> {
    if (this.stopped || this.running) return undefined;
    this.running = this.runIfDue().finally(() => (this.running = undefined));
    return this.running;
  }

  private async runIfDue(): Promise<RetentionResult | undefined> {
    const { log } = this.deps;
    let acquired = false;
    try {
      acquired = await this.lease.tryAcquireDue(this.ttlMs, this.intervalMs);
    } catch (err) {
      log.warn({ err }, 'retention: could not check the lease; trying again at the next tick');
      return undefined;
    }
    if (!acquired) return undefined;
    const controller = new AbortController();
    this.controller = controller;
    const renew = setInterval(() => {
      this.lease.renew(this.ttlMs).then(
        (held) => {
          if (!held) controller.abort(new Error('retention lease lost'));
        },
        (err) => log.warn({ err }, 'retention: lease renewal failed'),
      );
    }, Math.max(50, Math.floor(this.ttlMs / 3)));
    renew.unref?.();
    try {
      const result = await runRetention({ mdb: this.deps.mdb, storage: this.deps.storage, config: this.deps.config, log, signal: controller.signal });
      log.info({ retention: result }, `retention: deleted ${result.jobs} expired job(s), ${result.images} image(s), ${result.objects} stored object(s)`);
      await this.lease.release(result).catch((err) => log.warn({ err }, 'retention: could not release the lease; it lapses on its own'));
      return result;
    } catch (err) {
      log.error({ err }, 'retention run failed; it runs again at the next interval');
      await this.lease.release({ error: (err as Error).message }).catch(() => {});
      return undefined;
    } finally {
      clearInterval(renew);
      this.controller = undefined;
    }
  }

  /** Stops ticking; a run in progress stops between batches. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.controller?.abort(new Error('shutting down'));
    await this.running?.catch(() => {});
  }
}
