/**
 * Routing: aliases pick the cheapest healthy capable model (and the size the use needs), each job
 * says why it went where it went, declared fallbacks take over when a backend fails or is down, and
 * circuits open on a backend that keeps failing and close again after a good trial call.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { DEFAULT_STANDIN_KEY, startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { inferTextInImage, inferTier, promptNeedsText, snapSize } from '../../src/routing/router.ts';
import { CircuitBreakers } from '../../src/routing/circuit.ts';
import { fakeGpuFactories, gpuControl, sleep, until } from './support.ts';

describe('router helpers', () => {
  test('sizes snap to the offered size nearest in aspect, then area', () => {
    const offered = ['1024x1024', '1536x1024', '1024x1536'];
    assert.deepEqual(snapSize({ width: 1792, height: 1024 }, offered), { width: 1536, height: 1024 });
    assert.deepEqual(snapSize({ width: 1200, height: 630 }, offered), { width: 1536, height: 1024 });
    assert.deepEqual(snapSize({ width: 256, height: 256 }, offered), { width: 1024, height: 1024 });
    assert.deepEqual(snapSize({ width: 256, height: 256 }, ['256x256', '512x512', '1024x1024']), { width: 256, height: 256 });
    assert.deepEqual(snapSize({ width: 2048, height: 2048 }, ['1024x1024', '1792x1024']), { width: 1024, height: 1024 });
    assert.deepEqual(snapSize({ width: 1200, height: 630 }, undefined), { width: 1200, height: 630 });
  });

  test('tiers and text rendering are inferred from model ids', () => {
    assert.equal(inferTier('dall-e-2'), 'preview');
    assert.equal(inferTier('sd-turbo'), 'preview');
    assert.equal(inferTier('black-forest-labs/flux-schnell'), 'preview');
    assert.equal(inferTier('dall-e-3'), 'standard');
    assert.equal(inferTier('sdxl'), 'standard');
    assert.equal(inferTier('gpt-image-1'), 'premium');
    assert.equal(inferTier('black-forest-labs/flux-1.1-pro'), 'premium');
    assert.equal(inferTextInImage('gpt-image-1'), true);
    assert.equal(inferTextInImage('sd-turbo'), false);
    assert.equal(promptNeedsText('a poster with the headline "GRAND OPENING"'), true);
    assert.equal(promptNeedsText('a logo for a bakery'), true);
    assert.equal(promptNeedsText('a red fox in snow'), false);
  });

  test('circuit breaker: opens after the threshold, half-opens after the period, one trial closes or reopens it', () => {
    let now = 0;
    const c = new CircuitBreakers({ failureThreshold: 3, openSeconds: 10, now: () => now });
    c.failure('b');
    c.failure('b');
    assert.equal(c.state('b'), 'closed');
    c.success('b'); // a success resets the count
    c.failure('b');
    c.failure('b');
    assert.equal(c.state('b'), 'closed');
    c.failure('b');
    assert.equal(c.state('b'), 'open');
    assert.equal(c.acquire('b'), false);
    now = 10_000;
    assert.equal(c.state('b'), 'half_open');
    assert.equal(c.acquire('b'), true, 'one trial');
    assert.equal(c.acquire('b'), false, 'only one');
    c.failure('b');
    assert.equal(c.state('b'), 'open', 'a failed trial opens it again');
    now = 20_000;
    assert.equal(c.acquire('b'), true);
    c.success('b');
    assert.equal(c.state('b'), 'closed');
  });
});

describe('routing through the API', () => {
  let standin: OpenAIStandin;
  let easel: TestEasel;
  const gpu = gpuControl();
  const gpu2 = gpuControl();
  const gpu3 = gpuControl();

  before(async () => {
    standin = await startOpenAIStandin({ strict: false });
    gpu.gpuMs = 3000;
    gpu.host = 'gpu-host-a';
    const standinBackend = { type: 'openai', name: 'standin', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY, extraBodyFields: true, modelRules: 'on', listPrices: true };
    const fake = (name: string, extra = {}) => ({ type: 'openai', name, baseUrl: 'http://127.0.0.1:9/v1', ...extra });
    easel = await startEasel({
      existingStandin: standin,
      runtime: { backendFactories: fakeGpuFactories({ gpu, gpu2, gpu3 }) },
      overrides: {
        backends: [standinBackend, fake('gpu'), fake('gpu2', { capabilities: { edit: true } }), fake('gpu3')],
        models: [
          { name: 'test-model', backend: 'standin', model: 'gpt-image-1', default: true },
          { name: 'dall-e-3', backend: 'standin', model: 'dall-e-3' },
          { name: 'dall-e-2', backend: 'standin', model: 'dall-e-2' },
          { name: 'sd-turbo', backend: 'gpu', model: 'sd-turbo' },
          { name: 'sdxl', backend: 'gpu2', model: 'sdxl' },
          { name: 'flaky-model', backend: 'gpu3', model: 'custom-unet', tier: 'standard', textInImage: false, fallback: ['dall-e-2'] },
        ],
        costModel: {
          backends: {
            gpu: { usdPerGpuHour: 1.2, hosts: { 'gpu-host-a': 2.4 }, estimateGpuSecondsPerImage: 2 },
            gpu2: { usdPerGpuHour: 1, estimateGpuSecondsPerImage: 4 },
            gpu3: { usdPerGpuHour: 1 },
          },
        },
        routing: {
          aliases: { wide: { models: ['dall-e-2', 'dall-e-3'], description: 'test alias' }, print: null },
          circuit: { failureThreshold: 2, openSeconds: 1 },
        },
        queue: { maxAttempts: 5 },
      },
    });
  });
  after(async () => {
    await easel.close();
    await standin.close();
  });

  const generate = async (body: Record<string, unknown>) => {
    const res = await easel.api('/v1/images/generations', { method: 'POST', json: { async: true, ...body } });
    const json = (await res.json()) as any;
    assert.equal(res.status, 202, JSON.stringify(json));
    return waitForJob(easel, json.id);
  };
  const setHealth = async (c: typeof gpu, healthy: boolean, overloaded = false) => {
    c.healthy = healthy;
    c.overloaded = overloaded;
    await easel.runtime.router.refreshHealth();
  };

  test('an alias picks the cheapest healthy model, and the job says why', async () => {
    const job = await generate({ prompt: 'a fox', model: 'preview' });
    assert.equal(job.status, 'succeeded');
    assert.equal(job.model, 'sd-turbo');
    assert.equal(job.backend, 'gpu');
    assert.equal(job.routing.alias, 'preview');
    assert.equal(job.routing.requested, 'preview');
    assert.match(job.routing.reason, /alias 'preview' \(tier preview\): cheapest healthy of .*sd-turbo.*dall-e-2.* → sd-turbo on backend gpu/);
    assert.deepEqual(job.routing.candidates.map((c: any) => c.model).sort(), ['dall-e-2', 'sd-turbo']);
    // Self-hosted cost: the host's $/GPU-hour × the GPU time the backend reported (3 s at $2.40/h).
    assert.equal(job.cost.usd, 0.002);
    assert.equal(job.cost.gpu_seconds, 3);
  });

  test('a use-case preset chooses the resolution, snapped to what the model offers', async () => {
    const hero = await generate({ prompt: 'a mountain lake at dawn', model: 'hero_image' });
    assert.equal(hero.model, 'test-model');
    assert.equal(hero.request.size, '1536x1024');
    assert.match(hero.routing.reason, /size 1536x1024 \(the nearest it offers to 1792x1024\)/);
    assert.equal(hero.request.quality, 'high');
    const thumb = await generate({ prompt: 'a tiny icon of a cup', model: 'thumbnail' });
    assert.equal(thumb.request.size, '256x256');
    // The request's own size wins over the preset's.
    const own = await generate({ prompt: 'a tiny icon', model: 'thumbnail', size: '512x512' });
    assert.equal(own.request.size, '512x512');
    // A removed default alias is just an unknown model.
    const gone = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'x', model: 'print' } });
    assert.equal(gone.status, 404);
  });

  test('an unhealthy or overloaded backend is passed over', async () => {
    await setHealth(gpu, false);
    try {
      const job = await generate({ prompt: 'a fox again', model: 'preview' });
      assert.equal(job.model, 'dall-e-2');
      assert.match(job.routing.reason, /sd-turbo .*\[backend gpu is unhealthy/);
    } finally {
      await setHealth(gpu, true);
    }
    await setHealth(gpu, true, true);
    try {
      const job = await generate({ prompt: 'a fox once more', model: 'preview' });
      assert.equal(job.model, 'dall-e-2');
      assert.match(job.routing.reason, /overloaded/);
    } finally {
      await setHealth(gpu, true);
    }
  });

  test('prompts that ask for text go to a model that renders text', async () => {
    const plain = await generate({ prompt: 'a quiet street', model: 'standard' });
    assert.equal(plain.model, 'sdxl', 'sdxl is the cheapest standard model');
    const text = await generate({ prompt: 'a shop front with a sign that says "OPEN 24 HOURS"', model: 'standard' });
    assert.equal(text.model, 'dall-e-3');
    assert.match(text.routing.reason, /asks for text/);
  });

  test('a size a model does not offer rules it out', async () => {
    const job = await generate({ prompt: 'a wide panorama', model: 'wide', size: '1792x1024' });
    assert.equal(job.model, 'dall-e-3');
    const excluded = job.routing.candidates.find((c: any) => c.model === 'dall-e-2');
    assert.match(excluded.note, /does not offer 1792x1024/);
    const sq = await generate({ prompt: 'a square', model: 'wide', size: '1024x1024' });
    assert.equal(sq.model, 'dall-e-2', 'the cheapest that offers it');
  });

  test('a failing backend falls back along the declared chain; the job records it', async () => {
    gpu3.failures.push({ code: 'backend_unavailable', retryable: true });
    const job = await generate({ prompt: 'falls back', model: 'flaky-model' });
    assert.equal(job.status, 'succeeded');
    assert.equal(job.model, 'flaky-model');
    assert.equal(job.backend, 'standin');
    assert.equal(job.routing.fallbacks.length, 1);
    assert.equal(job.routing.fallbacks[0].from, 'flaky-model');
    assert.equal(job.routing.fallbacks[0].to, 'dall-e-2');
    assert.match(job.routing.fallbacks[0].reason, /backend gpu3 failed the previous attempt/);
    // A non-retryable backend failure (bad credentials) falls back too; a refusal of the request does not.
    await sleep(1100); // let gpu3's circuit (2 failures) stay closed for the next check
    easel.runtime.router.circuits.success('gpu3');
    gpu3.failures.push({ code: 'backend_auth', retryable: false });
    const auth = await generate({ prompt: 'bad credentials', model: 'flaky-model' });
    assert.equal(auth.status, 'succeeded');
    assert.equal(auth.backend, 'standin');
    easel.runtime.router.circuits.success('gpu3');
    gpu3.failures.push({ code: 'content_policy_violation', retryable: false });
    const refused = await generate({ prompt: 'refused', model: 'flaky-model' });
    assert.equal(refused.status, 'failed');
    assert.equal(refused.error.code, 'content_policy_violation');
  });

  test('a circuit opens on a backend that keeps failing and closes after a good trial', async () => {
    const circuits = easel.runtime.router.circuits;
    circuits.success('gpu3');
    gpu3.failures.push({ code: 'backend_unavailable', retryable: true }, { code: 'backend_unavailable', retryable: true });
    await generate({ prompt: 'first failure', model: 'flaky-model' });
    await generate({ prompt: 'second failure', model: 'flaky-model' });
    assert.equal(circuits.state('gpu3'), 'open');
    const callsBefore = gpu3.calls.length;
    const skipped = await generate({ prompt: 'while open', model: 'flaky-model' });
    assert.equal(gpu3.calls.length, callsBefore, 'nothing was sent to the open circuit');
    assert.equal(skipped.backend, 'standin');
    assert.match(skipped.routing.reason, /circuit is open/);
    const metrics = await (await fetch(`${easel.url}/metrics`)).text();
    assert.match(metrics, /easel_circuit_open\{backend="gpu3"\} 1/);
    await sleep(1100);
    assert.equal(circuits.state('gpu3'), 'half_open');
    const trial = await generate({ prompt: 'trial', model: 'flaky-model' });
    assert.equal(trial.backend, 'gpu3');
    assert.equal(circuits.state('gpu3'), 'closed');
  });

  test('a concrete model runs where it is configured, and says so', async () => {
    const job = await generate({ prompt: 'plain', model: 'dall-e-3' });
    assert.equal(job.backend, 'standin');
    assert.equal(job.routing.reason, "model 'dall-e-3' as requested");
    const unknown = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'x', model: 'nope' } });
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as any).error.code, 'model_not_found');
    await until(() => true);
  });
});
