/**
 * Durable webhook deliveries over Kysely (SQLite and Postgres), tables from migration 004.
 *
 * Creation is idempotent (ON CONFLICT DO NOTHING on (job, event type)), claiming is one conditional
 * UPDATE … RETURNING that writes a lease (with SKIP LOCKED on Postgres), and every outcome is written
 * fenced by the lease owner and the attempt count, so a process whose lease expired cannot record over
 * the process that took the delivery after it.
 */
import type { Kysely } from 'kysely';
import type { MetadataDb } from '../store/database.ts';
import type { Database, NewRow, Row } from '../store/schema.ts';

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

/** A delivery is its `webhook_deliveries` row (the dispatcher reads its columns as they are). */
export type DeliveryRow = Row<'webhook_deliveries'>;

/** One HTTP attempt: its `webhook_attempts` row. */
export type AttemptRow = Row<'webhook_attempts'>;

export interface NewDelivery {
  id: string;
  jobId: string;
  eventType: string;
  url: string;
  payload: string;
}

/** What one attempt ended in, and what happens to the delivery next. */
export interface AttemptOutcome {
  at: number;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  status: DeliveryStatus;
  /** When status stays pending. */
  nextAttemptAt?: number;
}

/** The row of a new delivery, due at once. */
function newDeliveryRow(d: NewDelivery, now: number): NewRow<'webhook_deliveries'> {
  return {
    id: d.id,
    job_id: d.jobId,
    event_type: d.eventType,
    url: d.url,
    payload: d.payload,
    status: 'pending',
    attempts: 0,
    next_attempt_at: now,
    first_attempt_at: null,
    last_error: null,
    lease_owner: null,
    lease_until: null,
    created_at: now,
    delivered_at: null,
    updated_at: now,
  };
}

export class WebhookDeliveryStore {
  private readonly db: Kysely<Database>;
  private readonly dialect: MetadataDb['dialect'];

  constructor(mdb: MetadataDb) {
    this.db = mdb.db;
    this.dialect = mdb.dialect;
  }

  /** Finished jobs with a webhook URL and no delivery created yet, oldest first (partial index). */
  async unsweptJobs(limit: number): Promise<string[]> {
    const rows = await this.db
      .selectFrom('jobs')
      .select('id')
      .where('webhook_url', 'is not', null)
      .where('webhook_swept_at', 'is', null)
      .where('finished_at', 'is not', null)
      .orderBy('finished_at')
      .limit(limit)
      .execute();
    return rows.map((r) => r.id);
  }

  /**
   * Inserts deliveries (a (job, event) that already has one keeps it) and marks their jobs swept, in
   * one transaction. `alsoSwept` are jobs to mark without a delivery.
   */
  async createDeliveries(deliveries: NewDelivery[], alsoSwept: string[] = [], now = Date.now()): Promise<void> {
    const jobIds = [...new Set([...deliveries.map((d) => d.jobId), ...alsoSwept])];
    if (jobIds.length === 0) return;
    await this.db.transaction().execute(async (trx) => {
      if (deliveries.length > 0) {
        await trx
          .insertInto('webhook_deliveries')
          .values(deliveries.map((d) => newDeliveryRow(d, now)))
          .onConflict((oc) => oc.doNothing())
          .execute();
      }
      await trx.updateTable('jobs').set({ webhook_swept_at: now }).where('id', 'in', jobIds).where('webhook_swept_at', 'is', null).execute();
    });
  }

  /** Leases up to `n` due deliveries to `owner` for `leaseMs`. */
  async claimDue(owner: string, n: number, leaseMs: number, now = Date.now()): Promise<DeliveryRow[]> {
    let due = this.db
      .selectFrom('webhook_deliveries')
      .select('id')
      .where('status', '=', 'pending')
      .where('next_attempt_at', '<=', now)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
      .orderBy('next_attempt_at')
      .limit(n);
    if (this.dialect === 'postgres') due = due.forUpdate().skipLocked();
    const rows = await this.db
      .updateTable('webhook_deliveries')
      .set({ lease_owner: owner, lease_until: now + leaseMs })
      .where('id', 'in', due)
      // Re-checked on the row itself: on Postgres the subquery's snapshot may be older than the row.
      .where('status', '=', 'pending')
      .returningAll()
      .execute();
    return rows.sort((a, b) => a.next_attempt_at - b.next_attempt_at);
  }

