/**
 * ComfyUI and A1111 pools behind a real easel (API + worker + queue): progress on the job and its
 * event stream, cancel through the API, batching of concurrent jobs, /ready under overload and with
 * every host down.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { openEvents } from '../support/sse.ts';
import { imageColor, startComfyUIStandin } from '../support/comfyui-standin.ts';
import type { ComfyUIStandin } from '../support/comfyui-standin.ts';
import { startA1111Standin } from '../support/a1111-standin.ts';
import type { A1111Standin } from '../support/a1111-standin.ts';
import { until } from './helpers.ts';

// At the tests' 64×64: 10 ms a step.
const latency = { msPerStep: 640, overheadMs: 5, batchFactor: 0.6, switchMs: 30 };

async function submit(easel: TestEasel, body: Record<string, unknown>): Promise<string> {
  const res = await easel.api('/v1/images/generations', {
    method: 'POST',
    headers: { prefer: 'respond-async' },
    json: { model: 'sd15', size: '64x64', steps: 20, response_format: 'url', ...body },
  });
  assert.equal(res.status, 202, await res.clone().text());
  return ((await res.json()) as any).id;
}

async function pixel(easel: TestEasel, job: any): Promise<[number, number, number]> {
  const res = await fetch(job.result?.data?.[0]?.url ?? job.data?.[0]?.url);
  const raw = await sharp(Buffer.from(await res.arrayBuffer())).raw().toBuffer();
  return [raw[0]!, raw[1]!, raw[2]!];
}

describe('GPU pools behind easel', () => {
  let comfy: ComfyUIStandin[];
  let webui: A1111Standin;
  let easel: TestEasel;

  before(async () => {
    comfy = [await startComfyUIStandin({ latency }), await startComfyUIStandin({ latency })];
    webui = await startA1111Standin({ latency });
    easel = await startEasel({
      overrides: {
        worker: { concurrency: 16 },
        backends: [
          { type: 'comfyui', name: 'gpus', hosts: comfy.map((c) => c.url), maxBatchSize: 4, maxQueueDepth: 3, healthIntervalSeconds: 0.1, hostLostAfterSeconds: 1, reconnectDelayMs: 20, historyPollMs: 20 },
          { type: 'a1111', name: 'webui', hosts: [webui.url], healthIntervalSeconds: 0.1, progressPollMs: 20 },
        ],
        models: [
          { name: 'sd15', backend: 'gpus', model: 'sd15.safetensors', default: true },
          { name: 'sdxl', backend: 'gpus', model: 'sd_xl_base_1.0.safetensors' },
          { name: 'webui-sd15', backend: 'webui', model: 'sd15.safetensors' },
        ],
      },
    });
  });
  after(async () => {
    await easel?.close();
    for (const c of comfy ?? []) await c.close();
    await webui?.close();
  });

  test('a job reports progress on its record and its event stream, then succeeds with the image', async () => {
    const id = await submit(easel, { prompt: 'progress please', steps: 60 });
    const stream = await openEvents(easel, id);
    const progress = await stream.waitFor((e) => e.event === 'progress' && e.json.progress > 0 && e.json.progress < 1, 10_000);
    assert.ok(progress.json.progress > 0);
    const mid = (await (await easel.api(`/v1/images/jobs/${id}`)).json()) as any;
    assert.ok(mid.status === 'running' || mid.status === 'succeeded');
    if (mid.status === 'running') assert.ok(mid.progress > 0, `job progress ${mid.progress}`);
    await stream.waitFor((e) => e.event === 'done', 10_000);
    stream.close();
    const job = await waitForJob(easel, id);
    assert.equal(job.status, 'succeeded');
    const ex = [...comfy[0]!.executions, ...comfy[1]!.executions].find((e) => e.prompt === 'progress please')!;
    assert.deepEqual(await pixel(easel, job), imageColor('progress please', ex.seed, 0));
  });

  test('cancel through the API interrupts the running prompt', async () => {
    const id = await submit(easel, { prompt: 'cancel me', steps: 400 });
    await until(() => comfy.some((c) => c.executions.some((e) => e.prompt === 'cancel me')), 10_000, 'running on a host');
    const res = await easel.api(`/v1/images/jobs/${id}/cancel`, { method: 'POST' });
    assert.ok(res.status < 300, `cancel answered ${res.status}`);
    const job = await waitForJob(easel, id);
    assert.equal(job.status, 'canceled');
    await until(() => comfy.some((c) => c.requests.includes('POST /interrupt')), 5000, 'interrupt');
    const ex = [...comfy[0]!.executions, ...comfy[1]!.executions].find((e) => e.prompt === 'cancel me')!;
    await until(() => ex.outcome === 'interrupted', 5000, 'interrupted');
  });

  test('concurrent jobs for the same prompt are batched on the GPU and each gets its own image', async () => {
    // Occupy both hosts so the next jobs queue in the pool.
    const busy = [await submit(easel, { prompt: 'busy 1', steps: 40 }), await submit(easel, { prompt: 'busy 2', steps: 40 })];
    await until(() => comfy.every((c) => c.executions.some((e) => e.prompt.startsWith('busy') && e.endedAt === 0)), 10_000, 'both busy');
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(await submit(easel, { prompt: 'one prompt, four jobs', steps: 10 }));
    const jobs = await Promise.all(ids.map((id) => waitForJob(easel, id)));
    await Promise.all(busy.map((id) => waitForJob(easel, id)));
    assert.ok(jobs.every((j) => j.status === 'succeeded'), JSON.stringify(jobs.map((j) => j.status)));
    const runs = [...comfy[0]!.executions, ...comfy[1]!.executions].filter((e) => e.prompt === 'one prompt, four jobs');
    assert.ok(runs.length < 4, `batched into ${runs.length} prompt(s) of ${runs.map((r) => r.batch)}`);
    assert.equal(runs.reduce((a, r) => a + r.batch, 0), 4);
    const expected = runs.flatMap((r) => Array.from({ length: r.batch }, (_, i) => imageColor(r.prompt, r.seed, i).join(',')));
    const got = await Promise.all(jobs.map(async (j) => (await pixel(easel, j)).join(',')));
    assert.deepEqual([...got].sort(), [...expected].sort(), 'every image of the batches went to exactly one job');
  });

  test('the A1111 backend runs jobs through the same worker', async () => {
    const id = await submit(easel, { model: 'webui-sd15', prompt: 'via the webui', steps: 5 });
    const job = await waitForJob(easel, id);
    assert.equal(job.status, 'succeeded');
    assert.equal(webui.executions.at(-1)!.prompt, 'via the webui');
  });

  test('/ready answers 503 when the pool is overloaded, and again 200 when it drains', async () => {
    const ids = [];
    for (let i = 0; i < 8; i++) ids.push(await submit(easel, { prompt: `load ${i}`, steps: 30, model: i % 2 ? 'sd15' : 'sdxl' }));
    let body: any;
    await until(async () => {
      const res = await fetch(`${easel.url}/ready`);
      body = await res.json();
      return res.status === 503;
    }, 10_000, '/ready 503');
    assert.equal(body.checks.capacity.message, 'the backends are overloaded');
    const system = (await (await easel.api('/v1/system')).json()) as any;
    assert.match(JSON.stringify(system.backends), /overloaded: \d+ jobs waiting for a GPU host \(limit 3\)/, 'admins see why in /v1/system');
    assert.equal(body.checks.backends.ok, true);
    await Promise.all(ids.map((id) => waitForJob(easel, id, { timeoutMs: 30_000 })));
    await until(async () => (await fetch(`${easel.url}/ready`)).status === 200, 10_000, '/ready 200');
  });
});

describe('GPU pool with every host down', () => {
  test('/ready is 503 naming the hosts, and recovers when one returns', async () => {
    const host = await startComfyUIStandin({ latency });
    const easel = await startEasel({
      overrides: {
        backends: [{ type: 'comfyui', name: 'gpus', hosts: [host.url], healthIntervalSeconds: 0.05, unhealthyAfterFailures: 1 }],
        models: [{ name: 'sd15', backend: 'gpus', model: 'sd15.safetensors', default: true }],
      },
    });
    try {
      await host.die();
      let body: any;
      await until(async () => {
        const res = await fetch(`${easel.url}/ready`);
        body = await res.json();
        return res.status === 503;
      }, 10_000, '/ready 503');
      assert.equal(body.checks.backends.message, 'no backend can take work');
      const system = (await (await easel.api('/v1/system')).json()) as any;
      assert.match(system.backends[0].message, /0\/1 hosts up/, 'admins see why in /v1/system');
      await host.revive();
      await until(async () => (await fetch(`${easel.url}/ready`)).status === 200, 10_000, '/ready 200 again');
      const id = await submit(easel, { prompt: 'after the outage', steps: 2 });
      assert.equal((await waitForJob(easel, id)).status, 'succeeded');
    } finally {
      await easel.close();
      await host.close();
    }
  });
});
