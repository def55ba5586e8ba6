/**
 * Budgets that cannot be overspent. Each limit is a row of `budget_ledger` per (scope, period):
 * a key's or a group's day or month, or a batch's spend-cap window. Admission reserves the job's
 * estimated cost on every row that applies, in one transaction of conditional UPDATEs:
 *
 *   UPDATE budget_ledger SET reserved_micros = reserved_micros + :amount
 *    WHERE scope = :scope AND period = :period AND spent_micros + reserved_micros + :amount <= :limit
 *
 * A row that does not match refuses the whole reservation (the transaction rolls back). Postgres
 * re-evaluates the WHERE clause on the newest row version after waiting for a concurrent writer's
 * lock, and SQLite runs one writer at a time, so under any concurrency `spent + reserved` never
 * passes a limit. Rows are touched in one global order, so two reservations never deadlock.
 *
 * When the job ends its reservation is settled exactly once (conditional on `status = 'held'`):
 * the ledger is charged the actual cost, at most what was reserved (the rest is kept on the
 * reservation as `actual_micros`, and the job's own cost is always the real one), or released when
 * the job failed or was canceled. Money is integer micro-dollars, so the arithmetic is exact.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { MetadataDb } from '../store/database.ts';
import type { Database, Row } from '../store/schema.ts';
import type { BudgetLimit, BudgetsConfig } from './config.ts';

export const MICROS = 1_000_000;
export const toMicros = (usd: number): number => Math.round(usd * MICROS);
export const fromMicros = (micros: number): number => micros / MICROS;

export interface LedgerRow {
  scope: string;
  period: string;
  limitMicros: number;
  /** Human words for refusals: `key 'ci-bot' daily budget`. */
  label: string;
  /** When the period ends (the budget is full again). */
  resetsAt: Date;
}

export interface RowState extends LedgerRow {
  spentMicros: number;
  reservedMicros: number;
}

export type ReserveResult = { ok: true } | { ok: false; row: RowState };

export type ReservationStatus = 'held' | 'settled' | 'released';

export interface ReservationInfo {
  jobId: string;
  status: ReservationStatus;
  amountUsd: number;
  chargedUsd: number | null;
  actualUsd: number | null;
}

const pad = (n: number) => String(n).padStart(2, '0');

export function dayPeriod(at: Date): { period: string; resetsAt: Date } {
  const start = Date.UTC(at.getUTCFullYear(), at.getUTCMonth(), at.getUTCDate());
  return { period: `day:${at.getUTCFullYear()}-${pad(at.getUTCMonth() + 1)}-${pad(at.getUTCDate())}`, resetsAt: new Date(start + 86_400_000) };
}

export function monthPeriod(at: Date): { period: string; resetsAt: Date } {
  return { period: `month:${at.getUTCFullYear()}-${pad(at.getUTCMonth() + 1)}`, resetsAt: new Date(Date.UTC(at.getUTCFullYear(), at.getUTCMonth() + 1, 1)) };
}

export function windowPeriod(at: Date, windowSeconds: number): { period: string; resetsAt: Date } {
  const ms = windowSeconds * 1000;
  const n = Math.floor(at.getTime() / ms);
  return { period: `win:${windowSeconds}:${n}`, resetsAt: new Date((n + 1) * ms) };
}

/** The ledger rows that limit one key's spending now, from the `budgets` config. */
export function keyBudgetRows(config: BudgetsConfig, key: { id: string; name: string }, at = new Date()): LedgerRow[] {
  const rows: LedgerRow[] = [];
  const add = (scope: string, who: string, limit: BudgetLimit | undefined) => {
    if (!limit) return;
    if (limit.dailyUsd !== undefined) {
      const p = dayPeriod(at);
      rows.push({ scope, period: p.period, limitMicros: toMicros(limit.dailyUsd), label: `${who} daily budget`, resetsAt: p.resetsAt });
    }
    if (limit.monthlyUsd !== undefined) {
      const p = monthPeriod(at);
      rows.push({ scope, period: p.period, limitMicros: toMicros(limit.monthlyUsd), label: `${who} monthly budget`, resetsAt: p.resetsAt });
    }
  };
  const own = (k: string) => (Object.hasOwn(config.keys, k) ? config.keys[k] : undefined);
  add(`key:${key.id}`, `key '${key.name}'`, own(key.id) ?? own(key.name) ?? config.default);
  for (const [name, group] of Object.entries(config.groups)) {
    if (group.keys.includes(key.id) || group.keys.includes(key.name)) add(`group:${name}`, `group '${name}'`, group);
  }
  return rows;
}

