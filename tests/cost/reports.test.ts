/**
 * What the money went on: GET /v1/usage (per key, by day, model and backend), /metrics in Prometheus
 * format (cost per image, latency histograms per model and backend, jobs by state, queue depth,
 * backend health, GPU time), a worker-only process's metrics port, and `easel costs report`
 * (cost per image, GPU utilization, break-even volume from measured GPU-seconds).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { DEFAULT_STANDIN_KEY, startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { childCwd, childEnv } from '../support/child-env.ts';
import { EASEL_BIN, writeConfig } from '../support/processes.ts';
import { fakeGpuFactories, gpuControl } from './support.ts';

const run = promisify(execFile);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

describe('usage, metrics and cost reports', () => {
  let easel: TestEasel;
  let config: Record<string, any>;
  const gpu = gpuControl();
  let tenant: string;
  let standin: OpenAIStandin;

  before(async () => {
    gpu.gpuMs = 1800;
    standin = await startOpenAIStandin({ strict: false });
    // The harness's stand-in plus a self-hosted "GPU" backend at $2/GPU-hour.
    config = {
      backends: [
        { type: 'openai', name: 'standin', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY, extraBodyFields: true, modelRules: 'on', listPrices: true },
        { type: 'openai', name: 'gpu', baseUrl: 'http://127.0.0.1:9/v1' },
      ],
      models: [
        { name: 'test-model', backend: 'standin', model: 'gpt-image-1', default: true },
        { name: 'dall-e-3', backend: 'standin', model: 'dall-e-3' },
        { name: 'sd-turbo', backend: 'gpu', model: 'sd-turbo' },
      ],
      costModel: { backends: { gpu: { usdPerGpuHour: 2 } } },
    };
    easel = await startEasel({ existingStandin: standin, runtime: { backendFactories: fakeGpuFactories({ gpu }) }, overrides: config });
    tenant = (await createApiKey(easel.runtime.keys, { name: 'tenant' })).secret;
    const submit = async (json: Record<string, unknown>, key?: string) => {
      const res = await easel.api('/v1/images/generations', { method: 'POST', key, json: { async: true, ...json } });
      return waitForJob(easel, ((await res.json()) as any).id, { key });
    };
    for (let i = 0; i < 3; i++) await submit({ prompt: `gpu ${i}`, model: 'sd-turbo', size: '1024x1024' });
    await submit({ prompt: 'hosted', model: 'dall-e-3', size: '1024x1024' });
    await submit({ prompt: 'two hosted', model: 'dall-e-3', size: '1024x1024' }, tenant);
    await submit({ prompt: 'seeded', model: 'dall-e-3', size: '1024x1024', seed: 3 }, tenant);
    await submit({ prompt: 'seeded', model: 'dall-e-3', size: '1024x1024', seed: 3 }, tenant); // a cache hit
  });
  after(async () => {
    await easel.close();
    await standin.close();
  });

  test('GET /v1/usage: one key’s spend by day, model and backend, images and cache savings', async () => {
    const mine = (await (await easel.api('/v1/usage', { key: tenant })).json()) as any;
    assert.equal(mine.object, 'usage');
    assert.equal(mine.key_name, 'tenant');
    assert.deepEqual(mine.totals, { jobs: 3, images: 3, cost_usd: 0.08, cache_hits: 1, saved_usd: 0.04 });
    assert.equal(mine.by_day.length, 1);
    assert.equal(mine.by_day[0].date, new Date().toISOString().slice(0, 10));
    assert.deepEqual(mine.by_model.map((m: any) => [m.model, m.images, m.cost_usd]), [['dall-e-3', 3, 0.08]]);
    assert.deepEqual(mine.by_backend.map((m: any) => [m.backend, m.jobs, m.cost_usd]).sort(), [['cache', 1, 0], ['standin', 2, 0.08]]);
    assert.deepEqual(mine.cache, { hits: 1, exact_hits: 1, semantic_hits: 0, hit_rate: 0.3333, saved_usd: 0.04 });
    const admin = (await (await easel.api('/v1/usage')).json()) as any;
    assert.equal(admin.totals.jobs, 4, 'the admin key’s own jobs only');
    assert.deepEqual(admin.by_model.map((m: any) => m.model).sort(), ['dall-e-3', 'sd-turbo']);
    const gpuModel = admin.by_model.find((m: any) => m.model === 'sd-turbo');
    assert.equal(gpuModel.cost_usd, 0.003, '3 × 1.8 GPU-seconds at $2/GPU-hour');
    const all = (await (await easel.api('/v1/usage?key_id=all')).json()) as any;
    assert.equal(all.totals.jobs, 7);
    const other = (await (await easel.api('/v1/usage?key_id=tenant')).json()) as any;
    assert.equal(other.totals.jobs, 3);
    assert.equal((await easel.api('/v1/usage?key_id=all', { key: tenant })).status, 403);
    assert.equal((await easel.api('/v1/usage?from=yesterday')).status, 400);
    const empty = (await (await easel.api('/v1/usage?from=2001-01-01&to=2001-01-31')).json()) as any;
    assert.equal(empty.totals.jobs, 0);
  });

  test('GET /metrics: cost per image, latency histograms per model and backend, state gauges', async () => {
    const res = await fetch(`${easel.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    const text = await res.text();
    for (const re of [
      /easel_image_cost_usd_bucket\{le="0\.001",model="sd-turbo",backend="gpu"\} 3/,
      /easel_image_cost_usd_sum\{model="dall-e-3",backend="standin"\} 0\.12/,
      /easel_job_duration_seconds_bucket\{le="\+Inf",model="sd-turbo",backend="gpu",status="succeeded"\} 3/,
      /easel_backend_call_seconds_count\{model="dall-e-3",backend="standin",outcome="ok"\} 3/,
      /easel_spend_usd_total\{model="sd-turbo",backend="gpu"\} 0\.003/,
      /easel_images_total\{model="dall-e-3",backend="standin"\} 3/,
      /easel_gpu_seconds_total\{backend="gpu",host=""\} 5\.4/,
      /easel_jobs\{state="succeeded"\} 7/,
      /easel_queue_depth\{state="waiting"\} 0/,
      /easel_backend_healthy\{backend="gpu"\} 1/,
      /easel_backend_overloaded\{backend="gpu"\} 0/,
      /easel_cache_hit_ratio 0\.5/, // one miss, one hit
    ]) {
      assert.match(text, re);
    }
  });

  test('a worker-only process serves its own /metrics port; a bearer token guards it when set', async () => {
    const port = await freePort();
    const worker = await startEasel({
      existingStandin: easel.standin,
      dataDir: easel.dataDir,
      roles: { api: false, worker: true },
      runtime: { backendFactories: fakeGpuFactories({ gpu }) },
      overrides: { ...config, metrics: { workerPort: port, bearerToken: 'metrics-secret' } },
    });
    try {
      assert.equal((await fetch(`http://127.0.0.1:${port}/metrics`)).status, 401);
      const res = await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: 'Bearer metrics-secret' } });
      assert.equal(res.status, 200);
      assert.match(await res.text(), /easel_jobs\{state="succeeded"\} 7/);
    } finally {
      await worker.close();
    }
  });

  test('GET /v1/usage/report: the same report for admin keys (break-even included); other keys 403; bad days 400', async () => {
    const res = await easel.api('/v1/usage/report?days=1');
    assert.equal(res.status, 200);
    const json = (await res.json()) as any;
    const be = json.break_even[0];
    assert.equal(be.model, 'sd-turbo');
    assert.equal(be.self_hosted_usd_per_image, 0.001);
    assert.equal(be.against.find((a: any) => a.hosted.startsWith('dall-e-3')).break_even_images_per_month, 36_500);
    assert.equal(json.models.find((m: any) => m.model === 'sd-turbo').images, 3);
    const denied = await easel.api('/v1/usage/report', { key: tenant });
    assert.equal(denied.status, 403);
    assert.equal(((await denied.json()) as any).error.code, 'permission_denied');
    const bad = await easel.api('/v1/usage/report?days=soon');
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as any).error.param, 'days');
  });

  test('easel costs report: cost per image, GPU utilization and break-even from measured GPU time', async () => {
    const file = writeConfig(join(easel.dataDir, 'easel.yaml'), { dataDir: easel.dataDir, ...config });
    const env = childEnv();
    const textRun = await run(process.execPath, [EASEL_BIN, '--config', file, 'costs', 'report', '--days', '1'], { cwd: childCwd(), env });
    const text = textRun.stdout;
    assert.match(text, /Cost per image by model/);
    assert.match(text, /sd-turbo\s+gpu\*\s+3\s+\$0\.00300\s+\$0\.00100\s+1\.8/);
    assert.match(text, /dall-e-3\s+standin\s+3\s+\$0\.1200\s+\$0\.0400\s+—\s+1 \(\$0\.0400\)/);
    assert.match(text, /GPU utilization\n {2}gpu\s+\d+\.\d% of 1 GPU\(s\) busy \(5\.4s of GPU time/);
    assert.match(text, /sd-turbo on gpu: 1\.8s GPU\/image → \$0\.00100\/image; the GPU costs \$1460\/month and can make 1,460,000 images/);
    assert.match(text, /vs dall-e-3 \(openai\)\s+\$0\.0400\/image: a dedicated GPU pays off above 36,500 images\/month/);
    const json = JSON.parse((await run(process.execPath, [EASEL_BIN, '--config', file, 'costs', 'report', '--days', '1', '--json'], { cwd: childCwd(), env })).stdout);
    const be = json.break_even[0];
    assert.equal(be.model, 'sd-turbo');
    assert.equal(be.gpu_seconds_per_image, 1.8);
    assert.equal(be.self_hosted_usd_per_image, 0.001);
    assert.equal(be.capacity_images_per_month, 1_460_000);
    const vsHosted = be.against.find((a: any) => a.hosted.startsWith('dall-e-3'));
    assert.equal(vsHosted.break_even_images_per_month, 36_500);
    assert.ok(json.gpu[0].utilization > 0 && json.gpu[0].utilization <= 1);
    assert.ok(json.models.find((m: any) => m.model === 'dall-e-3').cache_hits === 1);
  });
});
