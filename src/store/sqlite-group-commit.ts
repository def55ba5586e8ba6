/**
 * SQLite for Kysely with group commit.
 *
 * In WAL mode every commit appends each page it touched to the log, so one job's insert (a table page
 * plus a page per index) costs several 4 KiB writes, and every ~1,000 pages SQLite stops the writer
 * to checkpoint. Committing each statement on its own made commits most of easel's database time.
 *
 * This driver gathers the writes that arrive within one turn of the event loop and runs them from
 * `setImmediate` in one transaction (`BEGIN IMMEDIATE` … `COMMIT`). Nothing is lost in exchange:
 *
 * - A write's promise settles only after the commit that made it durable, with its own result or
 *   error. A failing statement rolls back only itself (SQLite's statement journal); should SQLite
 *   abandon the whole transaction (I/O error, disk full), every write of the group is rejected.
 * - Reads run at once against committed data. They never see a pending write: a caller that needs
 *   its own write has awaited it, and until then nobody has been told it happened.
 * - An explicit Kysely transaction takes its place in the group, in order, as a savepoint: its
 *   statements answer at once, a rollback undoes only its own changes, and its commit settles when
 *   the group's does. While it runs (microtasks, unless its callback does other I/O) other statements
 *   wait, as they did behind Kysely's one-connection mutex.
 * - The write lock is held only while a group runs, never across turns of the event loop, so other
 *   connections (other processes, or a second connection in this one) take their turns as before.
 */
import { CompiledQuery, SelectQueryNode, RawNode, SqliteAdapter, SqliteIntrospector, SqliteQueryCompiler } from 'kysely';
import type { DatabaseConnection, DatabaseIntrospector, Dialect, DialectAdapter, Driver, Kysely, QueryCompiler, QueryResult } from 'kysely';

export interface SqliteStatement {
  readonly reader: boolean;
  all(params: readonly unknown[]): unknown[];
  run(params: readonly unknown[]): { changes: number | bigint; lastInsertRowid: number | bigint };
}

export interface SqliteHandle {
  prepare(sql: string): SqliteStatement;
  exec(sql: string): void;
  readonly inTransaction: boolean;
  close(): void;
}

type Op =
  | { kind: 'write'; query: CompiledQuery; result?: QueryResult<unknown>; error?: unknown; resolve: (r: QueryResult<unknown>) => void; reject: (err: unknown) => void }
  | { kind: 'tx'; conn: GroupConnection; begun: () => void; beginFailed: (err: unknown) => void };

interface Group {
  ops: Op[];
  started: boolean;
  /** Settles when the group's COMMIT has run (or rejects with why it could not). */
  done: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

class GroupConnection implements DatabaseConnection {
  private readonly driver: GroupCommitDriver;
  /** Set while this connection's explicit transaction runs inside a group. */
  tx: { group: Group; ended: () => void } | undefined;

  constructor(driver: GroupCommitDriver) {
    this.driver = driver;
  }

  executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    return this.driver.execute(this, query) as Promise<QueryResult<R>>;
  }

  async *streamQuery<R>(query: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    const { rows } = await this.executeQuery<R>(query);
    for (const row of rows) yield { rows: [row] };
  }
}

const SAVEPOINT = 'easel_tx';

