/**
 * One behaviour suite for the job queue, run against the embedded queue on SQLite (a temp file) and on
 * Postgres, and against BullMQ on a throwaway redis-server. Postgres and Redis suites skip with a
 * message when their servers are not installed, unless CI is set.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import type { Priority } from '../../src/core/job.ts';
import { BullmqQueue } from '../../src/queue/bullmq-queue.ts';
import { EmbeddedQueue } from '../../src/queue/embedded-queue.ts';
import type { Delivery, JobQueue, QueueConsumer } from '../../src/queue/job-queue.ts';
import { migrate, openDatabase } from '../../src/store/database.ts';
import type { MetadataDb } from '../../src/store/database.ts';
import { startPostgres } from '../support/postgres.ts';
import { startRedis } from '../support/redis.ts';

interface QueueOpts {
  visibilityTimeoutMs?: number;
  /** A queue on its own connection, as another process would have (no in-process wake-ups). */
  separateConnection?: boolean;
}

/** An isolated namespace: every queue made from one scope sees the same messages. */
interface Scope {
  queue(opts?: QueueOpts): JobQueue;
  /** Takes a held message's lease away from its consumer behind the queue's back. */
  stealLease(jobId: string): Promise<void>;
}

interface Backing {
  scope(): Promise<Scope>;
  /** Restarts the backing server, keeping its data (BullMQ only). */
  restart?: () => Promise<void>;
  close(): Promise<void>;
}

const DEFAULT_VISIBILITY_MS = 3_000;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) {
      const last = backgroundErrors.at(-1);
      const state = (await queueState?.().catch((err) => `unreadable: ${(err as Error).message}`)) ?? '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last queue error: ${(last as Error)?.message ?? String(last)})` : ''}${state ? `; queue: ${state}` : ''}`);
    }
    await sleep(10);
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const newId = () => `job_${randomBytes(8).toString('hex')}`;

interface Seen {
  jobId: string;
  priority: Priority;
  deliveryCount: number;
  signal: AbortSignal;
  at: number;
}

function record(into: Seen[], d: Delivery): void {
  into.push({ jobId: d.message.jobId, priority: d.message.priority, deliveryCount: d.deliveryCount, signal: d.signal, at: Date.now() });
}