const usd = (micros: number) => `$${fromMicros(micros).toFixed(micros % 10_000 === 0 ? 2 : 4)}`;

/** The refusal's message: which budget, what is left, what the request needs, when it resets. */
export function refusalMessage(row: RowState, neededMicros: number): string {
  const left = Math.max(0, row.limitMicros - row.spentMicros - row.reservedMicros);
  return (
    `Budget exceeded: the ${row.label} of ${usd(row.limitMicros)} has ${usd(left)} left ` +
    `(spent ${usd(row.spentMicros)}, reserved by running jobs ${usd(row.reservedMicros)}); this request needs an estimated ${usd(neededMicros)}. ` +
    `It resets at ${row.resetsAt.toISOString()}.`
  );
}

class Refused extends Error {
  readonly row: LedgerRow;
  constructor(row: LedgerRow) {
    super('refused');
    this.row = row;
  }
}

/** A `budget_reservations` row as the reservation it describes. */
function rowToReservation(r: Row<'budget_reservations'>): ReservationInfo {
  return {
    jobId: r.job_id,
    status: r.status,
    amountUsd: fromMicros(r.amount_micros),
    chargedUsd: r.charged_micros == null ? null : fromMicros(r.charged_micros),
    actualUsd: r.actual_micros == null ? null : fromMicros(r.actual_micros),
  };
}

const byRow = (a: { scope: string; period: string }, b: { scope: string; period: string }) =>
  a.scope < b.scope ? -1 : a.scope > b.scope ? 1 : a.period < b.period ? -1 : a.period > b.period ? 1 : 0;

export class BudgetLedger {
  private readonly db: Kysely<Database>;

  constructor(mdb: MetadataDb) {
    this.db = mdb.db;
  }

  /**
   * Reserves `amountMicros` on every row for `jobId`, or on none. Rows with nothing to hold (no
   * rows at all) reserve nothing and succeed.
   */
  async reserve(jobId: string, keyId: string, rows: LedgerRow[], amountMicros: number): Promise<ReserveResult> {
    if (rows.length === 0) return { ok: true };
    const sorted = [...rows].sort(byRow);
    const amount = Math.max(0, Math.round(amountMicros));
    const now = Date.now();
    try {
      await this.db.transaction().execute(async (trx) => {
        for (const row of sorted) {
          await trx
            .insertInto('budget_ledger')
            .values({ scope: row.scope, period: row.period, spent_micros: 0, reserved_micros: 0, updated_at: now })
            .onConflict((oc) => oc.columns(['scope', 'period']).doNothing())
            .execute();
          const r = await trx
            .updateTable('budget_ledger')
            .set((eb) => ({ reserved_micros: eb('reserved_micros', '+', amount), updated_at: now }))
            .where('scope', '=', row.scope)
            .where('period', '=', row.period)
            .where(sql<boolean>`spent_micros + reserved_micros + ${amount} <= ${row.limitMicros}`)
            .executeTakeFirst();
          if (r.numUpdatedRows === 0n) throw new Refused(row);
        }
        await trx
          .insertInto('budget_reservations')
          .values({
            job_id: jobId,
            key_id: keyId,
            rows: JSON.stringify(sorted.map((r) => [r.scope, r.period])),
            amount_micros: amount,
            status: 'held',
            charged_micros: null,
            actual_micros: null,
            created_at: now,
            settled_at: null,
          })
          .execute();
      });
      return { ok: true };
    } catch (err) {
      if (!(err instanceof Refused)) throw err;
      const [state] = await this.state([err.row]);
      return { ok: false, row: state! };
    }
  }

