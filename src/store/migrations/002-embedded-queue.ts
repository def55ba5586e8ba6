/**
 * The embedded queue's table (src/queue/embedded-queue.ts). One row per message that is waiting or held
 * by a consumer; acknowledging deletes the row. Portable across SQLite and Postgres: times are epoch
 * milliseconds in BIGINT, and `seq` (a per-process monotonic microsecond-ish stamp) orders messages FIFO
 * within a priority without needing an identity column that SQLite only allows on the primary key.
 *
 * A message is claimable when `available_at <= now` and its lease is absent or expired
 * (`lease_until IS NULL OR lease_until < now`); consumers scan `(priority, seq)` in index order.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('queue_messages')
    .addColumn('job_id', 'text', (c) => c.primaryKey().notNull())
    // PRIORITY_RANK: lower runs first.
    .addColumn('priority', 'integer', (c) => c.notNull())
    .addColumn('seq', 'bigint', (c) => c.notNull())
    .addColumn('enqueued_at', 'bigint', (c) => c.notNull())
    .addColumn('available_at', 'bigint', (c) => c.notNull())
    .addColumn('lease_owner', 'text')
    .addColumn('lease_until', 'bigint')
    .addColumn('delivery_count', 'integer', (c) => c.notNull().defaultTo(0))
    .execute();
  // "Next available message": scanned in (priority, seq) order, filtered on availability and lease.
  await db.schema.createIndex('queue_messages_next').on('queue_messages').columns(['priority', 'seq']).execute();
  // Heartbeats renew every lease one consumer holds; only held rows are indexed.
  await db.schema
    .createIndex('queue_messages_lease_owner')
    .on('queue_messages')
    .column('lease_owner')
    .where(sql.ref('lease_owner'), 'is not', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('queue_messages').ifExists().execute();
}