  /**
   * Records an attempt and the delivery's next state, only if `owner` still holds the lease taken when
   * the delivery had `attemptsBefore` attempts. False when the lease was lost (nothing is written).
   */
  async recordAttempt(delivery: DeliveryRow, owner: string, outcome: AttemptOutcome): Promise<boolean> {
    const attempt = delivery.attempts + 1;
    return this.db.transaction().execute(async (trx) => {
      const r = await trx
        .updateTable('webhook_deliveries')
        .set({
          status: outcome.status,
          attempts: attempt,
          first_attempt_at: delivery.first_attempt_at ?? Math.round(outcome.at),
          next_attempt_at: Math.round(outcome.nextAttemptAt ?? delivery.next_attempt_at),
          last_error: outcome.error ?? (outcome.statusCode !== null && (outcome.statusCode < 200 || outcome.statusCode > 299) ? `HTTP ${outcome.statusCode}` : null),
          delivered_at: outcome.status === 'delivered' ? Math.round(outcome.at + outcome.durationMs) : null,
          lease_owner: null,
          lease_until: null,
          updated_at: Date.now(),
        })
        .where('id', '=', delivery.id)
        .where('lease_owner', '=', owner)
        .where('attempts', '=', delivery.attempts)
        .where('status', '=', 'pending')
        .executeTakeFirst();
      if (r.numUpdatedRows === 0n) return false;
      await trx
        .insertInto('webhook_attempts')
        .values({
          delivery_id: delivery.id,
          attempt,
          at: Math.round(outcome.at),
          status_code: outcome.statusCode,
          error: outcome.error,
          duration_ms: Math.max(0, Math.round(outcome.durationMs)),
        })
        .execute();
      return true;
    });
  }

  /** Hands back every lease `owner` holds, due at once (a graceful stop). */
  async releaseLeases(owner: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db
      .updateTable('webhook_deliveries')
      .set({ lease_owner: null, lease_until: null })
      .where('lease_owner', '=', owner)
      .where('id', 'in', ids)
      .execute();
  }

  /** When the earliest pending delivery is due (undefined when none is pending). */
  async nextDueAt(): Promise<number | undefined> {
    const row = await this.db
      .selectFrom('webhook_deliveries')
      .select('next_attempt_at')
      .where('status', '=', 'pending')
      .orderBy('next_attempt_at')
      .limit(1)
      .executeTakeFirst();
    return row?.next_attempt_at;
  }

  async deliveriesForJob(jobId: string): Promise<{ deliveries: DeliveryRow[]; attempts: AttemptRow[] }> {
    const deliveries = await this.db.selectFrom('webhook_deliveries').selectAll().where('job_id', '=', jobId).orderBy('created_at').execute();
    if (deliveries.length === 0) return { deliveries, attempts: [] };
    const attempts = await this.db
      .selectFrom('webhook_attempts')
      .selectAll()
      .where(
        'delivery_id',
        'in',
        deliveries.map((d) => d.id),
      )
      .orderBy('delivery_id')
      .orderBy('attempt')
      .execute();
    return { deliveries, attempts };
  }

  async getDelivery(id: string): Promise<DeliveryRow | undefined> {
    return this.db.selectFrom('webhook_deliveries').selectAll().where('id', '=', id).executeTakeFirst();
  }

  async jobWebhookUrl(jobId: string): Promise<string | null> {
    const row = await this.db.selectFrom('jobs').select('webhook_url').where('id', '=', jobId).executeTakeFirst();
    return row?.webhook_url ?? null;
  }

  /** Counts by status (metrics, tests). */
  async counts(): Promise<Record<DeliveryStatus, number>> {
    const rows = await this.db
      .selectFrom('webhook_deliveries')
      .select(['status', (eb) => eb.fn.countAll<number>().as('n')])
      .groupBy('status')
      .execute();
    const out: Record<DeliveryStatus, number> = { pending: 0, delivered: 0, failed: 0 };
    for (const r of rows) if (r.status in out) out[r.status] = r.n;
    return out;
  }
}