  /**
   * Ends a held reservation once: charged the actual cost (at most the amount held; null = unknown,
   * charged as estimated), or 0 when released. False when it was not held (already ended, or none).
   */
  async settle(jobId: string, actualMicros: number | null): Promise<boolean> {
    return this.finish(jobId, actualMicros, false);
  }

  async release(jobId: string): Promise<boolean> {
    return this.finish(jobId, null, true);
  }

  private async finish(jobId: string, actualMicros: number | null, release: boolean): Promise<boolean> {
    const now = Date.now();
    return this.db.transaction().execute(async (trx) => {
      const held = await trx
        .selectFrom('budget_reservations')
        .select(['rows', 'amount_micros'])
        .where('job_id', '=', jobId)
        .where('status', '=', 'held')
        .executeTakeFirst();
      if (!held) return false;
      const amount = held.amount_micros;
      const charged = release ? 0 : Math.min(amount, actualMicros === null ? amount : Math.max(0, Math.round(actualMicros)));
      const won = await trx
        .updateTable('budget_reservations')
        .set({ status: release ? 'released' : 'settled', charged_micros: charged, actual_micros: actualMicros === null ? null : Math.round(actualMicros), settled_at: now })
        .where('job_id', '=', jobId)
        .where('status', '=', 'held')
        .executeTakeFirst();
      if (won.numUpdatedRows === 0n) return false;
      const rows = (JSON.parse(held.rows) as [string, string][]).map(([scope, period]) => ({ scope, period })).sort(byRow);
      for (const row of rows) {
        await trx
          .updateTable('budget_ledger')
          .set((eb) => ({ reserved_micros: eb('reserved_micros', '-', amount), spent_micros: eb('spent_micros', '+', charged), updated_at: now }))
          .where('scope', '=', row.scope)
          .where('period', '=', row.period)
          .execute();
      }
      return true;
    });
  }

  /** Current spend and reservations of some rows (absent rows read as zero). */
  async state(rows: LedgerRow[]): Promise<RowState[]> {
    if (rows.length === 0) return [];
    const found = await this.db
      .selectFrom('budget_ledger')
      .select(['scope', 'period', 'spent_micros', 'reserved_micros'])
      .where((eb) => eb.or(rows.map((r) => eb.and([eb('scope', '=', r.scope), eb('period', '=', r.period)]))))
      .execute();
    return rows.map((r) => {
      const f = found.find((x) => x.scope === r.scope && x.period === r.period);
      return { ...r, spentMicros: f?.spent_micros ?? 0, reservedMicros: f?.reserved_micros ?? 0 };
    });
  }

  async reservation(jobId: string): Promise<ReservationInfo | undefined> {
    const r = await this.db.selectFrom('budget_reservations').selectAll().where('job_id', '=', jobId).executeTakeFirst();
    return r ? rowToReservation(r) : undefined;
  }

  /**
   * Held reservations whose job has ended (a cancel of a queued job, a worker that died after
   * finishing) or never came to exist (a crash between reserving and creating the job, older than
   * `orphanMs`): settle or release them from the job's final state.
   */
  async sweep(orphanMs = 10 * 60_000, limit = 500): Promise<number> {
    const rows = await this.db
      .selectFrom('budget_reservations as r')
      .leftJoin('jobs as j', 'j.id', 'r.job_id')
      .select(['r.job_id', 'r.created_at', 'j.status', 'j.cost_usd'])
      .where('r.status', '=', 'held')
      .where((eb) => eb.or([eb('j.status', 'in', ['succeeded', 'failed', 'canceled']), eb.and([eb('j.id', 'is', null), eb('r.created_at', '<', Date.now() - orphanMs)])]))
      .limit(limit)
      .execute();
    let n = 0;
    for (const r of rows) {
      const ok = r.status === 'succeeded' ? await this.settle(r.job_id, r.cost_usd == null ? null : toMicros(r.cost_usd)) : await this.release(r.job_id);
      if (ok) n++;
    }
    return n;
  }
}
