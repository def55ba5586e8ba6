/**
 * The scale-out shape, for real: two `easel api` and two `easel worker` processes sharing Postgres
 * (metadata), Redis (BullMQ queue + job events) and S3 (s3rver; images behind presigned URLs),
 * configured the way a deployment is: the stack through environment variables, the backend through a
 * YAML file. Clients use the official `openai` SDK and plain HTTP; workers are SIGKILLed mid-job and
 * Redis is restarted under waiting jobs.
 *
 * Needs redis-server and the Postgres binaries; without them the file skips, unless CI is set.
 */
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import pg from 'pg';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { standinBackendConfig } from '../support/easel.ts';
import { startPostgres } from '../support/postgres.ts';
import type { TestPostgres } from '../support/postgres.ts';
import { startRedis } from '../support/redis.ts';
import type { RedisServer } from '../support/redis.ts';
import { startS3 } from '../support/s3.ts';
import type { TestS3 } from '../support/s3.ts';
import { BullmqQueue } from '../../src/queue/bullmq-queue.ts';
import { ProcessGroup, writeConfig } from '../support/processes.ts';
import type { EaselProcess } from '../support/processes.ts';
import { imageKey, jobIdOfKey } from '../../src/images/keys.ts';
import { until } from '../support/until.ts';

const ADMIN_KEY = 'easel_sk_test_admin_key_0123456789abcdef';
const VISIBILITY_S = 3;
const CONCURRENCY = 4;
const GRACE_S = 1;
const TERMINAL = ['succeeded', 'failed', 'canceled'];
/** A key prefix of this file's own, in case the Redis is shared (EASEL_TEST_REDIS_URL). */
const REDIS_PREFIX = `easel-scale-${randomBytes(4).toString('hex')}`;

// Redis first (cheap to find out), then Postgres. Unavailable means skip, except under CI, where the
// helpers throw instead.
const redis: RedisServer | undefined = await startRedis();
const pgdb: TestPostgres | undefined = redis ? await startPostgres() : undefined;
/** EASEL_TEST_REDIS_URL points at a server this file cannot restart or stop. */
const externalRedis = process.env.EASEL_TEST_REDIS_URL ? 'uses Redis restarts, not possible with EASEL_TEST_REDIS_URL' : false;
const missing = !redis ? 'redis-server was not found' : !pgdb ? 'no Postgres binaries were found' : undefined;
if (missing && process.env.CI) throw new Error(`scale-stack tests need Redis and Postgres, but ${missing}`);
if (missing) {
  await redis?.stop();
  process.stderr.write(`scale-stack tests skipped: ${missing} (set CI to make this a failure)\n`);
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47]);

/** Every test skips (and says why) when the stack is not available. */
const skip = missing ? `${missing}; set CI to fail instead` : false;

