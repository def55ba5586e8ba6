/**
 * Webhook deliveries (src/webhooks). One row per (job, event type) in `webhook_deliveries`, whose id
 * is the Standard Webhooks `webhook-id` (`msg_…`) and whose `payload` is the exact body signed and
 * sent on every attempt; one row per HTTP attempt in `webhook_attempts`.
 *
 * `jobs.webhook_swept_at` marks jobs whose delivery has been created. The recovery sweep looks for
 * finished jobs that have a webhook URL and no mark through a partial index holding only such jobs,
 * so jobs without a webhook cost nothing extra (no write, no index entry).
 *
 * A delivery is claimable when `status = 'pending'`, `next_attempt_at <= now` and its lease is absent
 * or expired, the same lease scheme as the embedded queue.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('webhook_deliveries')
    .addColumn('id', 'text', (c) => c.primaryKey().notNull())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('event_type', 'text', (c) => c.notNull())
    .addColumn('url', 'text', (c) => c.notNull())
    .addColumn('payload', 'text', (c) => c.notNull())
    // pending | delivered | failed
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('next_attempt_at', 'bigint', (c) => c.notNull())
    .addColumn('first_attempt_at', 'bigint')
    .addColumn('last_error', 'text')
    .addColumn('lease_owner', 'text')
    .addColumn('lease_until', 'bigint')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('delivered_at', 'bigint')
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .execute();
  // One delivery per job and event; fast path and sweep both insert with ON CONFLICT DO NOTHING.
  await db.schema.createIndex('webhook_deliveries_job_event').unique().on('webhook_deliveries').columns(['job_id', 'event_type']).execute();
  // Due deliveries, in order; finished ones leave the index.
  await db.schema
    .createIndex('webhook_deliveries_due')
    .on('webhook_deliveries')
    .column('next_attempt_at')
    .where(sql.ref('status'), '=', 'pending')
    .execute();

  await db.schema
    .createTable('webhook_attempts')
    .addColumn('delivery_id', 'text', (c) => c.notNull())
    .addColumn('attempt', 'integer', (c) => c.notNull())
    .addColumn('at', 'bigint', (c) => c.notNull())
    .addColumn('status_code', 'integer')
    .addColumn('error', 'text')
    .addColumn('duration_ms', 'integer', (c) => c.notNull())
    .addPrimaryKeyConstraint('webhook_attempts_pk', ['delivery_id', 'attempt'])
    .execute();

  await db.schema.alterTable('jobs').addColumn('webhook_swept_at', 'bigint').execute();
  // Jobs that finished before webhooks were delivered at all are not delivered now.
  await db
    .updateTable('jobs')
    .set({ webhook_swept_at: Date.now() })
    .where('webhook_url', 'is not', null)
    .where('finished_at', 'is not', null)
    .execute();
  await db.schema
    .createIndex('jobs_webhook_unswept')
    .on('jobs')
    .column('finished_at')
    .where(sql.ref('webhook_url'), 'is not', null)
    .where(sql.ref('webhook_swept_at'), 'is', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('jobs_webhook_unswept').ifExists().execute();
  await db.schema.alterTable('jobs').dropColumn('webhook_swept_at').execute();
  await db.schema.dropTable('webhook_attempts').ifExists().execute();
  await db.schema.dropTable('webhook_deliveries').ifExists().execute();
}
