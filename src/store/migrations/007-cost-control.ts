/**
 * Cost control (src/cost): the budget ledger and its reservations, per-job cost and routing records,
 * and the image cache. Money is integer micro-dollars (1 USD = 1,000,000) so that the ledger's
 * conditional arithmetic is exact on SQLite and Postgres alike.
 *
 * - `budget_ledger`: one row per (scope, period), e.g. (`key:key_…`, `day:2025-03-01`) or
 *   (`group:marketing`, `month:2025-03`) or (`batch:batch_…`, `win:483921`). A reservation adds to
 *   `reserved_micros` with one conditional UPDATE per row (`… WHERE spent + reserved + amount <= limit`)
 *   inside one transaction, so concurrent admissions can never push a row past its limit.
 * - `budget_reservations`: what one job holds, on which rows, until it is settled (charged) or
 *   released; settling is conditional on `status = 'held'`, so it happens once.
 * - `job_costs`: per job, what the router decided and why, the admission estimate, cache hits and
 *   the money they saved, measured GPU-seconds, draft→refine and batch links.
 * - `image_cache`: finished generations that may answer later requests, by exact key and (when the
 *   semantic cache is on) by prompt embedding within the same settings (`params_key`).
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('budget_ledger')
    .addColumn('scope', 'text', (c) => c.notNull())
    .addColumn('period', 'text', (c) => c.notNull())
    .addColumn('spent_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('reserved_micros', 'bigint', (c) => c.notNull().defaultTo(0))
    .addColumn('updated_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('budget_ledger_pk', ['scope', 'period'])
    .execute();

  await db.schema
    .createTable('budget_reservations')
    .addColumn('job_id', 'text', (c) => c.primaryKey().notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    // JSON: [[scope, period], …]
    .addColumn('rows', 'text', (c) => c.notNull())
    .addColumn('amount_micros', 'bigint', (c) => c.notNull())
    // held | settled | released
    .addColumn('status', 'text', (c) => c.notNull())
    .addColumn('charged_micros', 'bigint')
    .addColumn('actual_micros', 'bigint')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('settled_at', 'bigint')
    .execute();
  await db.schema
    .createIndex('budget_reservations_held')
    .on('budget_reservations')
    .column('created_at')
    .where(sql.ref('status'), '=', 'held')
    .execute();

  await db.schema
    .createTable('job_costs')
    .addColumn('job_id', 'text', (c) => c.primaryKey().notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    // What the client asked for (an alias, a model, or nothing) and the routing decision (JSON).
    .addColumn('requested_model', 'text')
    .addColumn('routing', 'text')
    .addColumn('estimate_usd', 'double precision')
    // 1 when a budget reservation is held for the job (settled when it ends).
    .addColumn('reserved', 'integer', (c) => c.notNull().defaultTo(0))
    // What the request allowed of the cache: auto | reuse | similar | off | opt_out.
    .addColumn('cache_policy', 'text')
    // The prompt's embedding computed at admission (semantic cache), reused when the image is cached.
    .addColumn('embedding', 'text')
    // exact | semantic
    .addColumn('cache_kind', 'text')
    .addColumn('cache_source_job', 'text')
    .addColumn('cache_similarity', 'double precision')
    .addColumn('saved_usd', 'double precision')
    // Filled when the job ends: where it ran, what it made, and measured GPU time (self-hosted).
    .addColumn('backend', 'text')
    .addColumn('backend_model', 'text')
    .addColumn('images', 'integer')
    .addColumn('megapixels', 'double precision')
    .addColumn('gpu_seconds', 'double precision')
    .addColumn('self_hosted', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('parent_job_id', 'text')
    .addColumn('parent_index', 'integer')
    .addColumn('batch_id', 'text')
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('job_costs_key_created').on('job_costs').columns(['key_id', 'created_at']).execute();
  await db.schema.createIndex('job_costs_backend_model').on('job_costs').columns(['backend', 'backend_model', 'created_at']).execute();
  await db.schema.createIndex('job_costs_parent').on('job_costs').column('parent_job_id').where(sql.ref('parent_job_id'), 'is not', null).execute();

  await db.schema
    .createTable('image_cache')
    .addColumn('id', 'text', (c) => c.primaryKey().notNull())
    .addColumn('cache_key', 'text', (c) => c.notNull())
    .addColumn('params_key', 'text', (c) => c.notNull())
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('key_id', 'text', (c) => c.notNull())
    .addColumn('model', 'text', (c) => c.notNull())
    .addColumn('prompt', 'text', (c) => c.notNull())
    // JSON array of floats (semantic cache), or null.
    .addColumn('embedding', 'text')
    .addColumn('cost_usd', 'double precision')
    .addColumn('hits', 'integer', (c) => c.notNull().defaultTo(0))
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addColumn('expires_at', 'bigint', (c) => c.notNull())
    .execute();
  await db.schema.createIndex('image_cache_key').on('image_cache').columns(['cache_key', 'created_at']).execute();
  await db.schema.createIndex('image_cache_params').on('image_cache').columns(['params_key', 'created_at']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('image_cache').ifExists().execute();
  await db.schema.dropTable('job_costs').ifExists().execute();
  await db.schema.dropTable('budget_reservations').ifExists().execute();
  await db.schema.dropTable('budget_ledger').ifExists().execute();
}
