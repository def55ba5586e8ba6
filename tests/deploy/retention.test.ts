/**
 * Retention: the sweep deletes exactly the jobs that ended longer ago than their key's policy (the
 * default, a per-key number of days by name or id, or "forever"), with their images, inputs, events
 * and webhook rows; the scheduler runs it once per interval across processes through a database
 * lease; /ready reports low disk for local storage. On SQLite and, when available, Postgres.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { pino } from 'pino';
import { newImageId, newJobId } from '../../src/core/ids.ts';
import type { NewJob } from '../../src/core/job.ts';
import { loadConfig } from '../../src/config/load.ts';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { migrate, openDatabase } from '../../src/store/database.ts';
import type { MetadataDb } from '../../src/store/database.ts';
import type { Database } from '../../src/store/schema.ts';
import { SqlJobStore } from '../../src/store/sql-job-store.ts';
import { SqlKeyStore } from '../../src/store/sql-key-store.ts';
import { LocalStorage } from '../../src/storage/local-storage.ts';
import { DAY_MS, retentionEnabled, runRetention } from '../../src/retention/retention.ts';
import type { RetentionConfig } from '../../src/retention/retention.ts';
import { DbLease } from '../../src/retention/lease.ts';
import { RetentionScheduler } from '../../src/retention/scheduler.ts';
import { startPostgres } from '../support/postgres.ts';
import type { TestPostgres } from '../support/postgres.ts';
import { startEasel } from '../support/easel.ts';

const silent = pino({ level: 'silent' });
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const retention = (over: Partial<RetentionConfig> = {}): RetentionConfig =>
  loadConfig({ env: {}, overrides: { retention: over } }).retention;

interface Target {
  url: string;
  cleanup(): Promise<void>;
}

const pg: TestPostgres | undefined = await startPostgres();

function defineSuite(name: string, target: () => Promise<Target>, skip?: string): void {
  describe(name, { skip }, () => {
    let t: Target;
    let mdb: MetadataDb;
    let store: SqlJobStore;
    let keys: SqlKeyStore;
    let dir: string;
    let storage: LocalStorage;

    before(async () => {
      t = await target();
      mdb = openDatabase(t.url);
      await migrate(mdb);
      store = new SqlJobStore(mdb);
      keys = new SqlKeyStore(mdb);
      dir = mkdtempSync(join(tmpdir(), 'easel-retention-'));
      storage = new LocalStorage({ dir, publicBaseUrl: 'http://127.0.0.1:1', signingSecret: 'x'.repeat(32) });
    });
    after(async () => {
      await mdb?.close();
      await t?.cleanup();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    /** A job of `keyId` that ended `ageMs` ago (`status`), with `n` images and optional inputs, events and a webhook delivery. */
    async function makeJob(keyId: string, ageMs: number, opts: { status?: 'succeeded' | 'failed' | 'running'; n?: number; inputs?: boolean } = {}) {
      const id = newJobId();
      const status = opts.status ?? 'succeeded';
      const n = opts.n ?? 1;
      const inputImages = opts.inputs ? [`inputs/${id}/0.png`, `inputs/${id}/1.png`] : undefined;
      const mask = opts.inputs ? `inputs/${id}/mask.png` : undefined;
      const job: NewJob = {
        id,
        keyId,
        kind: opts.inputs ? 'edit' : 'generation',
        priority: 'normal',
        model: 'test-model',
        request: { prompt: 'p', n, size: { width: 8, height: 8 }, responseFormat: 'url', outputFormat: 'png', inputImages, mask },
        metadata: null,
        webhookUrl: 'https://hooks.example.com/x',
        idempotencyKey: null,
      };
      await store.createJob(job);
      for (const k of [...(inputImages ?? []), ...(mask ? [mask] : [])]) await storage.put(k, PNG, 'image/png');
      const started = await store.startAttempt(id, 'standin');
      assert.ok(started);
      const keysOut: string[] = [];
      if (status === 'succeeded') {
        const images = [];
        for (let i = 0; i < n; i++) {
          const storageKey = `images/${id}/${i}.png`;
          await storage.put(storageKey, PNG, 'image/png');
          keysOut.push(storageKey);
          images.push({ id: newImageId(), jobId: id, keyId, index: i, storageKey, mediaType: 'image/png', width: 8, height: 8, bytes: PNG.length, sha256: 'ab'.repeat(32), revisedPrompt: null, createdAt: new Date() });
        }
        assert.ok(await store.completeJob(id, 1, { result: { images: images.map((im) => ({ imageId: im.id })) }, images, costUsd: null }));
      } else if (status === 'failed') {
        assert.ok(await store.failJob(id, 1, { code: 'backend_error', message: 'x' }));
      }
      const finishedAt = Date.now() - ageMs;
      if (status !== 'running') await mdb.db.updateTable('jobs').set({ finished_at: finishedAt }).where('id', '=', id).execute();
      else await mdb.db.updateTable('jobs').set({ started_at: finishedAt, created_at: finishedAt }).where('id', '=', id).execute();
      const now = Date.now();
      await mdb.db.insertInto('job_events').values({ job_id: id, event_id: 1, type: 'partial_image', data: '{}', created_at: now }).execute();
      const deliveryId = `msg_${id}`;
      await mdb.db
        .insertInto('webhook_deliveries')
        .values({ id: deliveryId, job_id: id, event_type: `image.job.${status}`, url: 'https://hooks.example.com/x', payload: '{}', status: 'delivered', attempts: 1, next_attempt_at: now, created_at: now, updated_at: now })
        .execute();
      await mdb.db.insertInto('webhook_attempts').values({ delivery_id: deliveryId, attempt: 1, at: now, status_code: 200, duration_ms: 3 }).execute();
      return { id, keys: [...keysOut, ...(inputImages ?? []), ...(mask ? [mask] : [])] };
    }

    // Any table and column by name: the typed builder wants to know them, so plain SQL.
    const rowsOf = async (table: keyof Database, column: string, id: string) =>
      (await sql`select 1 from ${sql.table(table)} where ${sql.ref(column)} = ${id}`.execute(mdb.db)).rows.length;

    test('deletes exactly the expired jobs of each policy, with every row and object they own', async () => {
      const a = (await createApiKey(keys, { name: 'default-policy' })).key;
      const b = (await createApiKey(keys, { name: 'short-lived' })).key;
      const c = (await createApiKey(keys, { name: 'keep-forever' })).key;
      const config = retention({ days: 30, keys: { 'short-lived': 1, [c.id]: null, 'no-such-key': 5 }, batchSize: 2 });
      assert.ok(retentionEnabled(config));

      const expired = [
        await makeJob(a.id, 40 * DAY_MS, { n: 2 }),
        await makeJob(a.id, 31 * DAY_MS, { status: 'failed' }),
        await makeJob(a.id, 45 * DAY_MS, { inputs: true }),
        await makeJob(b.id, 2 * DAY_MS),
        await makeJob(b.id, 29 * DAY_MS, { n: 3 }),
      ];
      const kept = [
        await makeJob(a.id, 29 * DAY_MS),
        await makeJob(a.id, 40 * DAY_MS, { status: 'running' }),
        await makeJob(b.id, 0.5 * DAY_MS),
        await makeJob(c.id, 400 * DAY_MS, { n: 2 }),
      ];

      const result = await runRetention({ mdb, storage, config, log: silent });
      assert.equal(result.jobs, expired.length);
      assert.equal(result.images, 2 + 0 + 1 + 1 + 3);
      assert.equal(result.objects, expired.reduce((s, j) => s + j.keys.length, 0));
      assert.deepEqual(
        result.policies.map((p) => [p.policy, p.jobs]),
        [
          [b.id, 2],
          ['default', 3],
        ],
      );
      assert.equal(result.interrupted, false);

      for (const j of expired) {
        assert.equal(await store.getJob(j.id), undefined, `${j.id} deleted`);
        for (const [table, column] of [['images', 'job_id'], ['job_events', 'job_id'], ['webhook_deliveries', 'job_id'], ['webhook_attempts', 'delivery_id']] as const) {
          assert.equal(await rowsOf(table, column, column === 'delivery_id' ? `msg_${j.id}` : j.id), 0, `${table} rows of ${j.id}`);
        }
        for (const k of j.keys) assert.equal(await storage.get(k), undefined, `${k} deleted`);
        assert.equal(existsSync(join(dir, 'images', j.id)), false, 'the job folder is gone');
        assert.equal(existsSync(join(dir, 'inputs', j.id)), false, 'the inputs folder is gone');
      }
      for (const j of kept) {
        assert.ok(await store.getJob(j.id), `${j.id} kept`);
        assert.equal(await rowsOf('webhook_attempts', 'delivery_id', `msg_${j.id}`), 1);
        for (const k of j.keys) assert.ok(await storage.get(k), `${k} kept`);
      }

      // A second run finds nothing more.
      const again = await runRetention({ mdb, storage, config, log: silent });
      assert.equal(again.jobs, 0);
      // Without any policy, nothing is scheduled at all.
      assert.equal(retentionEnabled(retention({})), false);
      assert.equal(retentionEnabled(retention({ keys: { x: null } })), false);
      assert.equal(retentionEnabled(retention({ keys: { x: 3 } })), true);
    });

    test('the lease: one holder at a time, only when due; a lapsed lease is taken over', async () => {
      const one = new DbLease(mdb, 'test-task', 'one');
      const two = new DbLease(mdb, 'test-task', 'two');
      const now = Date.now();
      const [r1, r2] = await Promise.all([one.tryAcquireDue(10_000, 60_000, now), two.tryAcquireDue(10_000, 60_000, now)]);
      assert.equal(Number(r1) + Number(r2), 1, 'exactly one took it');
      const [holder, other] = r1 ? [one, two] : [two, one];
      assert.equal(await other.renew(10_000), false, 'the other holds nothing');
      assert.equal(await holder.renew(10_000), true);
      await holder.release({ ok: true });
      // Released but not due: nobody runs it again within the interval.
      assert.equal(await other.tryAcquireDue(10_000, 60_000), false);
      // Due again later.
      assert.equal(await other.tryAcquireDue(10_000, 60_000, now + 61_000), true);
      // Held (not released) by `other`, whose lease lapses at now + 71 s: `holder` waits for that.
      assert.equal(await holder.tryAcquireDue(10_000, 1, now + 70_000), false);
      assert.equal(await holder.tryAcquireDue(10_000, 1, now + 72_000), true);
      assert.equal(await other.renew(10_000), false, 'the lapsed holder lost it');
      const row = await holder.read();
      assert.equal(row?.owner, holder.owner);
    });

    test('schedulers in several processes: one sweep per interval, whoever ticks first', async () => {
      const k = (await createApiKey(keys, { name: 'sched' })).key;
      const config = retention({ keys: { sched: 1 }, intervalSeconds: 0.3 });
      await mdb.db.deleteFrom('leases').where('name', '=', 'retention').execute();
      const schedulers = [0, 1, 2].map(() => new RetentionScheduler({ mdb, storage, config, log: silent }));
      try {
        const old = await makeJob(k.id, 2 * DAY_MS);
        const results = await Promise.all(schedulers.map((s) => s.tick()));
        const ran = results.filter((r) => r !== undefined);
        assert.equal(ran.length, 1, 'exactly one scheduler ran the sweep');
        assert.equal(ran[0]!.jobs, 1);
        assert.equal(await store.getJob(old.id), undefined);
        // Not due again at once…
        assert.deepEqual(await Promise.all(schedulers.map((s) => s.tick())), [undefined, undefined, undefined]);
        const row = await schedulers[0]!.lease.read();
        assert.equal(row?.owner, null, 'released after the run');
        assert.equal(JSON.parse(row!.last_result!).jobs, 1);
        // …but after the interval.
        await new Promise((r) => setTimeout(r, 350));
        const later = await makeJob(k.id, 3 * DAY_MS);
        const second = (await Promise.all(schedulers.map((s) => s.tick()))).filter((r) => r !== undefined);
        assert.equal(second.length, 1);
        assert.equal(second[0]!.jobs, 1);
        assert.equal(await store.getJob(later.id), undefined);
      } finally {
        await Promise.all(schedulers.map((s) => s.stop()));
      }
    });
  });
}

