/**
 * The SQLite library under easel's embedded database: Node's built-in `node:sqlite` where it is a
 * plain module (Node 24 and later), else libsql's prebuilt binary (Node 22, where `node:sqlite`
 * still prints an experimental warning). Both are the same SQLite file format, with WAL, so a
 * data folder moves between them. `EASEL_SQLITE_DRIVER=libsql|node` picks one explicitly.
 *
 * Why prefer the built-in: it binds and reads rows in about half the time per statement (a job's
 * insert 3.6 µs against 6.5 µs, an `update … returning *` 6 µs against 13 µs on this machine), and
 * easel runs a handful of statements per job.
 */
import { createRequire } from 'node:module';

export type SqliteDriverName = 'node' | 'libsql';

export interface RawStatement {
  /** Whether the statement returns rows (a select, or a write with `returning`). */
  readonly reader: boolean;
  all(params: readonly unknown[]): unknown[];
  get(params: readonly unknown[]): unknown;
  run(params: readonly unknown[]): { changes: number | bigint; lastInsertRowid: number | bigint };
}

export interface RawSqlite {
  readonly driver: SqliteDriverName;
  prepare(sql: string): RawStatement;
  exec(sql: string): void;
  readonly inTransaction: boolean;
  close(): void;
}

const require = createRequire(import.meta.url);

/** What `openSqlite` uses when not told: the environment's choice, else the built-in where it is stable enough. */
export function defaultSqliteDriver(env: NodeJS.ProcessEnv = process.env): SqliteDriverName {
  const wanted = env.EASEL_SQLITE_DRIVER;
  if (wanted === 'node' || wanted === 'libsql') return wanted;
  if (wanted) throw new Error(`EASEL_SQLITE_DRIVER must be "node" or "libsql", not ${JSON.stringify(wanted)}`);
  return nodeSqliteUsable() ? 'node' : 'libsql';
}

/** Every SQLite library this Node can run easel on (the test suites run against each). */
export function sqliteDrivers(): SqliteDriverName[] {
  return nodeSqliteUsable() ? ['node', 'libsql'] : ['libsql'];
}

function nodeSqliteUsable(): boolean {
  // Node 22 and 23 have node:sqlite behind a warning (or a flag); from 24 it loads quietly.
  if (Number(process.versions.node.split('.')[0]) < 24) return false;
  try {
    process.getBuiltinModule('node:sqlite');
    return true;
  } catch {
    return false;
  }
}

export function openSqlite(file: string, driver: SqliteDriverName = defaultSqliteDriver()): RawSqlite {
  return driver === 'node' ? openNodeSqlite(file) : openLibsql(file);
}

function openNodeSqlite(file: string): RawSqlite {
  const { DatabaseSync } = process.getBuiltinModule('node:sqlite') as typeof import('node:sqlite');
  // Foreign keys are set by easel's own PRAGMA; node:sqlite's default (on) matches it.
  const db = new DatabaseSync(file);
  return {
    driver: 'node',
    prepare(text) {
      const stmt = db.prepare(text);
      const reader = stmt.columns().length > 0;
      return {
        reader,
        // Rows come back with a null prototype; copy them into plain objects, as libsql returns
        // and as callers (and deepEqual in tests) expect.
        all: (params) => stmt.all(...(params as never[])).map(plain),
        get: (params) => {
          const row = stmt.get(...(params as never[]));
          return row === undefined ? undefined : plain(row);
        },
        run: (params) => stmt.run(...(params as never[])),
      };
    },
    exec: (text) => db.exec(text),
    get inTransaction() {
      return db.isTransaction;
    },
    close: () => db.close(),
  };
}

function plain(row: Record<string, unknown>): Record<string, unknown> {
  return Object.assign({}, row);
}

function openLibsql(file: string): RawSqlite {
  const Database = require('libsql') as typeof import('libsql');
  const db = new Database(file);
  return {
    driver: 'libsql',
    prepare(text) {
      const stmt = db.prepare(text);
      // libsql answers `reader` with a native call each time; whether a statement returns rows never changes.
      const reader = stmt.reader;
      return {
        reader,
        all: (params) => stmt.all(params as never) as unknown[],
        get: (params) => stmt.get(params as never),
        run: (params) => stmt.run(params as never) as { changes: number; lastInsertRowid: number },
      };
    },
    exec: (text) => void db.exec(text),
    get inTransaction() {
      return db.inTransaction;
    },
    close: () => db.close(),
  };
}