function isReadOnly(query: CompiledQuery): boolean {
  if (SelectQueryNode.is(query.query)) return true;
  return RawNode.is(query.query) && /^\s*select\b/i.test(query.sql);
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (err: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export class GroupCommitDriver implements Driver {
  private readonly db: SqliteHandle;
  /** The group taking new writes; it runs from setImmediate. */
  private open: Group | undefined;
  /** The group running now (between BEGIN and COMMIT). */
  private running: Group | undefined;
  private runningDone: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(db: SqliteHandle) {
    this.db = db;
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    if (this.closed) throw new Error('database is closed');
    return new GroupConnection(this);
  }

  async releaseConnection(): Promise<void> {}

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    const conn = connection as GroupConnection;
    const d = deferred<void>();
    this.enqueue({ kind: 'tx', conn, begun: () => d.resolve(), beginFailed: d.reject });
    await d.promise;
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const conn = connection as GroupConnection;
    const tx = conn.tx;
    if (!tx) throw new Error('no transaction is open on this connection');
    try {
      this.db.exec(`RELEASE ${SAVEPOINT}`);
    } finally {
      conn.tx = undefined;
      tx.ended();
    }
    await tx.group.done;
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const conn = connection as GroupConnection;
    const tx = conn.tx;
    if (!tx) return; // its commit failed and already ended it
    try {
      if (this.db.inTransaction) {
        this.db.exec(`ROLLBACK TO ${SAVEPOINT}`);
        this.db.exec(`RELEASE ${SAVEPOINT}`);
      }
    } finally {
      conn.tx = undefined;
      tx.ended();
    }
  }

  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await this.execute(connection as GroupConnection, CompiledQuery.raw(`savepoint "${name}"`));
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await this.execute(connection as GroupConnection, CompiledQuery.raw(`rollback to "${name}"`));
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    await this.execute(connection as GroupConnection, CompiledQuery.raw(`release "${name}"`));
  }

  async destroy(): Promise<void> {
    if (this.closed) return;
    while (this.open || this.running) {
      if (this.open && !this.running) await this.flush(this.open);
      else await this.runningDone.catch(() => {});
    }
    this.closed = true;
    this.db.close();
  }

  async execute(conn: GroupConnection, query: CompiledQuery): Promise<QueryResult<unknown>> {
    if (this.closed) throw new Error('database is closed');
    // Inside its own transaction (which runs inside the current group): answer at once.
    if (conn.tx) return this.run(query);
    if (isReadOnly(query)) {
      // A read waits while a group runs (the open transaction holds writes nobody was told about).
      while (this.running) await this.runningDone.catch(() => {});
      return this.run(query);
    }
    const d = deferred<QueryResult<unknown>>();
    this.enqueue({ kind: 'write', query, resolve: d.resolve, reject: d.reject });
    return d.promise;
  }

  private run(query: CompiledQuery): QueryResult<unknown> {
    const stmt = this.db.prepare(query.sql);
    if (stmt.reader) return { rows: stmt.all(query.parameters) };
    const { changes, lastInsertRowid } = stmt.run(query.parameters);
    return {
      insertId: lastInsertRowid != null ? BigInt(lastInsertRowid) : undefined,
      numAffectedRows: changes != null ? BigInt(changes) : undefined,
      rows: [],
    };
  }

  private enqueue(op: Op): void {
    if (!this.open) {
      const d = deferred<void>();
      d.promise.catch(() => {}); // members are told through their own promises
      const group: Group = { ops: [], started: false, done: d.promise, resolve: () => d.resolve(), reject: d.reject };
      this.open = group;
      const after = this.runningDone;
      setImmediate(() => {
        // One group at a time: a later one starts when the one before it has committed.
        after.catch(() => {}).then(() => this.flush(group));
      });
    }
    this.open.ops.push(op);
  }

  private flush(group: Group): Promise<void> {
    if (group.started) return group.done.catch(() => {});
    group.started = true;
    if (this.open === group) this.open = undefined;
    this.running = group;
    this.runningDone = this.runGroup(group).finally(() => {
      this.running = undefined;
    });
    return this.runningDone;
  }

  private async runGroup(group: Group): Promise<void> {
    let failure: unknown;
    try {
      this.db.exec('BEGIN IMMEDIATE');
    } catch (err) {
      failure = err;
    }
    for (const op of group.ops) {
      if (failure !== undefined) break;
      if (op.kind === 'write') {
        try {
          op.result = this.run(op.query);
        } catch (err) {
          op.error = err;
          // SQLite rolled back only this statement, unless the error made it abandon the transaction.
          if (!this.db.inTransaction) failure = err;
        }
        continue;
      }
      const ended = deferred<void>();
      try {
        this.db.exec(`SAVEPOINT ${SAVEPOINT}`);
      } catch (err) {
        op.beginFailed(err);
        if (!this.db.inTransaction) failure = err;
        continue;
      }
      op.conn.tx = { group, ended: () => ended.resolve() };
      op.begun();
      await ended.promise;
      if (!this.db.inTransaction) failure = new Error('SQLite rolled back the transaction a group of writes ran in');
    }
    if (failure === undefined) {
      try {
        this.db.exec('COMMIT');
      } catch (err) {
        failure = err;
      }
    }
    if (failure !== undefined) {
      try {
        if (this.db.inTransaction) this.db.exec('ROLLBACK');
      } catch {
        // nothing more to undo
      }
      for (const op of group.ops) {
        if (op.kind === 'write') op.reject(failure);
        else if (!op.conn.tx || op.conn.tx.group !== group) op.beginFailed(failure);
      }
      group.reject(failure);
      return;
    }
    for (const op of group.ops) {
      if (op.kind !== 'write') continue;
      if (op.error !== undefined) op.reject(op.error);
      else op.resolve(op.result!);
    }
    group.resolve();
  }
}

class GroupCommitAdapter extends SqliteAdapter {
  // Statements do not queue behind one another; the driver orders writes and transactions itself.
  override get supportsMultipleConnections(): boolean {
    return true;
  }
}

export class GroupCommitSqliteDialect implements Dialect {
  private readonly db: SqliteHandle;

  constructor(db: SqliteHandle) {
    this.db = db;
  }

  createDriver(): Driver {
    return new GroupCommitDriver(this.db);
  }

  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }

  createAdapter(): DialectAdapter {
    return new GroupCommitAdapter();
  }

  // Kysely's Dialect contract: the introspector reads whatever schema the database has, so it takes
  // `Kysely<any>` (as SqliteIntrospector does), not the app's `Kysely<Database>`.
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}