function jobQueueSuite(name: string, makeBacking: () => Promise<Backing>): void {
  describe(name, () => {
    let backing: Backing;
    let scope: Scope;
    let queues: JobQueue[] = [];
    let consumers: QueueConsumer[] = [];

    /** A queue in this test's scope, closed after the test. */
    const queue = (opts?: QueueOpts): JobQueue => {
      const q = scope.queue(opts);
      queues.push(q);
      return q;
    };
    const consume = (q: JobQueue, handler: (d: Delivery) => Promise<void>, concurrency = 1): QueueConsumer => {
      const c = q.consume(handler, { concurrency });
      consumers.push(c);
      return c;
    };

    before(async () => {
      backing = await makeBacking();
      scope = await backing.scope();
    });
    after(async () => {
      await backing?.close();
    });
    afterEach(async () => {
      await Promise.allSettled(consumers.map((c) => c.stop(0)));
      await Promise.allSettled(queues.map((q) => q.close()));
      consumers = [];
      queues = [];
      scope = await backing.scope();
    });

    test('delivers by priority, FIFO within a priority', async () => {
      const q = queue();
      const order: [string, Priority][] = [
        ['low-1', 'low'],
        ['normal-1', 'normal'],
        ['high-1', 'high'],
        ['normal-2', 'normal'],
        ['high-2', 'high'],
        ['low-2', 'low'],
        ['normal-3', 'normal'],
      ];
      const ids = new Map(order.map(([label]) => [label, newId()]));
      for (const [label, priority] of order) await q.enqueue({ jobId: ids.get(label)!, priority });
      const seen: Seen[] = [];
      consume(q, async (d) => record(seen, d), 1);
      await waitFor(() => seen.length === order.length, 'all messages');
      const labels = new Map([...ids].map(([label, id]) => [id, label]));
      assert.deepEqual(
        seen.map((s) => labels.get(s.jobId)),
        ['high-1', 'high-2', 'normal-1', 'normal-2', 'normal-3', 'low-1', 'low-2'],
      );
      assert.deepEqual(
        seen.map((s) => s.priority),
        ['high', 'high', 'normal', 'normal', 'normal', 'low', 'low'],
      );
      assert.ok(seen.every((s) => s.deliveryCount === 1));
    });

    test('enqueueing an id that is waiting or active is a no-op', async () => {
      const q = queue();
      const a = newId();
      await q.enqueue({ jobId: a, priority: 'normal' });
      await q.enqueue({ jobId: a, priority: 'high' });
      assert.deepEqual(await q.counts(), { waiting: 1, active: 0 });

      const seen: Seen[] = [];
      const release = deferred();
      consume(q, async (d) => {
        record(seen, d);
        await release.promise;
      });
      await waitFor(() => seen.length === 1, 'first delivery');
      await q.enqueue({ jobId: a, priority: 'normal' }); // active now
      assert.deepEqual(await q.counts(), { waiting: 0, active: 1 });
      release.resolve();
      await waitFor(async () => (await q.counts()).active === 0, 'ack');
      await sleep(150);
      assert.equal(seen.length, 1, 'delivered once');
      assert.deepEqual(await q.counts(), { waiting: 0, active: 0 });

      // Once acknowledged, the id may be enqueued again.
      await q.enqueue({ jobId: a, priority: 'normal' });
      await waitFor(() => seen.length === 2, 're-enqueued message');
      assert.equal(seen[1]!.deliveryCount, 1);
    });

    test('runs at most `concurrency` handlers at once', async () => {
      const q = queue();
      const ids = Array.from({ length: 24 }, newId);
      for (const jobId of ids) await q.enqueue({ jobId, priority: 'normal' });
      let running = 0;
      let max = 0;
      const done = new Set<string>();
      consume(
        q,
        async (d) => {
          running++;
          max = Math.max(max, running);
          await sleep(25);
          running--;
          done.add(d.message.jobId);
        },
        4,
      );
      await waitFor(() => done.size === ids.length, 'all messages');
      assert.ok(max <= 4, `at most 4 at once, saw ${max}`);
      assert.ok(max >= 3, `uses the concurrency it has, saw only ${max}`);
    });

    test('a handler that resolves acknowledges (the message is gone)', async () => {
      const q = queue();
      const a = newId();
      await q.enqueue({ jobId: a, priority: 'normal' });
      const seen: Seen[] = [];
      consume(q, async (d) => record(seen, d));
      // Counts settle once the completion is reported (on Redis the fair waiting room hears of it a
      // few milliseconds later, together with other completions).
      await waitFor(async () => seen.length === 1 && JSON.stringify(await q.counts()) === JSON.stringify({ waiting: 0, active: 0 }), 'ack', 2_000);
      assert.equal(await q.remove(a), false, 'nothing left to remove');
      await sleep(300);
      assert.equal(seen.length, 1, 'not delivered again');
    });

    test('a handler that throws has the message redelivered, deliveryCount 2', async () => {
      const q = queue();
      const a = newId();
      await q.enqueue({ jobId: a, priority: 'high' });
      const seen: Seen[] = [];
      consume(q, async (d) => {
        record(seen, d);
        if (d.deliveryCount === 1) throw new Error('transient failure');
      });
      await waitFor(() => seen.length === 2, 'redelivery');
      assert.deepEqual(
        seen.map((s) => [s.jobId, s.deliveryCount, s.priority]),
        [
          [a, 1, 'high'],
          [a, 2, 'high'],
        ],
      );
      assert.ok(seen[1]!.at - seen[0]!.at <= 1_500, `redelivered within the retry delay (${seen[1]!.at - seen[0]!.at} ms)`);
      await waitFor(async () => (await q.counts()).active === 0, 'ack of the second delivery');
      assert.deepEqual(await q.counts(), { waiting: 0, active: 0 });
    });

    test('a long handler keeps its lease (heartbeat) and is not redelivered', async () => {
      const visibilityTimeoutMs = 600;
      const q = queue({ visibilityTimeoutMs });
      const other = queue({ visibilityTimeoutMs, separateConnection: true });
      const a = newId();
      await q.enqueue({ jobId: a, priority: 'normal' });
      const seen: Seen[] = [];
      consume(q, async (d) => {
        record(seen, d);
        await sleep(visibilityTimeoutMs * 3);
      });
      await waitFor(() => seen.length === 1, 'delivery to the long handler');
      // Another consumer stands ready to take the message should the lease lapse.
      consume(other, async (d) => record(seen, d), 2);
      await sleep(visibilityTimeoutMs);
      assert.deepEqual(await q.counts(), { waiting: 0, active: 1 });
      await waitFor(async () => seen.length >= 1 && (await q.counts()).active === 0 && (await q.counts()).waiting === 0, 'ack', 8_000);
      assert.equal(seen.length, 1, `delivered once, got ${seen.map((s) => s.deliveryCount).join(',')}`);
      assert.equal(seen[0]!.signal.aborted, false, 'lease never lost');
    });

    test('delivery.signal aborts when the lease is lost', async () => {
      const q = queue({ visibilityTimeoutMs: 600 });
      const a = newId();
      await q.enqueue({ jobId: a, priority: 'normal' });
      const seen: Seen[] = [];
      consume(q, async (d) => {
        record(seen, d);
        await new Promise<void>((_, reject) => d.signal.addEventListener('abort', () => reject(d.signal.reason)));
      });
      await waitFor(() => seen.length === 1, 'delivery');
      await sleep(100);
      assert.equal(seen[0]!.signal.aborted, false);
      await scope.stealLease(a);
      await waitFor(() => seen[0]!.signal.aborted, 'the signal to abort', 3_000);
    });

    test('a consumer that dies: its message comes back after the visibility timeout, deliveryCount 2', async () => {
      const visibilityTimeoutMs = 1_000;
      const survivor = queue({ visibilityTimeoutMs });
      const doomed = queue({ visibilityTimeoutMs, separateConnection: true });
      const a = newId();
      await survivor.enqueue({ jobId: a, priority: 'normal' });

      const doomedSeen: Seen[] = [];
      consume(doomed, async (d) => {
        record(doomedSeen, d);
        await new Promise(() => {}); // hangs: the process "dies" mid-job
      });
      await waitFor(() => doomedSeen.length === 1, 'first delivery');
      assert.equal(doomedSeen[0]!.deliveryCount, 1);

      const seen: Seen[] = [];
      consume(survivor, async (d) => record(seen, d), 2);
      await sleep(100);
      assert.equal(seen.length, 0, 'not redelivered while the lease is alive');

      const diedAt = Date.now();
      await doomed.close(); // heartbeats stop, nothing is handed back
      assert.equal(doomedSeen[0]!.signal.aborted, true, 'the dead consumer’s signal is aborted');
      await waitFor(() => seen.length === 1, 'redelivery after the visibility timeout', visibilityTimeoutMs * 4 + 2_000);
      const after = seen[0]!.at - diedAt;
      assert.equal(seen[0]!.jobId, a);
      assert.equal(seen[0]!.deliveryCount, 2);
      assert.ok(after >= 150, `waited for the lease to expire (${after} ms)`);
      console.log(`[${name}] dead consumer's message redelivered ${after} ms after it died (visibility ${visibilityTimeoutMs} ms)`);
      await waitFor(async () => (await survivor.counts()).active === 0, 'ack');
    });

    test('stop(grace) waits for handlers that finish in time', async () => {
      const q = queue();
      const a = newId();
      await q.enqueue({ jobId: a, priority: 'normal' });
      const seen: Seen[] = [];
      let finished = false;
      const c = consume(q, async (d) => {
        record(seen, d);
        await sleep(150);
        finished = true;
      });
      await waitFor(() => seen.length === 1, 'delivery');
      const t0 = Date.now();
      await c.stop(2_000);
      assert.ok(finished, 'handler finished before stop resolved');
      assert.ok(Date.now() - t0 < 1_500, 'stop did not wait for the whole grace');
      assert.equal(seen[0]!.signal.aborted, false);
      assert.deepEqual(await q.counts(), { waiting: 0, active: 0 }, 'acknowledged');
    });

    test('stop(grace) takes nothing new, then hands in-flight messages back at once', async () => {
      const q = queue({ visibilityTimeoutMs: 30_000 }); // redelivery must not wait for expiry
      const a = newId();
      await q.enqueue({ jobId: a, priority: 'normal' });
      const seen: Seen[] = [];
      const c = consume(q, async (d) => {
        record(seen, d);
        await new Promise<void>((_, reject) => d.signal.addEventListener('abort', () => reject(d.signal.reason)));
      });
      await waitFor(() => seen.length === 1, 'delivery');

      const t0 = Date.now();
      const stopping = c.stop(300);
      const b = newId();
      await q.enqueue({ jobId: b, priority: 'high' });
      await stopping;
      const took = Date.now() - t0;
      assert.ok(took >= 250 && took < 2_500, `stop waited about the grace (${took} ms)`);
      assert.equal(seen[0]!.signal.aborted, true, 'in-flight signal aborted after the grace');
      assert.equal(seen.length, 1, 'the stopped consumer took nothing new');
      assert.deepEqual(await q.counts(), { waiting: 2, active: 0 }, 'handed back, not held until expiry');

      const next: Seen[] = [];
      const t1 = Date.now();
      consume(q, async (d) => record(next, d), 2);
      await waitFor(() => next.length === 2, 'delivery to a new consumer', 3_000);
      assert.ok(Date.now() - t1 < 2_000, 'taken at once by the new consumer');
      const byId = new Map(next.map((s) => [s.jobId, s]));
      assert.equal(byId.get(a)?.deliveryCount, 2);
      assert.equal(byId.get(b)?.deliveryCount, 1);
    });

    test('remove() removes a waiting message, not an active or absent one', async () => {
      const q = queue();
      const a = newId();
      const b = newId();
      await q.enqueue({ jobId: a, priority: 'normal' });
      await q.enqueue({ jobId: b, priority: 'normal' });
      const seen: Seen[] = [];
      const release = deferred();
      consume(q, async (d) => {
        record(seen, d);
        await release.promise;
      });
      await waitFor(() => seen.length === 1, 'delivery of the first');
      assert.equal(seen[0]!.jobId, a);
      assert.equal(await q.remove(a), false, 'active');
      assert.equal(await q.remove(b), true, 'waiting');
      assert.equal(await q.remove(b), false, 'already gone');
      assert.equal(await q.remove(newId()), false, 'never existed');
      assert.deepEqual(await q.counts(), { waiting: 0, active: 1 });
      release.resolve();
      await waitFor(async () => (await q.counts()).active === 0, 'ack');
      await sleep(150);
      assert.deepEqual(
        seen.map((s) => s.jobId),
        [a],
        'the removed message is never delivered',
      );
    });

    test('counts() reports waiting and active', async () => {
      const q = queue();
      assert.deepEqual(await q.counts(), { waiting: 0, active: 0 });
      for (let i = 0; i < 3; i++) await q.enqueue({ jobId: newId(), priority: 'low' });
      assert.deepEqual(await q.counts(), { waiting: 3, active: 0 });
      const release = deferred();
      let started = 0;
      consume(q, async () => {
        started++;
        await release.promise;
      });
      await waitFor(() => started === 1, 'delivery');
      assert.deepEqual(await q.counts(), { waiting: 2, active: 1 });
      release.resolve();
      await waitFor(async () => {
        const c = await q.counts();
        return c.waiting === 0 && c.active === 0;
      }, 'drain');
      assert.equal(started, 3);
    });

    test('ping() succeeds while the store is up', async () => {
      await queue().ping();
    });

    test('two consumers on separate connections share the work without duplicates', async () => {
      const q1 = queue();
      const q2 = queue({ separateConnection: true });
      const ids = Array.from({ length: 300 }, newId);
      const seen: Seen[] = [];
      consume(q1, async (d) => record(seen, d), 8);
      consume(q2, async (d) => record(seen, d), 8);
      await Promise.all([
        (async () => {
          for (const jobId of ids.slice(0, 150)) await q1.enqueue({ jobId, priority: 'normal' });
        })(),
        (async () => {
          for (const jobId of ids.slice(150)) await q2.enqueue({ jobId, priority: 'normal' });
        })(),
      ]);
      await waitFor(() => seen.length >= ids.length, 'all messages', 15_000);
      await sleep(200);
      assert.equal(seen.length, ids.length, 'each message delivered exactly once');
      assert.deepEqual(new Set(seen.map((s) => s.jobId)), new Set(ids));
    });

    test('throughput smoke: 2,000 messages at concurrency 32', async () => {
      const q = queue();
      const total = 2_000;
      const ids = Array.from({ length: total }, newId);
      let handled = 0;
      let allDone!: () => void;
      const done = new Promise<void>((r) => (allDone = r));
      const t0 = performance.now();
      consume(
        q,
        async () => {
          await Promise.resolve();
          if (++handled === total) allDone();
        },
        32,
      );
      // Enqueued from 16 concurrent "requests", as an API under load would.
      let next = 0;
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < ids.length) await q.enqueue({ jobId: ids[next++]!, priority: next % 3 === 0 ? 'high' : 'normal' });
        }),
      );
      const enqueuedMs = performance.now() - t0;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([done, new Promise<void>((r) => (timer = setTimeout(r, 30_000)))]);
      clearTimeout(timer);
      const totalMs = performance.now() - t0;
      assert.equal(handled, total, `all ${total} handled (got ${handled})`);
      await waitFor(async () => (await q.counts()).active === 0, 'last acks');
      const rate = (n: number, ms: number) => Math.round((n * 1000) / ms);
      console.log(
        `[${name}] throughput: ${total} enqueued in ${enqueuedMs.toFixed(0)} ms (${rate(total, enqueuedMs)}/s); ` +
          `end to end ${totalMs.toFixed(0)} ms (${rate(total, totalMs)} jobs/s) at concurrency 32`,
      );
    });

    test('survives a restart of the backing server while messages wait', async (t) => {
      if (!backing.restart) {
        t.skip('needs a server this suite may restart (only the private redis-server)');
        return;
      }
      const q = queue();
      const first = Array.from({ length: 50 }, newId);
      const seen: Seen[] = [];
      const gate = deferred();
      // A consumer running across the restart: 4 messages active (held at the gate), the rest waiting.
      consume(
        q,
        async (d) => {
          record(seen, d);
          await gate.promise;
        },
        4,
      );
      for (const jobId of first) await q.enqueue({ jobId, priority: 'normal' });
      await waitFor(() => seen.length === 4, 'the consumer to fill up');
      assert.deepEqual(await q.counts(), { waiting: 46, active: 4 });

      await backing.restart();

      const later = Array.from({ length: 20 }, newId);
      for (const jobId of later) await q.enqueue({ jobId, priority: 'high' }); // the producer reconnected
      gate.resolve();
      const all = new Set([...first, ...later]);
      await waitFor(() => new Set(seen.map((s) => s.jobId)).size === all.size, 'every message after the restart', 15_000);
      await waitFor(async () => {
        const c = await q.counts();
        return c.waiting === 0 && c.active === 0;
      }, 'the queue to drain');
      assert.deepEqual(new Set(seen.map((s) => s.jobId)), all);
      await q.ping();
    });
  });
}

