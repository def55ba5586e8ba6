/**
 * Durability of the embedded stack (SQLite + embedded queue + local images) across real process
 * deaths: `easel api` and `easel worker` run as child processes sharing one data folder, and the test
 * kills them with SIGKILL (a crash) or SIGTERM (a deploy) while a job is on the backend.
 */
import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { imageKey } from '../../src/images/keys.ts';
import { openDatabase } from '../../src/store/database.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { standinBackendConfig } from '../support/easel.ts';
import { ProcessGroup, writeConfig } from '../support/processes.ts';
import type { EaselProcess } from '../support/processes.ts';
import { until } from '../support/until.ts';

const ADMIN_KEY = 'easel_sk_test_admin_key_0123456789abcdef';
/** Backend latency while a worker is to be killed: long enough to kill it mid-call on a loaded machine. */
const LATENCY_MS = 5_000;
/** Backend latency for the runs that are meant to finish. */
const QUICK_MS = 200;
const VISIBILITY_S = 2;
const GRACE_S = 1;
const MAX_ATTEMPTS = 2;

describe('crash safety of the embedded stack (api and worker processes)', () => {
  const procs = new ProcessGroup();
  let standin: OpenAIStandin;
  let root: string;
  let dataDir: string;
  let configFile: string;
  let api: EaselProcess;
  let worker: EaselProcess;
  /** The job the first test crashed a worker on; the API-restart test reads it back. */
  let crashed: { id: string; n: number; url: string; sha256: string[] } | undefined;

  const call = async (path: string, init: RequestInit & { json?: unknown; base?: string } = {}) => {
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${ADMIN_KEY}`);
    let body = init.body;
    if (init.json !== undefined) {
      headers.set('content-type', 'application/json');
      body = JSON.stringify(init.json);
    }
    return fetch(`${init.base ?? api.url}${path}`, { ...init, headers, body });
  };
  const getJob = async (id: string): Promise<any> => {
    const res = await call(`/v1/images/jobs/${id}`);
    assert.equal(res.status, 200, `GET job ${id}: ${res.status}`);
    return res.json();
  };
  const submit = async (prompt: string, n = 1): Promise<string> => {
    const res = await call('/v1/images/generations', { method: 'POST', json: { prompt, n, async: true } });
    const body = (await res.json()) as any;
    assert.equal(res.status, 202, JSON.stringify(body));
    return body.id as string;
  };
  const waitTerminal = (id: string, timeoutMs = 30_000): Promise<any> =>
    until(
      `job ${id} to finish`,
      async () => {
        const job = await getJob(id);
        return ['succeeded', 'failed', 'canceled'].includes(job.status) ? job : undefined;
      },
      timeoutMs,
      100,
    );
  /** Backend submissions carrying `prompt` (the stand-in logs each as it arrives). */
  const submissions = (prompt: string) => standin.requests.filter((r) => r.path === '/v1/images/generations' && r.body?.prompt === prompt).length;
  const waitSubmissions = (prompt: string, count: number) => until(`${count} backend submission(s) of "${prompt}"`, () => submissions(prompt) >= count, 30_000, 20);

  /** Reads the shared SQLite file the way a second process would. */
  async function query<T>(fn: (db: ReturnType<typeof openDatabase>['db']) => Promise<T>): Promise<T> {
    const mdb = openDatabase(join(dataDir, 'easel.db'));
    try {
      return await fn(mdb.db);
    } finally {
      await mdb.close();
    }
  }

  /** The worker acknowledges a message right after it finished the job: wait for the row to go. */
  const messageGone = (id: string) =>
    until(
      `the queue message of ${id} to be acknowledged`,
      async () => (await query((db) => db.selectFrom('queue_messages').select('job_id').where('job_id', '=', id).execute())).length === 0,
      5_000,
    );

  const startWorker = () => procs.spawn('worker', { configFile });

  before(async () => {
    standin = await startOpenAIStandin({ strict: false, latencyMs: LATENCY_MS });
    root = mkdtempSync(join(tmpdir(), 'easel-crash-'));
    dataDir = join(root, 'data');
    configFile = writeConfig(join(root, 'easel.yaml'), {
      dataDir,
      server: { host: '127.0.0.1', port: 0 },
      auth: { adminKey: ADMIN_KEY },
      queue: { visibilityTimeoutSeconds: VISIBILITY_S, pollIntervalMs: 50, maxAttempts: MAX_ATTEMPTS },
      worker: { concurrency: 2, shutdownGraceSeconds: GRACE_S },
      logging: { level: 'info' },
      ...standinBackendConfig(standin),
    });
    // The API first: it migrates the fresh database and creates the admin key.
    api = await procs.spawn('api', { configFile });
    worker = await startWorker();
  });

  afterEach((t) => {
    if ('passed' in t && t.passed === false) process.stderr.write(`\nchild process output for failed test "${t.name}":\n${procs.logs()}\n`);
  });

  after(async () => {
    await procs.killAll();
    await standin?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test('a worker killed with SIGKILL mid-job: the job is redelivered and completes exactly once', async () => {
    const prompt = 'crash: sigkill mid-job';
    const n = 2;
    const id = await submit(prompt, n);
    await waitSubmissions(prompt, 1);
    assert.equal((await getJob(id)).status, 'running');

    const gone = await worker.kill9();
    assert.equal(gone.signal, 'SIGKILL');
    // Nothing was completed by the dead worker.
    assert.equal((await getJob(id)).status, 'running');

    standin.setLatency(QUICK_MS);
    worker = await startWorker();
    const done = await waitTerminal(id);
    standin.setLatency(LATENCY_MS);
    assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
    assert.equal(done.attempts, 2, 'one lost attempt, one that finished');
    assert.ok(submissions(prompt) >= 2, `the backend saw ${submissions(prompt)} submission(s)`);
    assert.equal(done.result.data.length, n);

    // Exactly one result: n image rows, n files, nothing else of this job's (no temp file either).
    const rows = await query((db) => db.selectFrom('images').selectAll().where('job_id', '=', id).orderBy('idx').execute());
    assert.equal(rows.length, n);
    assert.deepEqual(rows.map((r) => Number(r.idx)), [0, 1]);
    // Storage root <dataDir>/images, keys images/<minute>/<jobId>-<i>.png (src/images/keys.ts).
    const storedIn = join(dataDir, 'images', dirname(imageKey(id, 0, 'png')));
    const files = readdirSync(storedIn)
      .filter((f) => f.includes(id))
      .sort();
    assert.deepEqual(files, [`${id}-0.png`, `${id}-1.png`], `files in ${storedIn}`);
    for (const r of rows) {
      const bytes = readFileSync(join(dataDir, 'images', imageKey(id, Number(r.idx), 'png')));
      assert.equal(createHash('sha256').update(bytes).digest('hex'), r.sha256);
    }
    // The queue message is acknowledged (just after the job is completed) and gone.
    await messageGone(id);

    const url = done.result.data[0].url as string;
    const img = await fetch(url);
    assert.equal(img.status, 200);
    assert.equal(img.headers.get('content-type'), 'image/png');
    crashed = { id, n, url, sha256: rows.map((r) => r.sha256 as string) };
  });

  test('the API restarted on the same data folder still has the job, and its image URL still works', async () => {
    assert.ok(crashed, 'needs the job of the previous test');
    const port = Number(new URL(api.url!).port);
    await api.kill9();
    await assert.rejects(fetch(`${api.url}/health`), 'the old API is gone');

    api = await procs.spawn('api', { configFile, port });
    assert.equal(api.url, `http://127.0.0.1:${port}`);
    const job = await getJob(crashed.id);
    assert.equal(job.status, 'succeeded');
    assert.equal(job.result.data.length, crashed.n);

    // The URL handed out before the restart (signed with the secret in the data folder) and a fresh one.
    for (const url of [crashed.url, job.result.data[0].url as string]) {
      const res = await fetch(url);
      assert.equal(res.status, 200, url);
      const bytes = Buffer.from(await res.arrayBuffer());
      assert.equal(createHash('sha256').update(bytes).digest('hex'), crashed.sha256[0]);
    }
    const listed = (await (await call('/v1/images/jobs?limit=100')).json()) as any;
    assert.ok(listed.data.some((j: any) => j.id === crashed!.id));
  });

  test('SIGTERM hands a running job back to the queue within the grace period; another worker finishes it', async () => {
    const prompt = 'crash: sigterm mid-job';
    // Far longer than the grace period (not longer still: the stand-in's timer for the abandoned call
    // keeps the test process alive until it fires).
    standin.setLatency(8_000);
    const abortedBefore = standin.aborted();
    try {
      const id = await submit(prompt);
      await waitSubmissions(prompt, 1);
      const sent = Date.now();
      worker.child.kill('SIGTERM');
      const exit = await worker.exited;
      const took = exit.at - sent;
      assert.equal(exit.code, 0, `worker exit: ${JSON.stringify(exit)}`);
      assert.ok(took < GRACE_S * 1000 + 5_000, `worker took ${took} ms to exit after SIGTERM`);
      assert.ok(took >= GRACE_S * 1000 - 100, `worker exited after ${took} ms, before the grace period ended`);
      await until('the stand-in to see the backend call aborted', () => standin.aborted() > abortedBefore, 5_000);

      // Handed back, not left to expire: the message is free to take right now.
      const [msg] = await query((db) => db.selectFrom('queue_messages').selectAll().where('job_id', '=', id).execute());
      assert.ok(msg, 'the queue message is still there');
      assert.equal(msg.lease_owner, null);
      assert.equal(msg.lease_until, null);
      assert.ok(Number(msg.available_at) <= Date.now());
      assert.equal((await getJob(id)).status, 'running');

      standin.setLatency(QUICK_MS);
      worker = await startWorker();
      const done = await waitTerminal(id);
      assert.equal(done.status, 'succeeded', JSON.stringify(done.error));
      assert.equal(done.attempts, 2);
      assert.equal(submissions(prompt), 2);
      const rows = await query((db) => db.selectFrom('images').select('id').where('job_id', '=', id).execute());
      assert.equal(rows.length, 1);
    } finally {
      standin.setLatency(LATENCY_MS);
    }
  });

  test(`a job whose worker dies on every delivery fails with worker_lost after ${MAX_ATTEMPTS} attempts`, async () => {
    const prompt = 'crash: poison job';
    const id = await submit(prompt);
    for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
      await waitSubmissions(prompt, attempt);
      await worker.kill9();
      worker = await startWorker();
    }
    const done = await waitTerminal(id);
    assert.equal(done.status, 'failed');
    assert.equal(done.error?.code, 'worker_lost', JSON.stringify(done.error));
    assert.equal(done.attempts, MAX_ATTEMPTS);
    assert.equal(submissions(prompt), MAX_ATTEMPTS, 'no further backend call after the last allowed attempt');
    const rows = await query((db) => db.selectFrom('images').select('id').where('job_id', '=', id).execute());
    assert.equal(rows.length, 0);
    await messageGone(id); // acknowledged, not redelivered forever

    // The worker that gave up is healthy and takes new work.
    standin.setLatency(QUICK_MS);
    const next = await waitTerminal(await submit('crash: after the poison job'));
    assert.equal(next.status, 'succeeded');
  });
});
