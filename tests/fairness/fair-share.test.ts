/**
 * Fair sharing end to end on the embedded stack (one `serve` runtime in this process: HTTP, SQLite,
 * the embedded queue, two worker slots) with a backend stand-in of fixed per-job time:
 *
 * - key A submits 300 jobs, then key B 10: each of B's jobs starts within a bounded number of A's
 *   completions (counted through the store's timestamps);
 * - a key past its `maxQueued` is refused with 429 `queue_limit_exceeded` in OpenAI's shape, while its
 *   running limit holds and other keys' jobs still start;
 * - a batch of a key whose queue is full waits instead of failing, then completes;
 * - `GET /v1/system` and `/metrics` show queued and running jobs per key (an admin every key's, a key
 *   its own).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { until } from '../cost/support.ts';
import { PacedControl, completionsBeforeStart, pacedFactories, percentile, submitMany } from './support.ts';
import type { JobTimes } from './support.ts';

const SLOTS = 2;
const JOB_MS = 15;

describe('fair sharing on the embedded stack', () => {
  let easel: TestEasel;
  const control = new PacedControl(JOB_MS);
  const secrets = new Map<string, string>();

  const times = async (ids: string[]): Promise<JobTimes[]> => {
    const rows = await easel.runtime.mdb.db.selectFrom('jobs').select(['id', 'key_id', 'status', 'created_at', 'started_at', 'finished_at', 'attempt']).where('id', 'in', ids).execute();
    return rows.map((r) => ({ id: r.id, key: r.key_id, status: r.status, created: r.created_at, started: r.started_at, finished: r.finished_at, attempt: r.attempt }));
  };
  const as = (name: string, path: string, init: RequestInit & { json?: unknown } = {}) => easel.api(path, { ...init, key: secrets.get(name)! });
  const queuedOf = async (name: string) => {
    const id = (await easel.runtime.keys.listKeys()).find((k) => k.name === name)!.id;
    const r = await easel.runtime.mdb.db.selectFrom('jobs').select((eb) => eb.fn.countAll<number>().as('n')).where('key_id', '=', id).where('status', '=', 'queued').executeTakeFirst();
    return Number(r?.n ?? 0);
  };

  before(async () => {
    easel = await startEasel({
      overrides: {
        worker: { concurrency: SLOTS },
        batches: { pumpIntervalMs: 50 },
        fairness: { keys: { C: { maxRunning: 1, maxQueued: 2 }, D: { maxRunning: 1, maxQueued: 2 } } },
      },
      runtime: { backendFactories: pacedFactories(control) },
    });
    for (const name of ['A', 'B', 'C', 'D', 'E']) secrets.set(name, (await createApiKey(easel.runtime.keys, { name })).secret);
  });
  after(() => easel?.close());

  test('key A queues 300 jobs, then key B 10: each of B’s jobs starts within a bounded number of A’s completions', { timeout: 120_000 }, async () => {
    const a = await submitMany(easel.url, secrets.get('A')!, Array.from({ length: 300 }, (_, i) => `A #${i}`));
    const b = await submitMany(easel.url, secrets.get('B')!, Array.from({ length: 10 }, (_, i) => `B #${i}`), 1);
    await until(async () => (await times([...a, ...b])).every((j) => j.status === 'succeeded'), 90_000, '310 jobs to succeed');
    const all = await times([...a, ...b]);
    const aTimes = all.filter((j) => a.includes(j.id));
    const bTimes = all.filter((j) => b.includes(j.id));
    const waits = completionsBeforeStart(aTimes, bTimes);
    // B's i-th job: its fair share of turns (one of A's per B, i + 1, and A's head tie), plus what the
    // two slots were running when B arrived.
    waits.forEach((n, i) => assert.ok(n <= 2 * (i + 1) + SLOTS + 1, `B#${i} started after ${n} of A's completions (bound ${2 * (i + 1) + SLOTS + 1}); all: ${waits}`));
    const aLeft = aTimes.filter((j) => j.finished! > Math.max(...bTimes.map((x) => x.finished!))).length;
    assert.ok(aLeft > 200, `B was done while A still had ${aLeft} jobs to go`);
    const jobMs = percentile(aTimes.map((j) => j.finished! - j.started!), 50);
    const p95 = percentile(bTimes.map((j) => j.started! - j.created), 95);
    process.stderr.write(`[fair-share] B's waits in A completions: ${waits.join(' ')}; B's p95 wait ${p95} ms (${(p95 / jobMs).toFixed(1)} job times)\n`);
  });

  test('a key past its maxQueued gets 429 queue_limit_exceeded; its running limit holds; other keys still start', { timeout: 60_000 }, async () => {
    control.close();
    try {
      const [c1] = await submitMany(easel.url, secrets.get('C')!, ['C #1'], 1);
      await until(() => control.callsOf('C') === 1, 10_000, 'C #1 on the backend');
      const queued = await submitMany(easel.url, secrets.get('C')!, ['C #2', 'C #3'], 1);
      const refused = await as('C', '/v1/images/generations', { method: 'POST', json: { prompt: 'C #4', async: true } });
      assert.equal(refused.status, 429);
      const body = (await refused.json()) as any;
      assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
      assert.equal(body.error.type, 'rate_limit_error');
      assert.equal(body.error.code, 'queue_limit_exceeded');
      assert.match(body.error.message, /'C' has 2 jobs queued, its limit \(fairness maxQueued 2\)/);
      assert.equal(refused.headers.get('retry-after'), '5');

      // Another key's job starts beside C's one running job.
      const [e1] = await submitMany(easel.url, secrets.get('E')!, ['E #1'], 1);
      await until(() => control.callsOf('E') === 1, 10_000, 'E #1 on the backend');
      assert.equal(control.callsOf('C'), 1, "C's queued jobs wait for C's running one");

      // What the key and an admin see.
      const own = (await (await as('C', '/v1/system')).json()) as any;
      assert.deepEqual(own.keys.map((k: any) => [k.name, k.queued, k.running]), [['C', 2, 1]]);
      const all = (await (await easel.api('/v1/system')).json()) as any;
      const names = all.keys.map((k: any) => k.name);
      assert.ok(names.includes('C') && names.includes('E'), `admin sees every key: ${names}`);
      const metrics = await (await fetch(`${easel.url}/metrics`)).text();
      assert.match(metrics, /easel_key_jobs\{key="C",state="queued"\} 2/);
      assert.match(metrics, /easel_key_jobs\{key="C",state="running"\} 1/);
      assert.match(metrics, /easel_queue_limit_refusals_total\{scope="key"\} 1/);

      control.open();
      await until(async () => (await times([c1!, e1!, ...queued])).every((j) => j.status === 'succeeded'), 20_000, "C's and E's jobs");
      assert.equal(control.peak.get('C'), 1, 'C never ran two at once');
      // With room again, C may submit.
      assert.equal((await as('C', '/v1/images/generations', { method: 'POST', json: { prompt: 'C #5', async: true } })).status, 202);
    } finally {
      control.open();
    }
  });

  test('a batch of a key whose queue is full waits instead of failing, and then completes', { timeout: 60_000 }, async () => {
    control.close();
    try {
      const res = await as('D', '/v1/images/batches', { method: 'POST', json: { requests: Array.from({ length: 8 }, (_, i) => ({ prompt: `D batch #${i}` })) } });
      assert.equal(res.status, 201);
      const batch = (await res.json()) as any;
      await until(async () => control.callsOf('D') === 1 && (await queuedOf('D')) === 2, 10_000, "D's queue to fill");
      // Several pump ticks: nothing more is queued, nothing fails.
      for (let i = 0; i < 10; i++) {
        await new Promise((r) => setTimeout(r, 50));
        assert.ok((await queuedOf('D')) <= 2);
      }
      const waiting = (await (await as('D', `/v1/images/batches/${batch.id}`)).json()) as any;
      assert.equal(waiting.status, 'in_progress');
      assert.equal(waiting.counts.failed, 0, JSON.stringify(waiting.counts));
      control.open();
      let done: any;
      await until(async () => {
        done = (await (await as('D', `/v1/images/batches/${batch.id}`)).json()) as any;
        return done.status !== 'in_progress';
      }, 30_000, 'the batch to finish');
      assert.equal(done.status, 'completed');
      assert.equal(done.counts.succeeded, 8, JSON.stringify(done.counts));
      assert.equal(control.peak.get('D'), 1);
    } finally {
      control.open();
    }
  });
});
