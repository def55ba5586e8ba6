/**
 * Retention (src/retention): an index to find jobs that ended before a cutoff, and `leases`, named
 * leases held in the metadata database so that one process at a time runs a periodic task (the
 * retention sweep) on SQLite and Postgres alike. A lease row also remembers when its task last ran,
 * so the schedule is shared by every worker rather than kept per process.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex('jobs_finished_at').on('jobs').column('finished_at').execute();
  await db.schema
    .createTable('leases')
    .addColumn('name', 'text', (c) => c.primaryKey().notNull())
    // The holder (a per-process id) and until when it holds; a lapsed lease may be taken by anyone.
    .addColumn('owner', 'text')
    .addColumn('lease_until', 'bigint', (c) => c.notNull().defaultTo(0))
    // When the task last started and finished, and what its last run reported (JSON).
    .addColumn('last_run_at', 'bigint')
    .addColumn('last_finished_at', 'bigint')
    .addColumn('last_result', 'text')
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('leases').ifExists().execute();
  await db.schema.dropIndex('jobs_finished_at').ifExists().execute();
}
