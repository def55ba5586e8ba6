/**
 * Opens the metadata database: SQLite (node:sqlite on Node 24+, else libsql's prebuilt binary; see
 * sqlite-driver.ts) in the data folder by default, Postgres when the URL says so. Both go through Kysely, so the rest of easel has one code path.
 */
import { mkdirSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { dirname, resolve } from 'node:path';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { GroupCommitSqliteDialect } from './sqlite-group-commit.ts';
import type { SqliteHandle, SqliteStatement } from './sqlite-group-commit.ts';
import { openSqlite } from './sqlite-driver.ts';
import type { RawSqlite, SqliteDriverName } from './sqlite-driver.ts';
import { Migrator } from 'kysely/migration';
import type { Migration, MigrationProvider } from 'kysely/migration';
import type pgModule from 'pg';
import { loadOptional } from '../core/optional-module.ts';
import { migrations } from './migrations/index.ts';
import type { Database } from './schema.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface MetadataDb {
  dialect: Dialect;
  /** Every table and column: schema.ts. */
  db: Kysely<Database>;
  close(): Promise<void>;
}

export function isPostgresUrl(url: string | undefined): boolean {
  return !!url && /^postgres(ql)?:\/\//.test(url);
}

export function openDatabase(url: string, opts: { sqliteDriver?: SqliteDriverName } = {}): MetadataDb {
  if (isPostgresUrl(url)) {
    // The Postgres driver loads only when the URL names Postgres (the embedded default never does).
    const pg = loadOptional<typeof pgModule>('pg', import.meta.url);
    // BIGINT and NUMERIC come back as strings by default; easel stores counts and money that fit a double.
    pg.types.setTypeParser(20, (v) => Number(v));
    pg.types.setTypeParser(1700, (v) => Number(v));
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    pool.on('error', () => {}); // idle client errors surface on the next query instead
    const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
    return { dialect: 'postgres', db, close: () => db.destroy() };
  }
  const file = url.replace(/^(sqlite|file):(\/\/)?/, '');
  if (file !== ':memory:') mkdirSync(dirname(resolve(file)), { recursive: true });
  const sqlite = openSqlite(file, opts.sqliteDriver);
  // WAL lets readers run beside the one writer; NORMAL sync is durable across process crashes
  // (only an OS crash may lose the last commits), which is the failure embedded mode guards against.
  // Temporary storage in memory: otherwise SQLite creates and at once deletes a file in TMPDIR for a
  // savepoint's statement journal or a `returning` clause's rows, several times a second under load.
  // Besides the syscalls, on ext4 without a journal every such deletion makes each later file
  // creation on the disk (images included) scan past the recently freed inode (measured: ~1 ms of
  // kernel CPU per image file, against ~0.05 ms with this setting).
  sqlite.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -32768;');
  // The checkpoint thread starts once the database is busy (a short-lived CLI or a test never needs it).
  let checkpointer: { stop(): Promise<void> } | undefined;
  let commits = 0;
  const onCommit = () => {
    if (++commits === CHECKPOINTER_AFTER_COMMITS && file !== ':memory:') checkpointer = startCheckpointer(sqlite, resolve(file));
  };
  const db = new Kysely<Database>({ dialect: new GroupCommitSqliteDialect(withStatementCache(sqlite, onCommit)) });
  return {
    dialect: 'sqlite',
    db,
    close: async () => {
      await db.destroy();
      await checkpointer?.stop();
    },
  };
}

/** Commits before the WAL checkpoints move to their own thread (SQLite's automatic checkpoint until then). */
const CHECKPOINTER_AFTER_COMMITS = 500;

/**
 * Moves WAL checkpoints off the event loop: SQLite's automatic checkpoint runs inside whichever
 * commit crosses 1,000 pages, stalling it for milliseconds (copying pages, fsyncing the database
 * file). A thread with its own connection checkpoints every 250 ms instead; should it fail to start,
 * the automatic checkpoint stays on.
 */
function startCheckpointer(sqlite: RawSqlite, file: string): { stop(): Promise<void> } | undefined {
  let worker: Worker;
  try {
    worker = new Worker(new URL('./sqlite-checkpointer-thread.ts', import.meta.url), { workerData: { file, intervalMs: 250, driver: sqlite.driver } });
  } catch {
    return undefined;
  }
  sqlite.exec('PRAGMA wal_autocheckpoint = 0');
  worker.unref();
  let alive = true;
  worker.on('error', () => {
    alive = false;
    try {
      sqlite.exec('PRAGMA wal_autocheckpoint = 1000');
    } catch {
      // closed already
    }
  });
  worker.on('exit', () => (alive = false));
  return {
    stop: async () => {
      if (!alive) return;
      const stopped = new Promise<void>((res) => {
        worker.once('message', () => res());
        worker.once('exit', () => res());
      });
      worker.postMessage('stop');
      await stopped;
      await worker.terminate();
    },
  };
}

/**
 * Kysely prepares every statement anew; easel runs the same few statements thousands of times a
 * second, so cache the prepared ones (SQLite is synchronous, so one statement is never used twice at once).
 */
function withStatementCache(sqlite: RawSqlite, onCommit: () => void): SqliteHandle {
  const cache = new Map<string, SqliteStatement>();
  return {
    prepare(text: string) {
      let stmt = cache.get(text);
      if (!stmt) {
        stmt = sqlite.prepare(text);
        if (cache.size > 500) cache.clear();
        cache.set(text, stmt);
      }
      return stmt;
    },
    exec(text: string) {
      sqlite.exec(text);
      if (text === 'COMMIT') onCommit();
    },
    get inTransaction() {
      return sqlite.inTransaction;
    },
    close() {
      cache.clear();
      sqlite.close();
    },
  };
}

class StaticProvider implements MigrationProvider {
  async getMigrations(): Promise<Record<string, Migration>> {
    return migrations;
  }
}

export async function migrate(mdb: MetadataDb): Promise<string[]> {
  const migrator = new Migrator({ db: mdb.db, provider: new StaticProvider() });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

export async function pingDatabase(mdb: MetadataDb): Promise<void> {
  await sql`select 1`.execute(mdb.db);
}
