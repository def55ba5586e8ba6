/**
 * Opens the metadata database: SQLite (through libsql's prebuilt binary) in the data folder by
 * default, Postgres when the URL says so. Both go through Kysely, so the rest of easel has one code path.
 */
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { GroupCommitSqliteDialect } from './sqlite-group-commit.ts';
import type { SqliteHandle, SqliteStatement } from './sqlite-group-commit.ts';
import { Migrator } from 'kysely/migration';
import type { Migration, MigrationProvider } from 'kysely/migration';
import Database from 'libsql';
import pg from 'pg';
import { migrations } from './migrations/index.ts';

export type Dialect = 'sqlite' | 'postgres';

export interface MetadataDb {
  dialect: Dialect;
  // The schema is described per table in the store implementations; `any` keeps this seam small.
  db: Kysely<any>;
  close(): Promise<void>;
}

export function isPostgresUrl(url: string | undefined): boolean {
  return !!url && /^postgres(ql)?:\/\//.test(url);
}

export function openDatabase(url: string): MetadataDb {
  if (isPostgresUrl(url)) {
    // BIGINT and NUMERIC come back as strings by default; easel stores counts and money that fit a double.
    pg.types.setTypeParser(20, (v) => Number(v));
    pg.types.setTypeParser(1700, (v) => Number(v));
    const pool = new pg.Pool({ connectionString: url, max: 10 });
    pool.on('error', () => {}); // idle client errors surface on the next query instead
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
    return { dialect: 'postgres', db, close: () => db.destroy() };
  }
  const file = url.replace(/^(sqlite|file):(\/\/)?/, '');
  if (file !== ':memory:') mkdirSync(dirname(resolve(file)), { recursive: true });
  const sqlite = new Database(file);
  // WAL lets readers run beside the one writer; NORMAL sync is durable across process crashes
  // (only an OS crash may lose the last commits), which is the failure embedded mode guards against.
  sqlite.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;');
  const db = new Kysely<any>({ dialect: new GroupCommitSqliteDialect(withStatementCache(sqlite)) });
  return { dialect: 'sqlite', db, close: () => db.destroy() };
}

/**
 * Kysely prepares every statement anew; easel runs the same few statements thousands of times a
 * second, so cache the prepared ones (SQLite is synchronous, so one statement is never used twice at once).
 */
function withStatementCache(sqlite: InstanceType<typeof Database>): SqliteHandle {
  const cache = new Map<string, SqliteStatement>();
  return {
    prepare(text: string) {
      let stmt = cache.get(text);
      if (!stmt) {
        const prepared = sqlite.prepare(text);
        // Kysely asks `reader` before every execution; libsql answers it with a native call each
        // time. Whether a statement returns rows never changes, so ask once.
        Object.defineProperty(prepared, 'reader', { value: prepared.reader });
        stmt = prepared as unknown as SqliteStatement;
        if (cache.size > 500) cache.clear();
        cache.set(text, stmt);
      }
      return stmt;
    },
    exec(text: string) {
      sqlite.exec(text);
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
