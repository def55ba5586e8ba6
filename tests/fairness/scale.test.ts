/**
 * Fair sharing on the scale-out stack, for real: one `easel api` and three `easel worker` processes
 * (one slot each) on Postgres and Redis (BullMQ behind the fair waiting room), with the OpenAI
 * stand-in taking a fixed time per job.
 *
 * Key A submits 300 jobs, then key B 10: each of B's jobs starts within a bounded number of A's
 * completions. Then a worker is SIGKILLed while A's jobs still run: every one of the 310 jobs still
 * ends exactly once (counted through Postgres: succeeded, one image row each), and the waiting room
 * is left empty (nothing waiting, moving or holding a running slot).
 *
 * Needs redis-server and the Postgres binaries; without them the file skips, unless CI is set.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import pg from 'pg';
import { standinBackendConfig } from '../support/easel.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { startPostgres } from '../support/postgres.ts';
import type { TestPostgres } from '../support/postgres.ts';
import { ProcessGroup, writeConfig } from '../support/processes.ts';
import type { EaselProcess } from '../support/processes.ts';
import { startRedis } from '../support/redis.ts';
import type { RedisServer } from '../support/redis.ts';
import { until } from '../support/until.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { completionsBeforeStart, percentile, submitMany } from './support.ts';
import type { JobTimes } from './support.ts';

const ADMIN_KEY = 'easel_sk_test_admin_key_0123456789abcdef';
const WORKERS = 3;
const SLOTS = WORKERS; // one job at a time per worker
const JOB_MS = 40;
const REDIS_PREFIX = `easel-fair-${randomBytes(4).toString('hex')}`;

const redis: RedisServer | undefined = await startRedis();
const pgdb: TestPostgres | undefined = redis ? await startPostgres() : undefined;
const missing = !redis ? 'redis-server was not found' : !pgdb ? 'no Postgres binaries were found' : undefined;
if (missing && process.env.CI) throw new Error(`fair sharing scale tests need Redis and Postgres, but ${missing}`);
if (missing) {
  await redis?.stop();
  process.stderr.write(`fair sharing scale tests skipped: ${missing} (set CI to make this a failure)\n`);
}
const skip = missing ? `${missing}; set CI to fail instead` : false;

describe('fair sharing on Redis + Postgres: 1 api + 3 worker processes', { concurrency: 1 }, () => {
  const procs = new ProcessGroup();
  let standin: OpenAIStandin;
  let pool: pg.Pool;
  let root: string;
  let configFile: string;
  let api: EaselProcess;
  let workers: EaselProcess[] = [];
  const secrets = new Map<string, string>();
  let seq = 0;

  const spawnRole = (role: 'api' | 'worker') => {
    const dataDir = join(root, `${role}-${++seq}`);
    mkdirSync(dataDir, { recursive: true });
    return procs.spawn(role, { configFile, dataDir, env: { DATABASE_URL: pgdb!.url, REDIS_URL: redis!.url, EASEL_ADMIN_KEY: ADMIN_KEY, LOG_LEVEL: 'warn' }, name: `${role}-${seq}` });
  };
  const times = async (ids: string[]): Promise<JobTimes[]> => {
    const { rows } = await pool.query('select id, key_id, status, created_at, started_at, finished_at, attempt from jobs where id = any($1)', [ids]);
    return rows.map((r) => ({ id: r.id, key: r.key_id, status: r.status, created: Number(r.created_at), started: r.started_at == null ? null : Number(r.started_at), finished: r.finished_at == null ? null : Number(r.finished_at), attempt: Number(r.attempt) }));
  };

  before(async () => {
    if (skip) return;
    standin = await startOpenAIStandin({ strict: false, latencyMs: JOB_MS, logRequests: false });
    pool = new pg.Pool({ connectionString: pgdb!.url, max: 2 });
    root = mkdtempSync(join(tmpdir(), 'easel-fair-scale-'));
    configFile = writeConfig(join(root, 'easel.yaml'), {
      server: { host: '127.0.0.1', port: 0 },
      redis: { prefix: REDIS_PREFIX },
      queue: { visibilityTimeoutSeconds: 2 },
      worker: { concurrency: 1, shutdownGraceSeconds: 1 },
      ...standinBackendConfig(standin),
    });
    [api, ...workers] = await Promise.all([spawnRole('api'), ...Array.from({ length: WORKERS }, () => spawnRole('worker'))]);
    for (const name of ['A', 'B']) {
      const res = await fetch(`${api.url}/v1/keys`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
      assert.equal(res.status, 201);
      secrets.set(name, ((await res.json()) as any).key);
    }
  });

  afterEach((t) => {
    if ('passed' in t && t.passed === false) process.stderr.write(`\nchild process output for failed test "${t.name}":\n${procs.logs()}\n`);
  });

  after(async () => {
    await procs.killAll();
    await pool?.end().catch(() => {});
    await standin?.close().catch(() => {});
    await pgdb?.stop().catch(() => {});
    await redis?.stop().catch(() => {});
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test('A queues 300, then B 10: B’s jobs start within a bounded number of A’s completions; a worker SIGKILLed mid-way loses and duplicates nothing', { timeout: 180_000, skip }, async () => {
    const a = await submitMany(api.url!, secrets.get('A')!, Array.from({ length: 300 }, (_, i) => `A #${i}`));
    const b = await submitMany(api.url!, secrets.get('B')!, Array.from({ length: 10 }, (_, i) => `B #${i}`), 1);
    const all = [...a, ...b];

    // B done (its bound checked below), A with most of its jobs still to run: kill a worker mid-job.
    // Calls are slowed first until all three workers (one job each) are inside one, so the victim
    // surely holds a job (at 40 ms a job it is between two often enough to miss).
    await until('B’s jobs to succeed', async () => (await times(b)).every((j) => j.status === 'succeeded'), 60_000, 100);
    standin.setLatency(5_000);
    await until('every worker inside a call', async () => standin.inFlight() === WORKERS, 10_000, 10);
    await sleep(200); // any call that began before the slow-down has ended by now
    await until('every worker inside a slowed call', async () => standin.inFlight() === WORKERS, 10_000, 10);
    const victim = workers[0]!;
    assert.equal((await victim.kill9()).signal, 'SIGKILL');
    standin.setLatency(JOB_MS);
    workers = [...workers.slice(1), await spawnRole('worker')];

    await until('310 jobs to end', async () => (await times(all)).every((j) => ['succeeded', 'failed', 'canceled'].includes(j.status)), 120_000, 250);
    const ended = await times(all);
    const aTimes = ended.filter((j) => a.includes(j.id));
    const bTimes = ended.filter((j) => b.includes(j.id));

    // The bound: B's i-th job waits for its share of turns (one of A's per B, plus a tie), plus what
    // the three slots were running and the one job per slot waiting in BullMQ when B arrived.
    const waits = completionsBeforeStart(aTimes, bTimes);
    const bound = (i: number) => 2 * (i + 1) + 2 * SLOTS + 1;
    waits.forEach((n, i) => assert.ok(n <= bound(i), `B#${i} started after ${n} of A's completions (bound ${bound(i)}); all: ${waits}`));
    const p95 = percentile(bTimes.map((j) => j.started! - j.created), 95);
    process.stderr.write(`[fair-share redis] B's waits in A completions: ${waits.join(' ')}; B's p95 wait ${p95} ms\n`);

    // Exactly once, through the store: every job succeeded, with exactly one image row.
    assert.deepEqual(ended.filter((j) => j.status !== 'succeeded').map((j) => `${j.id}: ${j.status}`), []);
    const { rows } = await pool.query<{ job_id: string; n: string }>('select job_id, count(*) as n from images where job_id = any($1) group by job_id', [all]);
    assert.equal(rows.length, 310, 'every job has its image');
    assert.deepEqual(rows.filter((r) => Number(r.n) !== 1), [], 'and only one');
    assert.ok(ended.some((j) => j.attempt >= 2), 'the victim’s job ran again elsewhere');

    // The room let go of everything: nothing waiting, half-moved, or holding a running slot.
    const client = new Redis(redis!.url);
    try {
      const base = `${REDIS_PREFIX}:images:fair:`;
      await until('the room to empty', async () => (await client.hlen(`${base}jobs`)) === 0, 10_000, 100);
      assert.equal(await client.zcard(`${base}waiting`), 0);
      assert.equal(await client.zcard(`${base}moving`), 0);
      assert.equal(await client.zcard(`${base}running`), 0);
    } finally {
      client.disconnect();
    }
  });
});
