/**
 * Batches: submission (JSON, array, JSONL) with per-request validation, progress and cost, results,
 * cancel, low priority; a 200-request batch paced under its spend cap that survives a worker
 * restart; and `easel batch`, which saves images as they finish and resumes when run again.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { childCwd, childEnv } from '../support/child-env.ts';
import { EASEL_BIN } from '../support/processes.ts';
import { sleep, until } from './support.ts';

const run = promisify(execFile);
const PRICE = 0.016; // dall-e-2 256x256

async function batchOf(easel: TestEasel, id: string): Promise<any> {
  return (await (await easel.api(`/v1/images/batches/${id}`)).json()) as any;
}

async function waitForBatch(easel: TestEasel, id: string, timeoutMs = 60_000): Promise<any> {
  let b: any;
  await until(async () => {
    b = await batchOf(easel, id);
    return b.status !== 'in_progress';
  }, timeoutMs, `batch ${id} to finish`);
  return b;
}

describe('batches through the API', () => {
  let easel: TestEasel;
  before(async () => {
    easel = await startEasel({ overrides: { batches: { maxRequests: 50, pumpIntervalMs: 50 } } });
  });
  after(() => easel.close());

  test('a JSON batch runs at low priority and reports counts, progress, cost and results', async () => {
    const res = await easel.api('/v1/images/batches', {
      method: 'POST',
      json: {
        model: 'dall-e-2',
        metadata: { campaign: 'spring' },
        requests: [
          { prompt: 'a tulip', size: '256x256', custom_id: 'tulip' },
          { prompt: 'a daffodil', size: '256x256', custom_id: 'daffodil', n: 2 },
          { custom_id: 'openai-style', method: 'POST', url: '/v1/images/generations', body: { prompt: 'a crocus', size: '256x256' } },
        ],
      },
    });
    assert.equal(res.status, 201);
    const created = (await res.json()) as any;
    assert.match(created.id, /^batch_/);
    assert.equal(created.object, 'image.batch');
    assert.equal(created.total, 3);
    assert.equal(created.priority, 'low');
    assert.equal(res.headers.get('location'), `${easel.url}/v1/images/batches/${created.id}`);
    const done = await waitForBatch(easel, created.id);
    assert.equal(done.status, 'completed');
    assert.deepEqual(done.counts, { pending: 0, queued: 0, running: 0, succeeded: 3, failed: 0, canceled: 0 });
    assert.equal(done.progress, 1);
    assert.equal(done.cost_usd, 4 * PRICE);
    const results = (await (await easel.api(`/v1/images/batches/${created.id}/results`)).json()) as any;
    assert.deepEqual(results.data.map((r: any) => [r.index, r.custom_id, r.status, r.data.length]), [[0, 'tulip', 'succeeded', 1], [1, 'daffodil', 'succeeded', 2], [2, 'openai-style', 'succeeded', 1]]);
    const job = await waitForJob(easel, results.data[0].job_id);
    assert.equal(job.priority, 'low');
    assert.equal(job.batch_id, created.id);
    assert.deepEqual(job.metadata, { campaign: 'spring' });
    const list = (await (await easel.api('/v1/images/batches?limit=5')).json()) as any;
    assert.ok(list.data.some((b: any) => b.id === created.id));
  });

  test('JSONL uploads, options in the query string', async () => {
    const body = ['{"prompt":"line one","size":"256x256"}', '', '{"prompt":"line two","size":"256x256","custom_id":"two"}'].join('\n');
    const res = await easel.api('/v1/images/batches?model=dall-e-2&priority=normal&hourly_spend_cap_usd=5', { method: 'POST', headers: { 'content-type': 'application/jsonl' }, body });
    assert.equal(res.status, 201);
    const b = (await res.json()) as any;
    assert.equal(b.total, 2);
    assert.equal(b.priority, 'normal');
    assert.equal(b.hourly_spend_cap_usd, 5);
    assert.equal((await waitForBatch(easel, b.id)).counts.succeeded, 2);
  });

  test('every request is validated up front, naming the request and field', async () => {
    const bad = async (init: any, param: string, code?: string) => {
      const res = await easel.api('/v1/images/batches', { method: 'POST', ...init });
      const body = (await res.json()) as any;
      assert.ok(res.status === 400 || res.status === 404, JSON.stringify(body));
      assert.equal(body.error.param, param, JSON.stringify(body));
      if (code) assert.equal(body.error.code, code);
      return body;
    };
    await bad({ json: { requests: [{ prompt: 'ok' }, { prompt: 'x', size: 'huge' }] } }, 'requests[1].size');
    await bad({ json: { requests: [{ prompt: '' }] } }, 'requests[0].prompt');
    await bad({ json: { requests: [{ prompt: 'a', model: 'nope' }] } }, 'requests[0].model', 'model_not_found');
    await bad({ json: { requests: [] } }, 'requests');
    await bad({ json: { requests: Array.from({ length: 51 }, () => ({ prompt: 'p' })) } }, 'requests', 'batch_too_large');
    await bad({ json: { requests: [{ prompt: 'a', custom_id: 'x' }, { prompt: 'b', custom_id: 'x' }] } }, 'requests[1].custom_id', 'duplicate_custom_id');
    await bad({ json: { requests: [{ prompt: 'a' }], hourly_spend_cap_usd: -1 } }, 'hourly_spend_cap_usd');
    const jsonl = await bad({ headers: { 'content-type': 'application/x-ndjson' }, body: '{"prompt":"ok"}\n{"prompt":"a","n":0}' }, 'requests[1].n');
    assert.match(jsonl.error.message, /line 2/);
  });

  test('cancel drops waiting requests and stops queued jobs', async () => {
    easel.standin.setLatency(400);
    try {
      const res = await easel.api('/v1/images/batches', { method: 'POST', json: { requests: Array.from({ length: 30 }, (_, i) => ({ prompt: `cancel me ${i}`, model: 'dall-e-2', size: '256x256' })) } });
      const b = (await res.json()) as any;
      await until(async () => (await batchOf(easel, b.id)).counts.running > 0, 10_000, 'a running job');
      const canceled = (await (await easel.api(`/v1/images/batches/${b.id}/cancel`, { method: 'POST' })).json()) as any;
      assert.equal(canceled.status, 'canceled');
      await until(async () => {
        const x = await batchOf(easel, b.id);
        return x.counts.queued + x.counts.running + x.counts.pending === 0;
      }, 15_000, 'everything to end');
      const end = await batchOf(easel, b.id);
      assert.ok(end.counts.canceled > 0);
      assert.equal(end.counts.succeeded + end.counts.canceled + end.counts.failed, 30);
      assert.equal((await easel.api(`/v1/images/batches/${b.id}/cancel`, { method: 'POST' })).status, 200);
    } finally {
      easel.standin.setLatency(0);
    }
  });

  test("another key's batch is not found", async () => {
    const { createApiKey } = await import('../../src/auth/api-keys.ts');
    const stranger = (await createApiKey(easel.runtime.keys, { name: 'stranger' })).secret;
    const res = await easel.api('/v1/images/batches', { method: 'POST', json: { requests: [{ prompt: 'mine', model: 'dall-e-2', size: '256x256' }] } });
    const b = (await res.json()) as any;
    assert.equal((await easel.api(`/v1/images/batches/${b.id}`, { key: stranger })).status, 404);
    assert.equal((await easel.api(`/v1/images/batches/${b.id}/results`, { key: stranger })).status, 404);
  });
});

describe('a 200-request batch under a spend cap, across a worker restart', () => {
  let standin: OpenAIStandin;
  let api: TestEasel;
  let worker: TestEasel | undefined;
  let dataDir: string;
  const WINDOW = 1; // seconds: the "hourly" cap's window, shortened for the test
  const PER_WINDOW = 30;
  const CAP = PER_WINDOW * PRICE;
  const overrides = { batches: { capWindowSeconds: WINDOW, maxInFlight: 50, pumpIntervalMs: 50 }, worker: { concurrency: 16 } };

  before(async () => {
    standin = await startOpenAIStandin({ strict: false, latencyMs: 20 });
    dataDir = mkdtempSync(join(tmpdir(), 'easel-batch-'));
    api = await startEasel({ existingStandin: standin, dataDir, roles: { api: true, worker: false }, overrides });
  });
  after(async () => {
    await worker?.close();
    await api.close();
    await standin.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test('finishes every request, never spends more than the cap in a window, and resumes after a restart', async () => {
    const requests = Array.from({ length: 200 }, (_, i) => ({ prompt: `capped ${i}`, model: 'dall-e-2', size: '256x256', custom_id: `r${i}` }));
    const res = await api.api('/v1/images/batches', { method: 'POST', json: { requests, hourly_spend_cap_usd: CAP } });
    assert.equal(res.status, 201);
    const b = (await res.json()) as any;

    worker = await startEasel({ existingStandin: standin, dataDir, roles: { api: false, worker: true }, overrides });
    await until(async () => (await batchOf(api, b.id)).counts.succeeded >= 60, 30_000, '60 done');
    // The worker goes away mid-batch (in-flight jobs get a moment, the rest go back to the queue)…
    await worker.runtime.stop(200);
    worker = undefined;
    const paused = await batchOf(api, b.id);
    assert.equal(paused.status, 'in_progress');
    assert.ok(paused.counts.succeeded < 200);
    await sleep(300);
    assert.equal((await batchOf(api, b.id)).counts.succeeded, paused.counts.succeeded + paused.counts.running, 'nothing runs without a worker (beyond what was finishing)');
    // …and a new one carries on where it stopped.
    worker = await startEasel({ existingStandin: standin, dataDir, roles: { api: false, worker: true }, overrides });
    const done = await waitForBatch(api, b.id, 90_000);
    assert.equal(done.status, 'completed');
    assert.equal(done.counts.succeeded, 200);
    assert.equal(done.counts.failed, 0);
    assert.equal(done.cost_usd, Math.round(200 * PRICE * 1e6) / 1e6);

    // Paced, not failed: spread over windows, none above the cap, nothing left reserved.
    const rows = (await api.runtime.mdb.db.selectFrom('budget_ledger').selectAll().where('scope', '=', `batch:${b.id}`).execute()) as any[];
    assert.ok(rows.length >= Math.ceil(200 / PER_WINDOW), `spread over ${rows.length} windows`);
    for (const r of rows) {
      assert.ok(Number(r.spent_micros) <= Math.round(CAP * 1e6), `window ${r.period} spent ${r.spent_micros}`);
      assert.equal(Number(r.reserved_micros), 0);
    }
    // Every request ran exactly once at the backend.
    const sent = standin.requests.filter((r) => r.path === '/v1/images/generations' && String(r.body?.prompt).startsWith('capped ')).map((r) => r.body!.prompt);
    assert.equal(new Set(sent).size, 200);
  });
});

describe('easel batch (the CLI)', () => {
  let easel: TestEasel;
  let dir: string;
  before(async () => {
    easel = await startEasel({ overrides: { batches: { pumpIntervalMs: 50 } } });
    dir = mkdtempSync(join(tmpdir(), 'easel-batch-cli-'));
  });
  after(async () => {
    await easel.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const cli = (args: string[]) =>
    run(process.execPath, [EASEL_BIN, 'batch', ...args, '--url', easel.url, '--key', easel.adminKey, '--interval', '0.2'], { cwd: childCwd(), env: childEnv() });

  test('submits a file, shows progress with ETA and spend, saves images, and resumes without redoing work', async () => {
    const file = join(dir, 'prompts.jsonl');
    writeFileSync(file, ['"a plain string prompt"', ...Array.from({ length: 4 }, (_, i) => JSON.stringify({ prompt: `cli ${i}`, size: '256x256', custom_id: `pic/${i}` }))].join('\n'));
    const out = join(dir, 'out');
    const first = await cli([file, '--out', out, '--model', 'dall-e-2']);
    assert.match(first.stderr, /submitted batch batch_\w+: 5 requests/);
    assert.match(first.stderr, /\] 100% 5\/5 ok 5 failed 0 · \$0\.\d+ · ETA 0s/);
    assert.match(first.stdout, /completed: 5 succeeded, 0 failed, 0 canceled; spent \$0\.\d+; 5 new image\(s\) saved/);
    const files = readdirSync(out).filter((f) => f.endsWith('.png')).sort();
    assert.deepEqual(files, ['line-00001.png', 'pic_0.png', 'pic_1.png', 'pic_2.png', 'pic_3.png'], 'an unnamed request is named after its line (1-based)');
    assert.ok(existsSync(join(out, '.easel-batch.json')));
    const batches = (await (await easel.api('/v1/images/batches')).json()) as any;
    const again = await cli([file, '--out', out, '--model', 'dall-e-2']);
    assert.match(again.stderr, /resuming batch/);
    assert.match(again.stdout, /0 new image\(s\) saved/);
    const after = (await (await easel.api('/v1/images/batches')).json()) as any;
    assert.equal(after.data.length, batches.data.length, 'no second batch');
  });
});