// Two suites side by side: the stack's (its tests in order) and a lone worker's that mostly waits.
describe('durability of the scale-out stack', { concurrency: 2 }, () => {
  describe('scale-out stack: 2 api + 2 worker processes on Postgres, Redis/BullMQ and S3', { concurrency: 1 }, () => {
    const procs = new ProcessGroup();
    let standin: OpenAIStandin;
    let s3: TestS3;
    let s3client: S3Client;
    let pool: pg.Pool;
    let root: string;
    let configFile: string;
    let apis: EaselProcess[] = [];
    let workers: EaselProcess[] = [];

    const env = () => ({
      DATABASE_URL: pgdb!.url,
      REDIS_URL: redis!.url,
      ...s3.env,
      EASEL_ADMIN_KEY: ADMIN_KEY,
      LOG_LEVEL: 'info',
    });
    let seq = 0;
    const spawnRole = (role: 'api' | 'worker') => {
      const dataDir = join(root, `${role}-${++seq}`);
      mkdirSync(dataDir, { recursive: true });
      return procs.spawn(role, { configFile, dataDir, env: env(), name: `${role}-${seq}` });
    };

    const call = async (base: string, path: string, init: RequestInit & { json?: unknown } = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${ADMIN_KEY}`);
      let body = init.body;
      if (init.json !== undefined) {
        headers.set('content-type', 'application/json');
        body = JSON.stringify(init.json);
      }
      return fetch(`${base}${path}`, { ...init, headers, body });
    };
    const getJob = async (base: string, id: string): Promise<any> => {
      const res = await call(base, `/v1/images/jobs/${id}`);
      assert.equal(res.status, 200, `GET job ${id} from ${base}: ${res.status}`);
      return res.json();
    };
    /** Submits async jobs round-robin across the API instances; returns ids in order. */
    const submitMany = (prompts: { prompt: string; n?: number }[]): Promise<string[]> =>
      Promise.all(
        prompts.map(async ({ prompt, n = 1 }, i) => {
          const res = await call(apis[i % apis.length]!.url!, '/v1/images/generations', { method: 'POST', json: { prompt, n, async: true } });
          const body = (await res.json()) as any;
          assert.equal(res.status, 202, JSON.stringify(body));
          return body.id as string;
        }),
      );
    /** Polls every job (alternating APIs) until all are terminal. */
    const waitAll = async (ids: string[], timeoutMs = 60_000): Promise<Map<string, any>> => {
      const done = new Map<string, any>();
      let round = 0;
      await until(
        `${ids.length} jobs to finish`,
        async () => {
          round++;
          const pending = ids.filter((id) => !done.has(id));
          await Promise.all(
            pending.map(async (id, i) => {
              const job = await getJob(apis[(i + round) % apis.length]!.url!, id);
              if (TERMINAL.includes(job.status)) done.set(id, job);
            }),
          );
          return done.size === ids.length;
        },
        timeoutMs,
        200,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; unfinished: ${ids.filter((id) => !done.has(id)).join(', ')}`);
      });
      return done;
    };
    const submissions = (prefix: string) =>
      standin.requests.filter((r) => r.path === '/v1/images/generations' && String(r.body?.prompt ?? '').startsWith(prefix)).length;

    /** images rows per job, from Postgres. */
    const imageRows = async (ids: string[]) => {
      const { rows } = await pool.query<{ job_id: string; idx: number; storage_key: string; sha256: string }>(
        'select job_id, idx, storage_key, sha256 from images where job_id = any($1) order by job_id, idx',
        [ids],
      );
      const byJob = new Map<string, typeof rows>();
      for (const r of rows) byJob.set(r.job_id, [...(byJob.get(r.job_id) ?? []), r]);
      return byJob;
    };
    /** Object keys per job under images/, from the bucket. */
    const objectsByJob = async () => {
      const byJob = new Map<string, string[]>();
      let token: string | undefined;
      do {
        const page = await s3client.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'images/', ContinuationToken: token }));
        for (const o of page.Contents ?? []) {
          const jobId = jobIdOfKey(o.Key!)!;
          byJob.set(jobId, [...(byJob.get(jobId) ?? []), o.Key!]);
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return byJob;
    };
    /** Each job succeeded with exactly n image rows and n objects, whose bytes match. */
    const assertExactlyOnce = async (jobs: Map<string, any>, nOf: (id: string) => number) => {
      const ids = [...jobs.keys()];
      const rows = await imageRows(ids);
      const objects = await objectsByJob();
      for (const id of ids) {
        const job = jobs.get(id);
        assert.equal(job.status, 'succeeded', `${id}: ${JSON.stringify(job.error)}`);
        const n = nOf(id);
        assert.equal(job.result.data.length, n, `${id}: images in the result`);
        assert.deepEqual((rows.get(id) ?? []).map((r) => Number(r.idx)), [...Array(n).keys()], `${id}: images rows`);
        assert.deepEqual((objects.get(id) ?? []).sort(), [...Array(n).keys()].map((i) => imageKey(id, i, 'png')), `${id}: objects in the bucket`);
      }
      return rows;
    };

    before(async () => {
      if (skip) return;
      standin = await startOpenAIStandin({ strict: false, latencyMs: 100 });
      s3 = await startS3();
      s3client = s3.client();
      pool = new pg.Pool({ connectionString: pgdb!.url, max: 2 });
      root = mkdtempSync(join(tmpdir(), 'easel-scale-'));
      configFile = writeConfig(join(root, 'easel.yaml'), {
        server: { host: '127.0.0.1', port: 0 },
        redis: { prefix: REDIS_PREFIX },
        queue: { visibilityTimeoutSeconds: VISIBILITY_S },
        worker: { concurrency: CONCURRENCY, shutdownGraceSeconds: GRACE_S },
        ...standinBackendConfig(standin),
      });
      // All four at once, as an orchestrator starts them: migrations and the first admin key race.
      const started = await Promise.all([spawnRole('api'), spawnRole('api'), spawnRole('worker'), spawnRole('worker')]);
      apis = started.filter((p) => p.role === 'api');
      workers = started.filter((p) => p.role === 'worker');
    });

    afterEach((t) => {
      if ('passed' in t && t.passed === false) process.stderr.write(`\nchild process output for failed test "${t.name}":\n${procs.logs()}\n`);
    });

    after(async () => {
      await procs.killAll();
      await pool?.end().catch(() => {});
      s3client?.destroy();
      await s3?.stop().catch(() => {});
      await standin?.close().catch(() => {});
      await pgdb?.stop().catch(() => {});
      await redis?.stop().catch(() => {});
      if (root) rmSync(root, { recursive: true, force: true });
    });

    test('the openai SDK generates through either API in both response formats; URLs are presigned S3 URLs', { timeout: 60_000, skip }, async () => {
      for (const api of apis) {
        const client = new OpenAI({ baseURL: `${api.url}/v1`, apiKey: ADMIN_KEY, maxRetries: 0 });
        const b64 = await client.images.generate({ model: 'test-model', prompt: `sdk b64 via ${api.name}`, response_format: 'b64_json' });
        assert.equal(b64.data?.length, 1);
        const fromB64 = Buffer.from(b64.data![0]!.b64_json!, 'base64');
        assert.deepEqual(fromB64.subarray(0, 4), PNG_MAGIC);

        const byUrl = await client.images.generate({ model: 'test-model', prompt: `sdk url via ${api.name}`, response_format: 'url', n: 2 });
        assert.equal(byUrl.data?.length, 2);
        for (const item of byUrl.data!) {
          const url = new URL(item.url!);
          assert.equal(url.origin, s3.endpoint, 'straight from the bucket, not through the API');
          assert.match(url.pathname, new RegExp(`^/${s3.bucket}/images/\\d{8}/\\d{4}/job_[0-9A-Z]+-[01]\\.png$`));
          assert.ok(url.searchParams.get('X-Amz-Signature'), 'presigned');
          const res = await fetch(url);
          assert.equal(res.status, 200);
          const bytes = Buffer.from(await res.arrayBuffer());
          assert.deepEqual(bytes.subarray(0, 4), PNG_MAGIC);
          const key = decodeURIComponent(url.pathname.slice(`/${s3.bucket}/`.length));
          const { rows } = await pool.query<{ sha256: string }>('select sha256 from images where storage_key = $1', [key]);
          assert.equal(rows.length, 1, key);
          assert.equal(sha256(bytes), rows[0]!.sha256);
        }
        // Without a key the presigned URL is the only way in: the API refuses anonymous callers.
        assert.equal((await fetch(`${api.url}/v1/images/jobs`)).status, 401);
      }
    });

    test('50 async jobs across both APIs all succeed exactly once and read the same through either API', { timeout: 90_000, skip }, async () => {
      const prompts = Array.from({ length: 50 }, (_, i) => ({ prompt: `fifty #${i}`, n: i % 5 === 0 ? 2 : 1 }));
      const ids = await submitMany(prompts);
      assert.equal(new Set(ids).size, 50);
      const nOf = (id: string) => prompts[ids.indexOf(id)]!.n;
      const jobs = await waitAll(ids);
      const rows = await assertExactlyOnce(jobs, nOf);
      assert.ok(submissions('fifty #') >= 50);

      // Both workers took part.
      for (const w of workers) assert.match(w.logs(), /"msg":"job succeeded"/, `${w.name} ran no job`);

      // Either API answers the same for every job, and every image URL serves the stored bytes.
      await Promise.all(
        ids.map(async (id) => {
          const [a, b] = await Promise.all(apis.map((api) => getJob(api.url!, id)));
          assert.equal(a.status, 'succeeded');
          assert.deepEqual({ ...b, result: null }, { ...a, result: null });
          const urls = b.result.data.map((d: any) => d.url as string);
          assert.equal(urls.length, nOf(id));
          for (const [i, url] of urls.entries()) {
            const res = await fetch(url);
            assert.equal(res.status, 200, url);
            assert.equal(sha256(Buffer.from(await res.arrayBuffer())), rows.get(id)![i]!.sha256);
          }
        }),
      );
    });

    test('a worker killed with SIGKILL mid-job: its jobs are redelivered (stalled) and complete exactly once', { timeout: 90_000, skip }, async () => {
      // Long enough that the victim's jobs are all still on the backend when it is killed, even on a
      // loaded machine where the eight calls trickle in.
      standin.setLatency(8_000);
      try {
        // Exactly as many jobs as both workers take at once, so each holds CONCURRENCY of them.
        const count = CONCURRENCY * workers.length;
        const ids = await submitMany(Array.from({ length: count }, (_, i) => ({ prompt: `killed #${i}` })));
        await until(`${count} jobs on the backend`, () => submissions('killed #') >= count, 30_000, 20);
        assert.equal(submissions('killed #'), count);

        const victim = workers[0]!;
        const gone = await victim.kill9();
        assert.equal(gone.signal, 'SIGKILL');
        standin.setLatency(100);
        workers = [workers[1]!, await spawnRole('worker')];

        const jobs = await waitAll(ids);
        await assertExactlyOnce(jobs, () => 1);
        const retried = [...jobs.values()].filter((j) => j.attempts >= 2);
        assert.ok(retried.length >= CONCURRENCY, `${retried.length} job(s) ran more than once; the victim held ${CONCURRENCY}`);
        assert.ok(submissions('killed #') >= count + CONCURRENCY, `backend saw ${submissions('killed #')} submissions`);
      } finally {
        standin.setLatency(100);
      }
    });

    test('rolling restart: workers stopped with SIGTERM hand their running jobs back at once; the replacements finish them', { timeout: 90_000, skip }, async () => {
      // Far longer than a grace period: nothing finishes on the workers being stopped. (The stand-in's
      // timers for the abandoned calls run on after the workers left; they end before the file does.)
      standin.setLatency(12_000);
      const abortedBefore = standin.aborted();
      /** SIGTERM, then: exit 0, promptly; its calls to the backend aborted. */
      const stopGracefully = async (w: EaselProcess, abortedAfter: number) => {
        const sent = Date.now();
        w.child.kill('SIGTERM');
        const exit = await w.exited;
        assert.equal(exit.code, 0, `${w.name} exit ${JSON.stringify(exit)}`);
        assert.ok(exit.at - sent < GRACE_S * 1000 + 5_000, `${w.name} took ${exit.at - sent} ms to exit`);
        await until(`the stand-in to see ${w.name}'s calls aborted`, () => standin.aborted() >= abortedAfter, 5_000);
      };
      try {
        const count = CONCURRENCY * workers.length;
        const ids = await submitMany(Array.from({ length: count }, (_, i) => ({ prompt: `sigterm #${i}` })));
        await until(`${count} jobs on the backend`, () => submissions('sigterm #') >= count, 30_000, 20);
        const [first, second] = workers as [EaselProcess, EaselProcess];

        await stopGracefully(first, abortedBefore + CONCURRENCY);
        // Handed back (moved to wait), not left active for the stalled checker to find after the lock
        // expires: right after the exit the queue holds them as waiting, beside the other worker's share.
        const queue = new BullmqQueue({ url: redis!.url, prefix: REDIS_PREFIX });
        try {
          assert.deepEqual(await queue.counts(), { waiting: CONCURRENCY, active: CONCURRENCY });
        } finally {
          await queue.close();
        }

        standin.setLatency(100);
        const replacement = await spawnRole('worker');
        await stopGracefully(second, abortedBefore + 2 * CONCURRENCY);
        // The second replacement starts while the first one works through all eight.
        const [jobs, another] = await Promise.all([waitAll(ids), spawnRole('worker')]);
        workers = [replacement, another];
        await assertExactlyOnce(jobs, () => 1);
        const attempts = [...jobs.values()].map((j) => j.attempts as number);
        assert.ok(attempts.every((a) => a >= 2), `attempts ${attempts}: each job was handed back once, then finished`);
        assert.ok(submissions('sigterm #') >= 2 * count);
      } finally {
        standin.setLatency(100);
      }
    });

    test('Redis restarted while jobs wait: every job still finishes exactly once, and the stack keeps working', { timeout: 90_000, skip: skip || externalRedis }, async () => {
      standin.setLatency(200);
      try {
        const count = 24; // far more than the workers run at once: most are waiting in Redis
        const ids = await submitMany(Array.from({ length: count }, (_, i) => ({ prompt: `redis restart #${i}` })));
        await until('the first jobs on the backend', () => submissions('redis restart #') >= 1, 30_000, 20);
        await redis!.restart();

        const jobs = await waitAll(ids, 75_000);
        await assertExactlyOnce(jobs, () => 1);
        for (const api of apis) {
          const ready = await until(`${api.name} ready again`, async () => ((await fetch(`${api.url}/ready`)).status === 200 ? true : undefined), 15_000, 200);
          assert.ok(ready);
        }

        // Both APIs enqueue again after the restart, and a synchronous SDK call still gets its images.
        const after = await waitAll(await submitMany([{ prompt: 'after restart A' }, { prompt: 'after restart B' }]));
        await assertExactlyOnce(after, () => 1);
        for (const api of apis) {
          const client = new OpenAI({ baseURL: `${api.url}/v1`, apiKey: ADMIN_KEY, maxRetries: 0 });
          const res = await client.images.generate({ model: 'test-model', prompt: `sync after restart via ${api.name}`, response_format: 'b64_json' });
          assert.deepEqual(Buffer.from(res.data![0]!.b64_json!, 'base64').subarray(0, 4), PNG_MAGIC);
        }
      } finally {
        standin.setLatency(100);
      }
    });

  });

  describe('a worker whose Redis went away', { concurrency: 1 }, () => {
    const procs = new ProcessGroup();
    let root: string | undefined;

    afterEach((t) => {
      if ('passed' in t && t.passed === false) process.stderr.write(`\nchild process output for failed test "${t.name}":\n${procs.logs()}\n`);
    });
    after(async () => {
      await procs.killAll();
      if (root) rmSync(root, { recursive: true, force: true });
    });

    test('stopped with SIGTERM while Redis is unreachable, it still exits: grace period, then a bounded close', { timeout: 60_000, skip: skip || externalRedis }, async () => {
      // Its own Redis (to stop) and an otherwise embedded setup: only the BullMQ consumer matters here.
      const lonely = (await startRedis())!;
      try {
        root = mkdtempSync(join(tmpdir(), 'easel-lonely-'));
        const configFile = writeConfig(join(root, 'easel.yaml'), {
          dataDir: join(root, 'data'),
          redis: { prefix: REDIS_PREFIX },
          worker: { shutdownGraceSeconds: GRACE_S },
        });
        const w = await procs.spawn('worker', { configFile, env: { REDIS_URL: lonely.url }, name: 'worker-lonely' });
        await lonely.stop();
        const sent = Date.now();
        const exit = await w.terminate('SIGTERM', 30_000);
        assert.equal(exit.code, 0, JSON.stringify(exit));
        // The grace period, then at most the queue's bounded wait for BullMQ to close (5 s), then the rest.
        assert.ok(exit.at - sent < GRACE_S * 1000 + 5_000 + 4_000, `took ${exit.at - sent} ms to exit`);
      } finally {
        await lonely.stop();
      }
    });
  });
});