defineSuite('retention on SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-retention-db-'));
  return { url: join(dir, 'easel.db'), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

defineSuite(
  'retention on Postgres',
  async () => ({ url: pg!.url, cleanup: async () => pg!.stop() }),
  pg ? undefined : 'no Postgres binaries were found (set CI to make this a failure)',
);

describe('readiness and the worker role', () => {
  test('/ready fails on low disk for local storage, naming storage.minFreeBytes', async () => {
    const low = await startEasel({ overrides: { storage: { minFreeBytes: Number.MAX_SAFE_INTEGER } } });
    try {
      const res = await fetch(`${low.url}/ready`);
      assert.equal(res.status, 503);
      const body = (await res.json()) as any;
      assert.equal(body.checks.disk.ok, false);
      // Which setting and how much, but not the path (anyone may read /ready).
      assert.match(body.checks.disk.message, /^low disk: \d+ MiB free, below storage\.minFreeBytes/);
    } finally {
      await low.close();
    }
    const fine = await startEasel({ overrides: { storage: { minFreeBytes: 1024 } } });
    try {
      const body = (await (await fetch(`${fine.url}/ready`)).json()) as any;
      assert.deepEqual(body.checks.disk, { ok: true });
    } finally {
      await fine.close();
    }
  });

  test('worker processes schedule retention; API-only processes do not', async () => {
    const api = await startEasel({ roles: { api: true, worker: false }, overrides: { retention: { days: 7 } } });
    const both = await startEasel({ overrides: { retention: { days: 7, intervalSeconds: 1 } } });
    try {
      assert.equal(api.runtime.retention, undefined);
      assert.ok(both.runtime.retention);
      // The first tick comes within a second of start; the lease row records the run.
      const deadline = Date.now() + 5_000;
      let row = await both.runtime.retention.lease.read();
      while (!row?.last_finished_at && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        row = await both.runtime.retention.lease.read();
      }
      assert.ok(row?.last_finished_at, 'the scheduler ran once');
      assert.equal(JSON.parse(row.last_result!).jobs, 0);
    } finally {
      await api.close();
      await both.close();
    }
  });
});
