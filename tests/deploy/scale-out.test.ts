/**
 * Scale-out on one machine, with real processes: two `easel api` and three `easel worker` processes
 * share a real Redis (BullMQ), a real Postgres and s3rver, configured the way a deployment is (the
 * stack through environment variables, the rest through a YAML file). 2,000 async jobs with webhooks
 * go in across both APIs and two API keys, against the OpenAI stand-in; mid-run two workers are
 * SIGKILLed, one is started again, and Redis is restarted.
 *
 * Checked: every accepted job ends `succeeded`, once (one `images` row and one S3 object per image,
 * one webhook message per job, one "job succeeded" log line); each job and its image read the same
 * through either API; every webhook arrives at least once and verifies with `standardwebhooks`; a
 * job can be traced from the API's log line (reqId + jobId) to the worker's. Then the retention
 * sweep, scheduled by the workers under their shared lease, deletes exactly the jobs made to look
 * expired (default policy and a per-key one) and nothing else.
 *
 * Prints the wall time and jobs/s. Needs redis-server and the Postgres binaries; without them the
 * file skips, unless CI is set.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { ListObjectsCommand, S3Client } from '@aws-sdk/client-s3';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { standinBackendConfig } from '../support/easel.ts';
import { startPostgres } from '../support/postgres.ts';
import type { TestPostgres } from '../support/postgres.ts';
import { startRedis } from '../support/redis.ts';
import type { RedisServer } from '../support/redis.ts';
import { startS3 } from '../support/s3.ts';
import type { TestS3 } from '../support/s3.ts';
import { ProcessGroup, writeConfig } from '../support/processes.ts';
import type { EaselProcess } from '../support/processes.ts';
import { startReceiver } from '../webhooks/receiver.ts';
import type { Receiver } from '../webhooks/receiver.ts';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { openDatabase } from '../../src/store/database.ts';
import { SqlKeyStore } from '../../src/store/sql-key-store.ts';
import { imageKey, jobIdOfKey } from '../../src/images/keys.ts';
import { until } from '../support/until.ts';

const JOBS = Number(process.env.EASEL_SCALE_JOBS ?? 2_000);
const ADMIN_KEY = 'easel_sk_test_admin_key_0123456789abcdef';
const SHORT_KEY = `easel_sk_short_${randomBytes(16).toString('hex')}`;
const WEBHOOK_SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const CONCURRENCY = 12;
const SUBMITTERS = 32;
const DAY_MS = 86_400_000;

const redis: RedisServer | undefined = await startRedis();
const pgdb: TestPostgres | undefined = redis ? await startPostgres() : undefined;
const missing = !redis ? 'redis-server was not found' : !pgdb ? 'no Postgres binaries were found' : undefined;
if (missing && process.env.CI) throw new Error(`the scale-out test needs Redis and Postgres, but ${missing}`);
if (missing) {
  await redis?.stop();
  process.stderr.write(`scale-out test skipped: ${missing} (set CI to make this a failure)\n`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Runs `fn` over `items` with at most `limit` at once. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!, i);
      }
    }),
  );
  return out;
}

interface Accepted {
  index: number;
  id: string;
  n: number;
  key: string;
  api: number;
}

describe('scale-out: 2 api + 3 worker processes, Redis, Postgres, S3; workers killed, Redis restarted', { skip: missing ? `${missing}; set CI to fail instead` : false }, () => {
  const procs = new ProcessGroup();
  let standin: OpenAIStandin;
  let s3: TestS3;
  let s3client: S3Client;
  let pool: pg.Pool;
  let receiver: Receiver;
  let root: string;
  let configFile: string;
  let apis: EaselProcess[] = [];
  let seq = 0;

  const env = () => ({
    DATABASE_URL: pgdb!.url,
    REDIS_URL: redis!.url,
    ...s3.env,
    EASEL_ADMIN_KEY: ADMIN_KEY,
    LOG_LEVEL: 'info',
  });
  const spawnRole = (role: 'api' | 'worker') => {
    const name = `${role}-${++seq}`;
    const dataDir = join(root, name);
    mkdirSync(dataDir, { recursive: true });
    return procs.spawn(role, { configFile, dataDir, env: env(), name, readyTimeoutMs: 60_000 });
  };

  before(async () => {
    standin = await startOpenAIStandin({ strict: false, latencyMs: 20, imageSize: 16, logRequests: false });
    s3 = await startS3('easel-scale');
    s3client = s3.client();
    pool = new pg.Pool({ connectionString: pgdb!.url, max: 4 });
    receiver = await startReceiver(WEBHOOK_SECRET);
    root = mkdtempSync(join(tmpdir(), 'easel-scale-out-'));
    configFile = writeConfig(join(root, 'easel.yaml'), {
      server: { host: '127.0.0.1', port: 0 },
      queue: { visibilityTimeoutSeconds: 3, maxAttempts: 5 },
      worker: { concurrency: CONCURRENCY, shutdownGraceSeconds: 1 },
      outbound: { allowNetworks: ['127.0.0.0/8'] },
      webhooks: { secret: WEBHOOK_SECRET, timeoutSeconds: 5, initialBackoffSeconds: 0.5 },
      // 30 days for every key, 1 day for the `short-lived` key; every worker ticks each second.
      retention: { days: 30, keys: { 'short-lived': 1 }, intervalSeconds: 1 },
      ...standinBackendConfig(standin),
    });
    // Everything at once, as an orchestrator starts it: migrations and the first admin key race.
    const started = await Promise.all([spawnRole('api'), spawnRole('api'), spawnRole('worker'), spawnRole('worker'), spawnRole('worker')]);
    apis = started.filter((p) => p.role === 'api');
    const mdb = openDatabase(pgdb!.url);
    try {
      await createApiKey(new SqlKeyStore(mdb), { name: 'short-lived', secret: SHORT_KEY });
    } finally {
      await mdb.close();
    }
  });

  after(async () => {
    await procs.killAll();
    await receiver?.close().catch(() => {});
    await pool?.end().catch(() => {});
    s3client?.destroy();
    await s3?.stop().catch(() => {});
    await standin?.close().catch(() => {});
    await pgdb?.stop().catch(() => {});
    await redis?.stop().catch(() => {});
    if (root) rmSync(root, { recursive: true, force: true });
  });

  const call = (api: number, path: string, key: string, init: RequestInit = {}) =>
    fetch(`${apis[api]!.url}${path}`, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${key}` } });

  test(`${JOBS} async jobs survive two SIGKILLed workers and a Redis restart; retention deletes exactly the expired`, { timeout: 420_000 }, async (t) => {
    const workers = () => procs.procs.filter((p) => p.role === 'worker');
    const accepted: Accepted[] = [];
    const stats = { rejected503: 0, networkRetries: 0 };
    const chaos: string[] = [];

    // ---- submit, with chaos driven by progress -------------------------------------------------
    const submitOne = async (index: number): Promise<void> => {
      const n = index % 10 === 0 ? 2 : 1;
      const key = index % 2 === 0 ? ADMIN_KEY : SHORT_KEY;
      const body = JSON.stringify({ prompt: `scale #${index}`, n, async: true, webhook_url: `${receiver.url}/hook/${index}`, metadata: { index: String(index) } });
      for (let attempt = 0; attempt < 60; attempt++) {
        const api = (index + attempt) % 2;
        let res: Response;
        try {
          res = await call(api, '/v1/images/generations', key, {
            method: 'POST',
            body,
            headers: { 'content-type': 'application/json', 'idempotency-key': `scale-${index}-${stats.rejected503}-${attempt}` },
          });
        } catch {
          // Not answered: the job may or may not exist; a retry with a new key could make a second
          // one, which the checks below would then count as unaccounted for.
          stats.networkRetries++;
          await sleep(200);
          continue;
        }
        const json = (await res.json()) as any;
        if (res.status === 202) {
          accepted.push({ index, id: json.id, n, key, api });
          return;
        }
        // 503 queue_unavailable while Redis restarts: the job was not accepted (it is failed at once).
        assert.equal(res.status, 503, `submission #${index}: ${res.status} ${JSON.stringify(json)}`);
        stats.rejected503++;
        await sleep(200);
      }
      throw new Error(`submission #${index} was never accepted`);
    };

    const succeededCount = async (): Promise<number> => {
      const { rows } = await pool.query<{ c: string }>(`select count(*) as c from jobs where status = 'succeeded'`);
      return Number(rows[0]!.c);
    };

    let chaosError: unknown;
    let submitting = true;
    const chaosLoop = (async () => {
      const steps: [number, string, () => Promise<void>][] = [
        [Math.floor(JOBS * 0.15), 'SIGKILL worker-3', async () => void (await workers()[0]!.kill9())],
        [Math.floor(JOBS * 0.3), 'SIGKILL worker-4', async () => void (await workers()[1]!.kill9())],
        [Math.floor(JOBS * 0.4), 'start a new worker', async () => void (await spawnRole('worker'))],
        [Math.floor(JOBS * 0.55), 'restart Redis', () => redis!.restart()],
      ];
      try {
        for (const [at, what, fn] of steps) {
          await until(`${at} jobs succeeded before "${what}"`, async () => (await succeededCount()) >= at, 180_000, 50);
          const done = await succeededCount();
          const t0 = Date.now();
          await fn();
          chaos.push(`${what} at ${done} succeeded (${accepted.length} accepted${submitting ? ', still submitting' : ''}; took ${Date.now() - t0} ms)`);
        }
      } catch (err) {
        chaosError = err;
      }
    })();

    const started = Date.now();
    await mapLimit(
      Array.from({ length: JOBS }, (_, i) => i),
      SUBMITTERS,
      (i) => submitOne(i),
    );
    submitting = false;
    const submittedMs = Date.now() - started;
    assert.equal(accepted.length, JOBS);
    const ids = accepted.map((a) => a.id);
    assert.equal(new Set(ids).size, JOBS, 'every accepted job has its own id');

    // ---- every accepted job succeeds ------------------------------------------------------------
    await until(
      'every accepted job to end',
      async () => {
        const { rows } = await pool.query<{ status: string; c: string }>('select status, count(*) as c from jobs where id = any($1) group by status', [ids]);
        const by = Object.fromEntries(rows.map((r) => [r.status, Number(r.c)]));
        if (by.failed || by.canceled) {
          const { rows: bad } = await pool.query('select id, status, error from jobs where id = any($1) and status in ($2, $3) limit 5', [ids, 'failed', 'canceled']);
          throw new Error(`accepted jobs ended badly: ${JSON.stringify(by)}: ${JSON.stringify(bad)}`);
        }
        return by.succeeded === JOBS;
      },
      240_000,
      200,
    ).catch((err: Error) => {
      process.stderr.write(`\nchild process output:\n${procs.logs(4_000)}\n`);
      throw err;
    });
    const wallMs = Date.now() - started;
    await chaosLoop;
    if (chaosError) throw chaosError;
    assert.equal(chaos.length, 4, `every chaos step ran: ${chaos.join('; ')}`);

    // ---- every webhook delivered at least once and verifiable -------------------------------------
    const acceptedById = new Map(accepted.map((a) => [a.id, a]));
    const hooksOf = () => {
      const byJob = new Map<string, { ids: Set<string>; types: Set<string>; count: number }>();
      for (const r of receiver.received) {
        if (!r.verified) continue;
        const jobId = r.payload?.data?.id as string;
        const e = byJob.get(jobId) ?? { ids: new Set(), types: new Set(), count: 0 };
        e.ids.add(String(r.headers['webhook-id']));
        e.types.add(`${r.payload.type}/${r.payload.data.status}/${r.path}`);
        e.count++;
        byJob.set(jobId, e);
      }
      return byJob;
    };
    await until('a webhook for every job', () => accepted.every((a) => hooksOf().has(a.id)), 120_000, 500);
    const webhooksMs = Date.now() - started;
    const unverified = receiver.received.filter((r) => !r.verified);
    assert.equal(unverified.length, 0, `unverifiable webhooks: ${unverified.slice(0, 3).map((r) => r.verifyError).join('; ')}`);
    const hooks = hooksOf();
    let redelivered = 0;
    for (const a of accepted) {
      const h = hooks.get(a.id)!;
      assert.equal(h.ids.size, 1, `${a.id}: one webhook message (${[...h.ids].join(', ')})`);
      assert.deepEqual([...h.types], [`image.job.succeeded/succeeded//hook/${a.index}`], `${a.id}: the succeeded event at its own URL`);
      if (h.count > 1) redelivered++;
    }
    assert.equal([...hooks.keys()].filter((id) => !acceptedById.has(id)).length, 0, 'no webhook for a job nobody accepted');

    // ---- exactly once: rows, objects, log lines ------------------------------------------------
    const { rows: imageRows } = await pool.query<{ job_id: string; idx: number; storage_key: string; sha256: string }>(
      'select job_id, idx, storage_key, sha256 from images order by job_id, idx',
    );
    const rowsByJob = new Map<string, typeof imageRows>();
    for (const r of imageRows) rowsByJob.set(r.job_id, [...(rowsByJob.get(r.job_id) ?? []), r]);
    const objectsByJob = async () => {
      // ListObjects (v1) with markers: s3rver's v2 continuation tokens need a cipher OpenSSL 3 lacks.
      const byJob = new Map<string, string[]>();
      let marker: string | undefined;
      for (;;) {
        const page = await s3client.send(new ListObjectsCommand({ Bucket: s3.bucket, Prefix: 'images/', Marker: marker }));
        for (const o of page.Contents ?? []) {
          const jobId = jobIdOfKey(o.Key!)!;
          byJob.set(jobId, [...(byJob.get(jobId) ?? []), o.Key!]);
        }
        if (!page.IsTruncated || !page.Contents?.length) break;
        marker = page.Contents.at(-1)!.Key;
      }
      return byJob;
    };
    const objects = await objectsByJob();
    for (const a of accepted) {
      assert.deepEqual((rowsByJob.get(a.id) ?? []).map((r) => Number(r.idx)), [...Array(a.n).keys()], `${a.id}: images rows`);
      assert.deepEqual((objects.get(a.id) ?? []).sort(), [...Array(a.n).keys()].map((i) => imageKey(a.id, i, 'png')), `${a.id}: objects under its prefix`);
    }
    const expectedImages = accepted.reduce((s, a) => s + a.n, 0);
    assert.equal(imageRows.length, expectedImages, 'no images row for anything else');
    assert.equal([...objects.values()].flat().length, expectedImages, 'no stored object for anything else');

    const workerLogs = workers().map((w) => w.logs()).join('\n');
    const succeededLines = new Map<string, number>();
    for (const m of workerLogs.matchAll(/"jobId":"(job_[0-9A-Z]+)"[^\n]*"msg":"job succeeded"/g)) succeededLines.set(m[1]!, (succeededLines.get(m[1]!) ?? 0) + 1);
    const twice = [...succeededLines].filter(([, c]) => c > 1);
    assert.equal(twice.length, 0, `jobs logged as succeeded more than once: ${twice.slice(0, 5).join(', ')}`);
    const { rows: retried } = await pool.query<{ c: string }>('select count(*) as c from jobs where id = any($1) and attempt > 1', [ids]);

    // One job traced across processes: the API's line carries reqId + jobId, a worker's the jobId.
    const traced = accepted.at(-1)!;
    const apiLine = apis[traced.api]!.logs().split('\n').find((l) => l.includes(`"jobId":"${traced.id}"`) && l.includes('"msg":"job accepted"'));
    assert.ok(apiLine, `the API logged accepting ${traced.id}`);
    assert.match(apiLine, /"reqId":"req_[0-9A-Z]+"/);
    assert.ok(workerLogs.split('\n').some((l) => l.includes(`"jobId":"${traced.id}"`) && l.includes('"msg":"job succeeded"')), `a worker logged ${traced.id} succeeding`);

    // ---- each job and image reads the same through either API ------------------------------------
    await mapLimit(accepted, 24, async (a, i) => {
      const api = i % 2;
      const res = await call(api, `/v1/images/jobs/${a.id}`, a.key);
      assert.equal(res.status, 200, `GET ${a.id} via api ${api}`);
      const job = (await res.json()) as any;
      assert.equal(job.status, 'succeeded');
      assert.equal(job.result.data.length, a.n);
      const img = await fetch(job.result.data[0].url as string);
      assert.equal(img.status, 200);
      assert.equal(sha256(Buffer.from(await img.arrayBuffer())), rowsByJob.get(a.id)![0]!.sha256);
    });
    // The other key sees none of them.
    const foreign = accepted.find((a) => a.key === ADMIN_KEY)!;
    assert.equal((await call(0, `/v1/images/jobs/${foreign.id}`, SHORT_KEY)).status, 404);

    const jobsPerSecond = JOBS / (wallMs / 1000);
    const report = [
      `scale-out: ${JOBS} jobs (${expectedImages} images) through 2 api + 3 worker processes (concurrency ${CONCURRENCY} each) on ${pgdb ? 'Postgres' : ''}, Redis/BullMQ, s3rver`,
      `  wall time ${(wallMs / 1000).toFixed(1)} s (submitted in ${(submittedMs / 1000).toFixed(1)} s) → ${jobsPerSecond.toFixed(1)} jobs/s; every webhook in by ${(webhooksMs / 1000).toFixed(1)} s`,
      `  chaos: ${chaos.join('; ')}`,
      `  ${retried[0]!.c} job(s) ran more than once, ${redelivered} webhook(s) delivered more than once, ${stats.rejected503} submission(s) refused with 503 during the Redis restart and retried, ${stats.networkRetries} network retries`,
    ].join('\n');
    console.log(report);
    t.diagnostic(report);

    // ---- retention: exactly the expired jobs go --------------------------------------------------
    const admin = accepted.filter((a) => a.key === ADMIN_KEY);
    const short = accepted.filter((a) => a.key === SHORT_KEY);
    const groups = {
      adminExpired: admin.slice(0, 100), // 40 days old, default policy 30 days
      adminKept: admin.slice(100, 200), // 10 days old
      shortExpired: short.slice(0, 100), // 2 days old, `short-lived` policy 1 day
      shortKept: short.slice(100, 200), // 12 hours old
    };
    const now = Date.now();
    const client = await pool.connect();
    try {
      await client.query('begin');
      const age = async (group: Accepted[], ms: number) =>
        client.query('update jobs set finished_at = $1 where id = any($2)', [now - ms, group.map((a) => a.id)]);
      await age(groups.adminExpired, 40 * DAY_MS);
      await age(groups.adminKept, 10 * DAY_MS);
      await age(groups.shortExpired, 2 * DAY_MS);
      await age(groups.shortKept, 0.5 * DAY_MS);
      await client.query('commit');
    } finally {
      client.release();
    }
    const committed = Date.now();
    // A run that started after the commit, and finished.
    const lease = await until(
      'a retention run that started after the jobs were aged',
      async () => {
        const { rows } = await pool.query<{ last_run_at: number; last_finished_at: number; last_result: string; owner: string | null }>(
          `select last_run_at, last_finished_at, last_result, owner from leases where name = 'retention'`,
        );
        const r = rows[0];
        return r && Number(r.last_run_at) > committed && Number(r.last_finished_at) >= Number(r.last_run_at) ? r : undefined;
      },
      30_000,
      100,
    );
    const expired = [...groups.adminExpired, ...groups.shortExpired];
    const expiredIds = new Set(expired.map((a) => a.id));
    const { rows: left } = await pool.query<{ id: string }>('select id from jobs where id = any($1)', [ids]);
    const leftIds = new Set(left.map((r) => r.id));
    assert.equal(expired.filter((a) => leftIds.has(a.id)).length, 0, 'every expired job deleted');
    assert.equal(accepted.filter((a) => !expiredIds.has(a.id) && !leftIds.has(a.id)).length, 0, 'no other job deleted');
    const { rows: imagesAfter } = await pool.query<{ job_id: string }>('select job_id from images');
    const objectsAfter = await objectsByJob();
    const keptImages = accepted.filter((a) => !expiredIds.has(a.id)).reduce((s, a) => s + a.n, 0);
    assert.equal(imagesAfter.length, keptImages, 'images rows of exactly the kept jobs');
    assert.equal(imagesAfter.filter((r) => expiredIds.has(r.job_id)).length, 0);
    assert.equal([...objectsAfter.values()].flat().length, keptImages, 'stored objects of exactly the kept jobs');
    assert.equal([...objectsAfter.keys()].filter((id) => expiredIds.has(id)).length, 0);
    const { rows: hooksAfter } = await pool.query<{ c: string }>('select count(*) as c from webhook_deliveries where job_id = any($1)', [[...expiredIds]]);
    assert.equal(Number(hooksAfter[0]!.c), 0, 'their webhook deliveries are gone too');
    // Through the API: an expired job is gone from both instances, a kept one still there.
    for (const [api, a] of [[0, groups.adminExpired[0]!], [1, groups.shortExpired[0]!]] as const) {
      assert.equal((await call(api, `/v1/images/jobs/${a.id}`, a.key)).status, 404);
    }
    for (const [api, a] of [[1, groups.adminKept[0]!], [0, groups.shortKept[0]!]] as const) {
      assert.equal((await call(api, `/v1/images/jobs/${a.id}`, a.key)).status, 200);
    }
    const ran = JSON.parse(lease.last_result) as { jobs: number };
    console.log(`  retention: ${expired.length} expired job(s) deleted (last run reported ${ran.jobs}), ${keptImages} image(s) kept`);
  });
});