// --- Targets --------------------------------------------------------------------------------------

/** Background errors (a renewal that fails after a stolen lease, a restart's dropped connections). */
const backgroundErrors: unknown[] = [];
/** What the suite running now can tell about its queue's rows when a wait times out (embedded queue). */
let queueState: (() => Promise<string>) | undefined;
const quiet = (err: unknown) => {
  if (process.env.EASEL_TEST_VERBOSE) console.warn('queue background error:', err);
  backgroundErrors.push(err);
};

async function embeddedBacking(url: string, cleanup: () => Promise<void>): Promise<Backing> {
  const main = openDatabase(url);
  await migrate(main);
  const extra: MetadataDb[] = [];
  return {
    async scope() {
      await main.db.deleteFrom('queue_messages').execute();
      queueState = async () => {
        const now = Date.now();
        const rows = await main.db.selectFrom('queue_messages').selectAll().limit(10).execute();
        return JSON.stringify(rows.map((r) => ({ job: r.job_id, owner: r.lease_owner, leaseMs: r.lease_until == null ? null : Number(r.lease_until) - now, availableMs: Number(r.available_at) - now, deliveries: r.delivery_count })));
      };
      return {
        queue(opts = {}) {
          let db = main;
          if (opts.separateConnection) {
            db = openDatabase(url);
            extra.push(db);
          }
          return new EmbeddedQueue({
            db,
            visibilityTimeoutMs: opts.visibilityTimeoutMs ?? DEFAULT_VISIBILITY_MS,
            pollIntervalMs: 50,
            onError: quiet,
          });
        },
        async stealLease(jobId) {
          await main.db
            .updateTable('queue_messages')
            .set({ lease_owner: 'thief', lease_until: Date.now() + 60_000 })
            .where('job_id', '=', jobId)
            .execute();
        },
      };
    },
    async close() {
      await Promise.allSettled([main.close(), ...extra.map((d) => d.close())]);
      await cleanup();
    },
  };
}

