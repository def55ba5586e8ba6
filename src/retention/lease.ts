/**
 * Named leases in the metadata database (table `leases`, migration 006): at most one process holds a
 * lease at a time, on SQLite and Postgres alike, with no advisory-lock API needed. A lease expires on
 * its own (`lease_until`), so a holder that dies frees it after its TTL; a live holder renews it.
 *
 * `tryAcquireDue` takes the lease only when it is free (or already ours) **and** its task is due
 * (`last_run_at` at least `intervalMs` ago): one atomic upsert, so two workers ticking at the same
 * moment cannot both run a task that is due once.
 */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Kysely } from 'kysely';
import type { MetadataDb } from '../store/database.ts';
import type { Database, Row } from '../store/schema.ts';

/** A `leases` row, as it is (status and tests read its columns). */
export type LeaseRow = Row<'leases'>;

/** A per-process lease owner id: readable in the table, unique across restarts. */
export function newLeaseOwner(): string {
  return `${hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`;
}

export class DbLease {
  readonly name: string;
  readonly owner: string;
  private readonly db: Kysely<Database>;

  constructor(mdb: MetadataDb, name: string, owner: string = newLeaseOwner()) {
    this.db = mdb.db;
    this.name = name;
    this.owner = owner;
  }

  /**
   * Takes the lease for `ttlMs` when it is free or ours and the task is due (never ran, or last
   * started at least `intervalMs` ago); records `now` as the run's start. True when taken.
   */
  async tryAcquireDue(ttlMs: number, intervalMs: number, now = Date.now()): Promise<boolean> {
    const rows = await this.db
      .insertInto('leases')
      .values({ name: this.name, owner: this.owner, lease_until: now + ttlMs, last_run_at: now, updated_at: now })
      .onConflict((oc) =>
        oc
          .column('name')
          .doUpdateSet({ owner: this.owner, lease_until: now + ttlMs, last_run_at: now, updated_at: now })
          .where((eb) =>
            eb.and([
              eb.or([eb('leases.lease_until', '<=', now), eb('leases.owner', '=', this.owner)]),
              eb.or([eb('leases.last_run_at', 'is', null), eb('leases.last_run_at', '<=', now - intervalMs)]),
            ]),
          ),
      )
      .returning('owner')
      .execute();
    return rows.length === 1 && rows[0]!.owner === this.owner;
  }

  /** Extends a lease we hold; false when it was lost (expired and taken by another process). */
  async renew(ttlMs: number, now = Date.now()): Promise<boolean> {
    const res = await this.db
      .updateTable('leases')
      .set({ lease_until: now + ttlMs, updated_at: now })
      .where('name', '=', this.name)
      .where('owner', '=', this.owner)
      .executeTakeFirst();
    return Number(res.numUpdatedRows) > 0;
  }

  /** Gives the lease back and records how the run went. */
  async release(result: unknown, now = Date.now()): Promise<void> {
    await this.db
      .updateTable('leases')
      .set({ owner: null, lease_until: 0, last_finished_at: now, last_result: JSON.stringify(result), updated_at: now })
      .where('name', '=', this.name)
      .where('owner', '=', this.owner)
      .execute();
  }

  /** The lease's row (for status and tests). */
  async read(): Promise<LeaseRow | undefined> {
    return this.db.selectFrom('leases').selectAll().where('name', '=', this.name).executeTakeFirst();
  }
}
