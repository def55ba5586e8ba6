/**
 * Group commit on SQLite (src/store/sqlite-group-commit.ts): writes issued together share one
 * transaction, yet each caller sees exactly its own outcome, only after it is committed, and a second
 * connection (another process) sees nothing until then.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import Database from 'libsql';
import { openDatabase } from '../../src/store/database.ts';
import type { MetadataDb } from '../../src/store/database.ts';
import { sqliteDrivers } from '../../src/store/sqlite-driver.ts';

for (const driver of sqliteDrivers()) describe(`SQLite group commit (${driver})`, () => {
  let dir: string;
  let file: string;
  let mdb: MetadataDb;
  /** The handle with this suite's own table `t`, which easel's schema does not know. */
  let db: Kysely<{ t: { id: number; v: string } }>;
  /** A second connection to the same file, as another process would have. */
  let other: InstanceType<typeof Database>;

  const count = (): number => Number((other.prepare('select count(*) as n from t').get() as { n: number }).n);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'easel-group-'));
    file = join(dir, 'db.sqlite');
    mdb = openDatabase(file, { sqliteDriver: driver });
    db = mdb.db.withTables<{ t: { id: number; v: string } }>();
    await sql`create table t (id integer primary key, v text not null unique)`.execute(db);
    other = new Database(file);
    other.exec('PRAGMA busy_timeout = 5000');
  });

  after(async () => {
    other.close();
    await mdb.close();
    rmSync(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    await db.deleteFrom('t').execute();
  });

  test('concurrent writes all land, each with its own result', async () => {
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => db.insertInto('t').values({ id: i + 1, v: `v${i}` }).executeTakeFirst()));
    assert.deepEqual(
      results.map((r) => Number(r.insertId)),
      Array.from({ length: 50 }, (_, i) => i + 1),
    );
    assert.equal(count(), 50);
  });

  test('a write is visible to another connection by the time its promise settles, and not before', async () => {
    let settled = false;
    const write = db
      .insertInto('t')
      .values({ id: 1, v: 'a' })
      .execute()
      .then(() => (settled = true));
    // Still in the same turn: nothing has run, so another process sees nothing and nobody was told.
    assert.equal(count(), 0);
    assert.equal(settled, false);
    await write;
    assert.equal(count(), 1);
  });

  test('a failing statement fails alone; the rest of its group commits', async () => {
    await db.insertInto('t').values({ id: 1, v: 'taken' }).execute();
    const outcomes = await Promise.allSettled([
      db.insertInto('t').values({ id: 2, v: 'b' }).execute(),
      db.insertInto('t').values({ id: 3, v: 'taken' }).execute(), // unique violation
      db.insertInto('t').values({ id: 4, v: 'd' }).execute(),
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /UNIQUE/);
    assert.deepEqual(
      (other.prepare('select id from t order by id').all() as { id: number }[]).map((r) => Number(r.id)),
      [1, 2, 4],
    );
  });

  test('a transaction that throws undoes only its own writes, not its neighbours in the group', async () => {
    const outcomes = await Promise.allSettled([
      db.insertInto('t').values({ id: 1, v: 'before' }).execute(),
      db.transaction().execute(async (trx) => {
        await trx.insertInto('t').values({ id: 2, v: 'inside' }).execute();
        const seen = await trx.selectFrom('t').select('v').where('id', '=', 2).executeTakeFirst();
        assert.equal(seen?.v, 'inside', 'a transaction reads its own writes');
        throw new Error('changed my mind');
      }),
      db.insertInto('t').values({ id: 3, v: 'after' }).execute(),
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.deepEqual(
      (other.prepare('select v from t order by id').all() as { v: string }[]).map((r) => r.v),
      ['before', 'after'],
    );
  });

  test('transactions in one group are applied in order and each commits with the group', async () => {
    const txs = Array.from({ length: 10 }, (_, i) =>
      db.transaction().execute(async (trx) => {
        const n = await trx.selectFrom('t').select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
        await trx.insertInto('t').values({ id: i + 1, v: `seen ${Number(n.n)}` }).execute();
        return Number(n.n);
      }),
    );
    assert.deepEqual(await Promise.all(txs), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 'each transaction saw the ones before it');
    assert.equal(count(), 10);
  });

  test('a read does not see writes that nobody has been told about yet', async () => {
    await db.insertInto('t').values({ id: 1, v: 'committed' }).execute();
    const pending = db.updateTable('t').set({ v: 'pending' }).where('id', '=', 1).execute();
    const read = await db.selectFrom('t').select('v').where('id', '=', 1).executeTakeFirst();
    assert.equal(read?.v, 'committed');
    await pending;
    assert.equal((await db.selectFrom('t').select('v').where('id', '=', 1).executeTakeFirst())?.v, 'pending');
  });

  test('another connection on this thread writes between groups without waiting for a lock', async () => {
    const t0 = Date.now();
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        await db.insertInto('t').values({ id: i * 2 + 1, v: `mine ${i}` }).execute();
        other.prepare('insert into t (id, v) values (?, ?)').run(i * 2 + 2, `other ${i}`);
      }),
    );
    assert.equal(count(), 40);
    assert.ok(Date.now() - t0 < 4000, 'no writer sat out a busy timeout');
  });
});