jobQueueSuite('EmbeddedQueue on SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-queue-'));
  return embeddedBacking(`sqlite://${join(dir, 'easel.db')}`, async () => rmSync(dir, { recursive: true, force: true }));
});

// Started before the suites are defined so a suite can be skipped when its server is missing.
const postgres = await startPostgres();
if (postgres) {
  jobQueueSuite('EmbeddedQueue on Postgres', () => embeddedBacking(postgres.url, () => postgres.stop()));
} else {
  describe('EmbeddedQueue on Postgres', { skip: 'Postgres binaries (initdb, pg_ctl) not found; set CI to make this an error' }, () => {
    test('skipped', () => {});
  });
}

const redis = await startRedis();
if (redis) {
  let n = 0;
  const prefix = 'easel-test';
  jobQueueSuite('BullmqQueue on Redis', async () => {
    const admin = new Redis(redis.url, { maxRetriesPerRequest: null });
    return {
      async scope() {
        queueState = undefined;
        const queueName = `test-${++n}-${randomBytes(3).toString('hex')}`;
        return {
          queue: (opts = {}) =>
            new BullmqQueue({
              url: redis.url,
              prefix,
              queueName,
              visibilityTimeoutMs: opts.visibilityTimeoutMs ?? DEFAULT_VISIBILITY_MS,
              onError: quiet,
            }),
          async stealLease(jobId) {
            // Without its lock key the worker's next renewal fails.
            assert.equal(await admin.del(`${prefix}:${queueName}:${jobId}:lock`), 1);
          },
        };
      },
      // A shared server from EASEL_TEST_REDIS_URL is not ours to restart.
      restart: process.env.EASEL_TEST_REDIS_URL ? undefined : () => redis.restart(),
      async close() {
        admin.disconnect();
        await redis.stop();
      },
    };
  });
} else {
  describe('BullmqQueue on Redis', { skip: 'redis-server not found on PATH; set CI to make this an error' }, () => {
    test('skipped', () => {});
  });
}

describe('ping() when the backing store is unreachable', () => {
  test('EmbeddedQueue: the database is closed', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'easel-queue-'));
    const mdb = openDatabase(`sqlite://${join(dir, 'easel.db')}`);
    await migrate(mdb);
    const q = new EmbeddedQueue({ db: mdb, onError: quiet });
    await q.ping();
    await mdb.close();
    await assert.rejects(q.ping());
    await q.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('BullmqQueue: nothing listens on the port', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = createServer().listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as AddressInfo;
        srv.close(() => resolve(port));
      });
    });
    const q = new BullmqQueue({ url: `redis://127.0.0.1:${port}`, onError: quiet });
    const t0 = Date.now();
    await assert.rejects(q.ping());
    assert.ok(Date.now() - t0 < 5_000, 'fails fast');
    await q.close();
  });
});
