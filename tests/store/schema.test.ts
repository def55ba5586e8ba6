/**
 * The `Database` interface (src/store/schema.ts) against the schema the migrations make: a fresh
 * SQLite and Postgres database is migrated and introspected, and every table and column, with whether
 * it holds text or a number, may be NULL and has a default, must be as the interface says.
 *
 * `COLUMNS` mirrors the interface at run time. Its type is computed from the interface, so the two
 * cannot drift apart: a table or column missing from the mirror, one the interface lacks, or a
 * description that does not match the column's type (`'number | null'` for a `string`) does not compile.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { InsertType, SelectType } from 'kysely';
import { migrate, openDatabase } from '../../src/store/database.ts';
import type { Dialect, MetadataDb } from '../../src/store/database.ts';
import type { Database } from '../../src/store/schema.ts';
import { sqliteDrivers } from '../../src/store/sqlite-driver.ts';
import type { SqliteDriverName } from '../../src/store/sqlite-driver.ts';
import { startPostgres } from '../support/postgres.ts';

/** How the interface describes a column: `number` or `string`, ` | null` when nullable, ` = default` when optional on insert. */
type Describe<C> = `${NonNullable<SelectType<C>> extends number ? 'number' : 'string'}${null extends SelectType<C> ? ' | null' : ''}${undefined extends InsertType<C> ? ' = default' : ''}`;
type Mirror = { readonly [T in keyof Database]: { readonly [C in keyof Database[T]]-?: Describe<Database[T][C]> } };

const COLUMNS: Mirror = {
  jobs: {
    id: 'string',
    key_id: 'string',
    kind: 'string',
    status: 'string',
    priority: 'string',
    model: 'string',
    backend: 'string | null',
    request: 'string',
    progress: 'number = default',
    attempt: 'number = default',
    error: 'string | null',
    result: 'string | null',
    metadata: 'string | null',
    webhook_url: 'string | null',
    idempotency_key: 'string | null',
    cancel_requested: 'number = default',
    backend_state: 'string | null',
    cost_usd: 'number | null',
    created_at: 'number',
    started_at: 'number | null',
    finished_at: 'number | null',
    updated_at: 'number',
    webhook_swept_at: 'number | null',
    idempotency_fingerprint: 'string | null',
  },
  images: {
    id: 'string',
    job_id: 'string',
    key_id: 'string',
    idx: 'number',
    storage_key: 'string',
    media_type: 'string',
    width: 'number',
    height: 'number',
    bytes: 'number',
    sha256: 'string',
    revised_prompt: 'string | null',
    created_at: 'number',
    thumb_key: 'string | null',
  },
  api_keys: {
    id: 'string',
    name: 'string',
    prefix: 'string',
    hash: 'string',
    admin: 'number = default',
    created_at: 'number',
    revoked_at: 'number | null',
  },
  queue_messages: {
    job_id: 'string',
    priority: 'number',
    seq: 'number',
    enqueued_at: 'number',
    available_at: 'number',
    lease_owner: 'string | null',
    lease_until: 'number | null',
    delivery_count: 'number = default',
    key_id: 'string = default',
    vtag: 'number = default',
    max_running: 'number | null',
    grp: 'string | null',
    grp_max_running: 'number | null',
  },
  job_events: {
    job_id: 'string',
    event_id: 'number',
    type: 'string',
    data: 'string',
    created_at: 'number',
  },
  webhook_deliveries: {
    id: 'string',
    job_id: 'string',
    event_type: 'string',
    url: 'string',
    payload: 'string',
    status: 'string',
    attempts: 'number = default',
    next_attempt_at: 'number',
    first_attempt_at: 'number | null',
    last_error: 'string | null',
    lease_owner: 'string | null',
    lease_until: 'number | null',
    created_at: 'number',
    delivered_at: 'number | null',
    updated_at: 'number',
  },
  webhook_attempts: {
    delivery_id: 'string',
    attempt: 'number',
    at: 'number',
    status_code: 'number | null',
    error: 'string | null',
    duration_ms: 'number',
  },
  leases: {
    name: 'string',
    owner: 'string | null',
    lease_until: 'number = default',
    last_run_at: 'number | null',
    last_finished_at: 'number | null',
    last_result: 'string | null',
    updated_at: 'number',
  },
  budget_ledger: {
    scope: 'string',
    period: 'string',
    spent_micros: 'number = default',
    reserved_micros: 'number = default',
    updated_at: 'number',
  },
  budget_reservations: {
    job_id: 'string',
    key_id: 'string',
    rows: 'string',
    amount_micros: 'number',
    status: 'string',
    charged_micros: 'number | null',
    actual_micros: 'number | null',
    created_at: 'number',
    settled_at: 'number | null',
  },
  job_costs: {
    job_id: 'string',
    key_id: 'string',
    requested_model: 'string | null',
    routing: 'string | null',
    estimate_usd: 'number | null',
    reserved: 'number = default',
    cache_policy: 'string | null',
    embedding: 'string | null',
    cache_kind: 'string | null',
    cache_source_job: 'string | null',
    cache_similarity: 'number | null',
    saved_usd: 'number | null',
    backend: 'string | null',
    backend_model: 'string | null',
    images: 'number | null',
    megapixels: 'number | null',
    gpu_seconds: 'number | null',
    self_hosted: 'number = default',
    parent_job_id: 'string | null',
    parent_index: 'number | null',
    batch_id: 'string | null',
    created_at: 'number',
  },
  image_cache: {
    id: 'string',
    cache_key: 'string',
    params_key: 'string',
    job_id: 'string',
    key_id: 'string',
    model: 'string',
    prompt: 'string',
    embedding: 'string | null',
    cost_usd: 'number | null',
    hits: 'number = default',
    created_at: 'number',
    expires_at: 'number',
  },
  batches: {
    id: 'string',
    key_id: 'string',
    status: 'string',
    total: 'number',
    priority: 'string',
    hourly_cap_usd: 'number | null',
    metadata: 'string | null',
    idempotency_key: 'string | null',
    created_at: 'number',
    canceled_at: 'number | null',
    completed_at: 'number | null',
    idempotency_fingerprint: 'string | null',
  },
  batch_items: {
    batch_id: 'string',
    idx: 'number',
    custom_id: 'string | null',
    body: 'string',
    status: 'string',
    job_id: 'string | null',
    error: 'string | null',
    updated_at: 'number',
  },
};

