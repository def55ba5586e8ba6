/**
 * Core metadata schema: jobs, their images and API keys. Written with Kysely's schema builder so one
 * migration serves SQLite and Postgres. Portable choices: timestamps are epoch milliseconds in BIGINT,
 * JSON is TEXT, booleans are INTEGER 0/1, fractions and money are DOUBLE PRECISION.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('jobs')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('kind', 'text', (c) => c.notNull())
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('priority', 'text', (c) => c.notNull())
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('backend', 'text')
    .addColumn('request', 'text', (c) => c.notNull())
    .addColumn('progress', 'double precision', (c) => c.notNull().defaultTo(0))
    .addColumn('attempt', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('error', 'text')
    .addColumn('result', 'text')
    .addColumn('metadata', 'text')
    .addColumn('webhook_url', 'text')
    .addColumn('idempotency_key', 'text')
    .addColumn('cancel_requested', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('backend_state', 'text')
    .addColumn('cost_usd', 'double precision')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('started_at', 'bigint')
    .addColumn('finished_at', 'bigint')
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('jobs_key_id_id').on('jobs').columns(['key_id', 'id']).execute();
  await db.schema.createIndex('jobs_key_id_status_id').on('jobs').columns(['key_id', 'status', 'id']).execute();
  // NULL idempotency keys are distinct in both databases, so only real keys collide.
  await db.schema
    .createIndex('jobs_key_id_idempotency_key')
    .unique()
    .on('jobs')
    .columns(['key_id', 'idempotency_key'])
    .execute();
  await db.schema.createIndex('jobs_status').on('jobs').column('status').execute();

  await db.schema
    .createTable('images')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('idx', 'integer', (c) => c.notNull())
    .addColumn('storage_key', 'text', (c) => c.notNull())
    .addColumn('media_type', 'text', (c) => c.notNull())
    .addColumn('width', 'integer', (c) => c.notNull())
    .addColumn('height', 'integer', (c) => c.notNull())
    .addColumn('bytes', 'bigint', (c) => c.notNull())
    .addColumn('sha256', 'text', (c) => c.notNull())
    .addColumn('revised_prompt', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('images_job_id_idx').unique().on('images').columns(['job_id', 'idx']).execute();
  await db.schema.createIndex('images_key_id_id').on('images').columns(['key_id', 'id']).execute();

  await db.schema
    .createTable('api_keys')
    .addColumn('id', 'text', (c) => c.primaryKey())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('prefix', 'text', (c) => c.notNull())
    .addColumn('hash', 'text', (c) => c.notNull().unique())
    .addColumn('admin', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('revoked_at', 'bigint')
    .execute();
  await db.schema.createIndex('api_keys_name').on('api_keys').column('name').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('api_keys').ifExists().execute();
  await db.schema.dropTable('images').ifExists().execute();
  await db.schema.dropTable('jobs').ifExists().execute();
}
