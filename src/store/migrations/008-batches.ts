/**
 * Batches (src/batches): a batch and its requests. A request waits in `batch_items` (status
 * `pending`) until a worker's batch pump admits it as a job (`submitted`, with `job_id`), paced by
 * the batch's in-flight limit and hourly spend cap; requests refused at admission end `failed` with
 * the reason, and a canceled batch's waiting requests end `canceled`. The job row is the truth for
 * submitted requests.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('batches')
    .addColumn('id', 'text', (c) => c.primaryKey().notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    // in_progress | canceled | completed
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('total', 'integer', (c) => c.notNull())
    .addColumn('priority', 'text', (c) => c.notNull())
    .addColumn('hourly_cap_usd', 'double precision')
    .addColumn('metadata', 'text')
    .addColumn('idempotency_key', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('canceled_at', 'bigint')
    .addColumn('completed_at', 'bigint')
    .execute();
  await db.schema.createIndex('batches_key_id').on('batches').columns(['key_id', 'id']).execute();
  await db.schema.createIndex('batches_key_idem').unique().on('batches').columns(['key_id', 'idempotency_key']).execute();
  await db.schema.createIndex('batches_open').on('batches').column('created_at').where(sql.ref('status'), '=', 'in_progress').execute();

  await db.schema
    .createTable('batch_items')
    .addColumn('batch_id', 'text', (c) => c.notNull())
    .addColumn('idx', 'integer', (c) => c.notNull())
    .addColumn('custom_id', 'text')
    // The request as accepted: {model, request, cache, webhookUrl, metadata} (JSON).
    .addColumn('body', 'text', (c) => c.notNull())
    // pending | claimed | submitted | failed | canceled
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('job_id', 'text')
    .addColumn('error', 'text')
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('batch_items_pk', ['batch_id', 'idx'])
    .execute();
  await db.schema
    .createIndex('batch_items_waiting')
    .on('batch_items')
    .columns(['batch_id', 'idx'])
    .where(sql.ref('status'), 'in', ['pending', 'claimed'])
    .execute();
  await db.schema.createIndex('batch_items_job').on('batch_items').column('job_id').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('batch_items').ifExists().execute();
  await db.schema.dropTable('batches').ifExists().execute();
}