/**
 * SQLite lets a PRIMARY KEY column that is not an INTEGER PRIMARY KEY hold NULL unless it is declared
 * NOT NULL (a bug kept for compatibility), and migration 001 does not declare these; nothing easel
 * writes is NULL there, and Postgres reports them NOT NULL.
 */
const SQLITE_NULLABLE_KEYS = new Set(['jobs.id', 'images.id', 'api_keys.id']);

/** The column as the database describes it, in the mirror's words. */
function describeColumn(dialect: Dialect, table: string, c: { name: string; dataType: string; isNullable: boolean; hasDefaultValue: boolean }): string {
  const type = /^text$/i.test(c.dataType) ? 'string' : /int|double|float|numeric|real/i.test(c.dataType) ? 'number' : `? (${c.dataType})`;
  const nullable = c.isNullable && !(dialect === 'sqlite' && SQLITE_NULLABLE_KEYS.has(`${table}.${c.name}`));
  return `${type}${nullable ? ' | null' : ''}${c.hasDefaultValue ? ' = default' : ''}`;
}

interface Target {
  url: string;
  sqliteDriver?: SqliteDriverName;
  cleanup(): Promise<void>;
}

function defineSuite(name: string, target: () => Promise<Target>): void {
  describe(name, () => {
    let t: Target;
    let mdb: MetadataDb;

    before(async () => {
      t = await target();
      mdb = openDatabase(t.url, { sqliteDriver: t.sqliteDriver });
      await migrate(mdb);
    });

    after(async () => {
      await mdb?.close();
      await t?.cleanup();
    });

    test('the migrated database has exactly the tables and columns of the Database interface', async () => {
      const tables = (await mdb.db.introspection.getTables()).filter((tb) => !tb.isView);
      const actual = Object.fromEntries(
        tables.map((tb) => [tb.name, Object.fromEntries(tb.columns.map((c) => [c.name, describeColumn(mdb.dialect, tb.name, c)]).sort(([a], [b]) => a!.localeCompare(b!)))]),
      );
      const expected = Object.fromEntries(
        Object.entries(COLUMNS).map(([tb, cols]) => [tb, Object.fromEntries(Object.entries(cols).sort(([a], [b]) => a.localeCompare(b)))]),
      );
      assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), 'tables');
      for (const tb of Object.keys(expected)) assert.deepEqual(actual[tb], expected[tb], `columns of ${tb}`);
    });
  });
}

for (const driver of sqliteDrivers()) {
  defineSuite(`Database interface on SQLite (${driver})`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'easel-schema-'));
    return { url: join(dir, 'easel.db'), sqliteDriver: driver, cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
  });
}

const postgres = await startPostgres();
if (postgres) {
  defineSuite('Database interface on Postgres', async () => ({ url: postgres.url, cleanup: () => postgres.stop() }));
} else {
  describe('Database interface on Postgres', { skip: 'Postgres binaries (initdb, pg_ctl) not found; set CI to make this an error' }, () => {
    test('skipped', () => {});
  });
}
