/**
 * Budgets at the door and at the end of a job: admission reserves a job's estimated cost on every
 * ledger row that limits its key (and its batch's window cap), all or none, so concurrent requests
 * can never overspend; the job's end settles the reservation at the real cost (never above what was
 * held) or releases it. Without any budget configured every step is a no-op.
 */
import type { Logger } from 'pino';
import { DomainError } from '../core/errors.ts';
import type { SettleListener } from '../jobs/settle.ts';
import type { BudgetsConfig } from './config.ts';
import { BudgetLedger, fromMicros, keyBudgetRows, refusalMessage, toMicros, windowPeriod } from './ledger.ts';
import type { LedgerRow } from './ledger.ts';

export interface BatchWindow {
  id: string;
  /** Spend cap per window, USD (null: none). */
  capUsd: number | null;
  windowSeconds: number;
}

/** A batch's window cap is full: the batch waits for the next window rather than failing. */
export class CapReached extends Error {
  readonly resetsAt: Date;
  constructor(resetsAt: Date) {
    super('batch spend cap reached for this window');
    this.resetsAt = resetsAt;
  }
}

export class BudgetGate {
  readonly ledger: BudgetLedger;
  private readonly config: BudgetsConfig;
  private readonly log: Logger;
  private readonly onRefusal: (scope: string) => void;
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: { ledger: BudgetLedger; config: BudgetsConfig; log: Logger; onRefusal?: (scope: string) => void }) {
    this.ledger = opts.ledger;
    this.config = opts.config;
    this.log = opts.log;
    this.onRefusal = opts.onRefusal ?? (() => {});
  }

  /** The ledger rows limiting this key (and batch) now. */
  rows(key: { id: string; name: string }, batch?: BatchWindow, at = new Date()): LedgerRow[] {
    const rows = keyBudgetRows(this.config, key, at);
    if (batch?.capUsd != null) {
      const w = windowPeriod(at, batch.windowSeconds);
      rows.push({ scope: `batch:${batch.id}`, period: w.period, limitMicros: toMicros(batch.capUsd), label: `batch ${batch.id} spend cap`, resetsAt: w.resetsAt });
    }
    return rows;
  }

  /**
   * Holds `estimateUsd` for the job on every row limiting it. Returns whether anything is held;
   * throws a `quota` DomainError naming the budget (or CapReached for a batch's window cap).
   */
  async reserve(jobId: string, key: { id: string; name: string }, estimateUsd: number, batch?: BatchWindow): Promise<boolean> {
    const rows = this.rows(key, batch);
    if (rows.length === 0) return false;
    const amount = toMicros(estimateUsd);
    const r = await this.ledger.reserve(jobId, key.id, rows, amount);
    if (r.ok) return true;
    if (r.row.scope.startsWith('batch:')) throw new CapReached(r.row.resetsAt);
    this.onRefusal(r.row.scope.split(':')[0]!);
    const left = Math.max(0, r.row.limitMicros - r.row.spentMicros - r.row.reservedMicros);
    throw new DomainError('quota', refusalMessage(r.row, amount), {
      code: 'insufficient_quota',
      budget: { remainingUsd: fromMicros(left), resetsAt: r.row.resetsAt },
    });
  }

  /** Gives back what was held for a job that never came to be. */
  async release(jobId: string): Promise<void> {
    await this.ledger.release(jobId).catch((err) => this.log.error({ err, jobId }, 'releasing a reservation failed'));
  }

  /** Settles the job's reservation when it ends: charged its real cost if it succeeded, released otherwise. */
  readonly listener: SettleListener = {
    name: 'budgets',
    phase: 'ledger',
    onSettled: async ({ job, end, costs }) => {
      if (!costs?.reserved || !Number(costs.reserved)) return;
      if (end.status === 'succeeded') await this.ledger.settle(job.id, end.costUsd == null ? null : toMicros(end.costUsd));
      else await this.ledger.release(job.id);
    },
  };

  /** Worker role: settle reservations of jobs that ended without a listener running (a crash between steps). */
  start(sweepIntervalMs: number): void {
    const sweep = async () => {
      const n = await this.ledger.sweep().catch((err) => (this.log.warn({ err }, 'budget sweep failed'), 0));
      if (n) this.log.info({ settled: n }, 'settled reservations of ended jobs');
    };
    this.timer = setInterval(sweep, sweepIntervalMs);
    this.timer.unref();
    void sweep();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
