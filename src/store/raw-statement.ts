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

export type RawStatement = <R = Record<string, unknown>>(db: Kysely<any>, params: readonly unknown[]) => Promise<QueryResult<R>>;

export function rawStatement(dialect: Dialect, text: string): RawStatement {
  let n = 0;
  const sqlText = dialect === 'postgres' ? text.replace(/\?/g, () => `$${++n}`) : text;
  const arity = dialect === 'postgres' ? n : (text.match(/\?/g)?.length ?? 0);
  return <R>(db: Kysely<any>, params: readonly unknown[]) => {
    if (params.length !== arity) throw new Error(`statement takes ${arity} parameters, got ${params.length}: ${sqlText}`);
    return db.executeQuery(CompiledQuery.raw(sqlText, params as unknown[])) as Promise<QueryResult<R>>;
  };
}

/** `(?, ?, …), (?, ?, …)`: the VALUES list of a multi-row insert. */
export function valuesList(rows: number, columns: number): string {
  const row = `(${Array.from({ length: columns }, () => '?').join(', ')})`;
  return Array.from({ length: rows }, () => row).join(', ');
}
