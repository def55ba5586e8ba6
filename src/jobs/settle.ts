/**
 * One way out: every job ends here, whoever ends it (a worker, a cancel through the API, a batch
 * cancel, a cache hit, a submission whose enqueue failed). Settling is:
 *
 *   1. the conditional state change in the store (only the attempt that still owns the job, or a
 *      job still queued, can end it: so it ends exactly once);
 *   2. the `ledger` listeners: bookkeeping that whoever hears of the end must already see
 *      (the budget reservation settled at the real cost, the cache entry written);
 *   3. the job's terminal status event (sync waiters, streams, webhooks in other processes);
 *   4. the `notify` listeners (metrics, the cost model, webhooks, batches).
 *
 * Listeners run only for the caller that won the state change, and a failing listener is logged,
 * never allowed to undo the end: the budget sweep and the webhook sweep catch up with anything a
 * crash between steps left behind.
 */
import type { Logger } from 'pino';
import type { Job, JobError, JobResult, JobStatus, StoredImage } from '../core/job.ts';
import type { JobEventBus } from '../events/job-events.ts';
import type { ResolvedModel } from '../backends/registry.ts';
import type { CancelOutcome, JobStore } from '../store/job-store.ts';
import type { JobCostRow, JobCosts } from './job-costs.ts';

export interface SucceededEnd {
  status: 'succeeded';
  result: JobResult;
  images: StoredImage[];
  costUsd: number | null;
  finishedAt: number;
  /** The stored bytes by storage key, handed to waiters in this process so they need no read. */
  bytes?: Map<string, Uint8Array>;
  /** Where it ran (absent: answered from the cache). */
  route?: ResolvedModel;
  gpuSeconds?: number;
  host?: string;
  /** Answered from the cache: what it saved. */
  cache?: { kind: string; savedUsd: number };
}

export interface FailedEnd {
  status: 'failed';
  error: JobError;
  route?: ResolvedModel;
}

export interface CanceledEnd {
  status: 'canceled';
  route?: ResolvedModel;
}

export type JobEnd = SucceededEnd | FailedEnd | CanceledEnd;

/** A settled job: its state before the end, how it ended, and its `job_costs` row (read once, shared). */
export interface Settled {
  job: Job;
  end: JobEnd;
  costs: JobCostRow | undefined;
}

export interface SettleListener {
  readonly name: string;
  /** `ledger`: before the end is announced; `notify`: after. */
  readonly phase: 'ledger' | 'notify';
  onSettled(settled: Settled): Promise<void> | void;
}

export interface JobSettlerDeps {
  store: JobStore;
  events: JobEventBus;
  jobCosts: JobCosts;
  log: Logger;
}

export class JobSettler {
  private readonly deps: JobSettlerDeps;
  private readonly ledger: SettleListener[] = [];
  private readonly notify: SettleListener[] = [];

  constructor(deps: JobSettlerDeps) {
    this.deps = deps;
  }

  listen(listener: SettleListener): void {
    (listener.phase === 'ledger' ? this.ledger : this.notify).push(listener);
  }

  /** The attempt produced its images: the job succeeds if that attempt still owns it. */
  async succeed(job: Job, attempt: number, end: SucceededEnd): Promise<boolean> {
    const won = await this.deps.store.completeJob(job.id, attempt, { result: end.result, images: end.images, costUsd: end.costUsd, finishedAt: end.finishedAt });
    if (!won) return false;
    const at = new Date(end.finishedAt);
    const finished: Job = { ...job, status: 'succeeded', progress: 1, result: end.result, costUsd: end.costUsd, finishedAt: at, updatedAt: at };
    await this.after(job, end, { job: finished, images: end.images, bytes: end.bytes });
    return true;
  }

  /** Fails a job that has not ended; with an attempt, only if that attempt still owns it. */
  async fail(job: Job, attempt: number | null, end: FailedEnd): Promise<boolean> {
    if (!(await this.deps.store.failJob(job.id, attempt, end.error))) return false;
    await this.after(job, end);
    return true;
  }

  /** A running attempt saw its cancel and stopped: the job ends canceled. */
  async stopped(job: Job, attempt: number, end: CanceledEnd = { status: 'canceled' }): Promise<boolean> {
    if (!(await this.deps.store.finishCanceled(job.id, attempt))) return false;
    await this.after(job, end);
    return true;
  }

  /**
   * Cancels a job on request: a queued one ends at once (and leaves the queue); a running one is
   * asked to stop (its worker settles it); an ended one is left as it is.
   */
  async cancel(jobId: string, removeFromQueue: (jobId: string) => Promise<unknown>): Promise<CancelOutcome> {
    const out = await this.deps.store.cancelJob(jobId);
    if (out.outcome === 'canceled') {
      await removeFromQueue(jobId).catch(() => false);
      await this.after(out.job, { status: 'canceled' });
    } else if (out.outcome === 'cancel_requested') {
      this.deps.events.publish({ type: 'cancel_requested', jobId, at: Date.now() });
    }
    return out;
  }

  private async after(job: Job, end: JobEnd, local?: { job: Job; images: StoredImage[]; bytes?: Map<string, Uint8Array> }): Promise<void> {
    const costs = await this.deps.jobCosts.get(job.id).catch((err) => (this.deps.log.warn({ err, jobId: job.id }, 'reading the job\'s cost record failed'), undefined));
    this.deps.jobCosts.forget(job.id);
    const settled: Settled = { job, end, costs };
    await this.run(this.ledger, settled);
    this.publish(job, end.status, local);
    await this.run(this.notify, settled);
  }

  private async run(listeners: SettleListener[], settled: Settled): Promise<void> {
    for (const l of listeners) {
      try {
        await l.onSettled(settled);
      } catch (err) {
        this.deps.log.warn({ err, jobId: settled.job.id, listener: l.name }, 'a listener of the job\'s end failed; its sweep catches up');
      }
    }
  }

  /** The terminal status event; `webhook` tells the webhook sweeper whether there is anything to deliver. */
  private publish(job: Job, status: JobStatus, local?: { job: Job; images: StoredImage[]; bytes?: Map<string, Uint8Array> }): void {
    this.deps.events.publish({ type: 'status', jobId: job.id, status, at: Date.now(), webhook: job.webhookUrl != null, ...(local ? { local } : {}) });
  }
}
