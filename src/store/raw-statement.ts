/**
 * Statements written once as SQL text, for the handful that run on every job (create, start,
 * complete, enqueue). Building and compiling a query with Kysely's builder costs about 10 µs, which
 * over those statements was a tenth of the event loop's time per job; SQL text that never changes
 * skips both, and SQLite's statement cache (database.ts) and Postgres see the same text every time.
 *
 * Text uses `?` placeholders; Postgres gets `$1…$n` in their place. Keep `?` out of string literals.
 */
import { CompiledQuery } from 'kysely';
import type { Kysely, QueryResult } from 'kysely';
import type { Dialect } from './database.ts';
import type { Database } from './schema.ts';

/**
 * Runs the statement on `db` (or a transaction of it). `R` is what its rows hold: the text is not
 * checked against the schema, so a statement returning rows says their type (e.g. `Row<'jobs'>` for
 * `returning *` on jobs).
 */
export type RawStatement = <R = Record<string, unknown>>(db: Kysely<Database>, params: readonly unknown[]) => Promise<QueryResult<R>>;

export function rawStatement(dialect: Dialect, text: string): RawStatement {
  let arity = 0;
  const sqlText = text.replace(/\?/g, () => {
    arity++;
    return dialect === 'postgres' ? `$${arity}` : '?';
  });
  return <R>(db: Kysely<Database>, params: readonly unknown[]) => {
    if (params.length !== arity) throw new Error(`statement takes ${arity} parameters, got ${params.length}: ${sqlText}`);
    return db.executeQuery(CompiledQuery.raw(sqlText, params as unknown[])) as Promise<QueryResult<R>>;
  };
}

/**
 * `(?, ?, …), (?, ?, …)`: the VALUES list of a multi-row insert. With types (`['text', 'integer']`)
 * each placeholder is cast, for a VALUES that has no target column to take types from (Postgres).
 */
export function valuesList(rows: number, columns: number | readonly string[]): string {
  const cells = typeof columns === 'number' ? Array.from({ length: columns }, () => '?') : columns.map((t) => `?::${t}`);
  const row = `(${cells.join(', ')})`;
  return Array.from({ length: rows }, () => row).join(', ');
}

/** A statement whose text depends on a row count (a multi-row VALUES); those for up to 16 rows are kept. */
export function rawStatementPerRows(dialect: Dialect, text: (rows: number) => string): (rows: number) => RawStatement {
  const made = new Map<number, RawStatement>();
  return (rows) => {
    let stmt = made.get(rows);
    if (!stmt) {
      stmt = rawStatement(dialect, text(rows));
      if (rows <= 16) made.set(rows, stmt);
    }
    return stmt;
  };
}
