import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FalBackend, falAppId } from '../../src/backends/fal/fal-backend.ts';
import type { FalBackendConfigInput } from '../../src/backends/fal/options.ts';
import { FAL_KEY, startFalStandin } from '../support/fal-standin.ts';
import type { FalStandin } from '../support/fal-standin.ts';
import { HOSTILE, abortWith, context, hostileOptions, assertWarnsAbout, isPng, recordingLog, rejection, request, warningText } from './helpers.ts';
import { capabilityProblem, completeSpec, providerOptionsProblem } from '../../src/backends/model-spec.ts';
import { standinPng } from '../support/openai-standin.ts';
import { until } from './standin-kit.ts';

const SCHNELL = 'fal-ai/flux/schnell';

describe('FalBackend against the fal stand-in', () => {
  let standin: FalStandin;
  const make = (config: Partial<FalBackendConfigInput> = {}, deps = {}) =>
    new FalBackend(
      { type: 'fal', name: 'fal', queueUrl: standin.url, jwksUrl: standin.jwksUrl, apiKey: FAL_KEY, pollIntervalMs: 10, maxPollIntervalMs: 30, ...config },
      { retry: { baseDelayMs: 5 }, ...deps },
    );

  before(async () => {
    standin = await startFalStandin();
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
    standin.setHold(false);
  });

  test('submit with Key auth, poll the returned (shortened) status URL through 202s, fetch the result', async () => {
    standin.setHold(true);
    const ctx = context();
    const run = make().generate(
      request({ model: SCHNELL, n: 2, size: { width: 1024, height: 768 }, seed: 9, steps: 4, guidanceScale: 3.5, outputFormat: 'jpeg' }),
      ctx,
    );
    await until('a 202 status answer', () => standin.requests.some((r) => r.path.endsWith('/status') && r.status === 202));
    standin.release();
    const result = await run;
    assert.equal(result.images.length, 2);
    for (const img of result.images) assert.ok(isPng(img.data));
    assert.equal(result.images[0]!.seed, 9);
    const [submit] = standin.submits();
    assert.equal(submit.path, '/fal-ai/flux/schnell');
    assert.equal(submit.headers.authorization, `Key ${FAL_KEY}`);
    assert.deepEqual(submit.json, {
      prompt: 'a red fox in the snow',
      enable_safety_checker: true,
      image_size: { width: 1024, height: 768 },
      num_images: 2,
      seed: 9,
      num_inference_steps: 4,
      guidance_scale: 3.5,
      output_format: 'jpeg',
    });
    const polls = standin.requests.filter((r) => r.path.endsWith('/status'));
    assert.ok(polls.length >= 1);
    for (const p of polls) assert.match(p.path, /^\/fal-ai\/flux\/requests\/[\w-]+\/status$/, 'no endpoint sub-path in the status URL');
    assert.ok(polls.some((p) => p.status === 202), 'saw 202 while queued or running');
    assert.equal(polls.at(-1)!.status, 200);
    const fetched = standin.requests.filter((r) => /^\/fal-ai\/flux\/requests\/[\w-]+$/.test(r.path));
    assert.equal(fetched.length, 1);
    const saved = ctx.lastSaved() as any;
    assert.equal(saved.tasks.length, 1);
    assert.match(saved.tasks[0].status, /\/fal-ai\/flux\/requests\/.+\/status$/);
    assert.equal(ctx.progress.at(-1), 1);
  });

  test('n beyond num_images fans out to several requests, each saved before waiting', async () => {
    const ctx = context();
    const result = await make({ maxImagesPerRequest: 4 }).generate(request({ model: SCHNELL, n: 5, seed: 1 }), ctx);
    assert.equal(result.images.length, 5);
    assert.deepEqual(standin.submits().map((s) => [s.json.num_images, s.json.seed]), [[4, 1], [1, 5]]);
    assert.equal(ctx.saved.length, 2);
  });

  test('a resumed request is waited on, not submitted again', async () => {
    standin.setHold(true);
    const first = new AbortController();
    const ctx1 = context({ signal: first.signal });
    const run1 = make().generate(request({ model: SCHNELL }), ctx1);
    await until('saved', () => ctx1.saved.length === 1);
    abortWith(first, 'lease_lost');
    assert.equal((await rejection(run1)).code, 'aborted');
    assert.ok(!standin.requests.some((r) => r.method === 'PUT'), 'no cancel for a handed-back job');

    const run2 = make().generate(request({ model: SCHNELL }), context({ savedState: ctx1.lastSaved() }));
    await until('resumed', () => standin.requests.filter((r) => r.path.endsWith('/status')).length >= 2);
    standin.release();
    const result = await run2;
    assert.equal(result.images.length, 1);
    assert.equal(standin.submits().length, 1, 'exactly one submission');
  });

  test('canceling the job sends PUT cancel', async () => {
    standin.setHold(true);
    const ac = new AbortController();
    const ctx = context({ signal: ac.signal });
    const run = make().generate(request({ model: SCHNELL }), ctx);
    await until('saved', () => ctx.saved.length === 1);
    abortWith(ac, 'canceled');
    await rejection(run);
    await until('cancel', () => standin.requests.find((r) => r.method === 'PUT' && r.path.endsWith('/cancel')));
    const id = (ctx.lastSaved() as any).tasks[0].id;
    assert.equal(standin.jobs.get(id)!.canceled, true);
  });

  test('flagged images are dropped with a warning; all flagged is a content_policy_violation naming fal', async () => {
    const some = await make().generate(request({ model: SCHNELL, n: 3, prompt: 'nsfw-one cat' }), context());
    assert.equal(some.images.length, 2);
    assert.match(warningText(some.warnings), /safety checker flagged 1 of 3/);
    const err = await rejection(make().generate(request({ model: SCHNELL, n: 2, prompt: 'nsfw cat' }), context()));
    assert.equal(err.code, 'content_policy_violation');
    assert.match(err.message, /^fal refused/);
  });

  test('a failed request surfaces on the result URL: a 422 is invalid_request with the FastAPI detail', async () => {
    const err = await rejection(make().generate(request({ model: SCHNELL, prompt: 'invalid one' }), context()));
    assert.equal(err.code, 'invalid_request');
    assert.equal(err.status, 422);
    assert.match(err.message, /body\.prompt: prompt is not allowed/);
  });

  test('a wrong key is backend_auth and marks the backend unhealthy (with a log line)', async () => {
    const log = recordingLog();
    const backend = make({ apiKey: 'wrong' }, { log });
    const err = await rejection(backend.generate(request({ model: SCHNELL }), context()));
    assert.equal(err.code, 'backend_auth');
    assert.equal((await backend.health()).ok, false);
    assert.equal(log.lines.filter((l) => l.level === 'error').length, 1);
    assert.equal(standin.submits().length, 0);
  });

  test('429 and 503 on submit are retried (fal refused it, nothing was queued)', async () => {
    standin.inject({ status: 429, headers: { 'retry-after': '0' }, match: (r) => r.method === 'POST' });
    standin.inject({ status: 503, match: (r) => r.method === 'POST' });
    const result = await make().generate(request({ model: SCHNELL }), context());
    assert.equal(result.images.length, 1);
    assert.equal(standin.submits().length, 1);
  });

  test('usdPerSecond prices from metrics.inference_time', async () => {
    const result = await make({ usdPerSecond: 0.01 }).generate(request({ model: SCHNELL }), context());
    assert.equal(result.costUsd, 0.004);
  });

  test('app ids drop the endpoint sub-path', () => {
    assert.equal(falAppId('fal-ai/flux/schnell'), 'fal-ai/flux');
    assert.equal(falAppId('fal-ai/fast-sdxl'), 'fal-ai/fast-sdxl');
    assert.equal(falAppId('workflows/me/flow'), 'workflows/me/flow');
  });

  test('hostile provider options never reach fal: count, steps, size, prompt, images and the safety checker stay easel’s', async () => {
    const providerOptions = hostileOptions({
      num_images: 4,
      num_inference_steps: 50,
      image_size: 'landscape_16_9',
      enable_safety_checker: false,
      image_url: 'https://hostile.example/x.png',
      loras: [{ path: 'hostile/lora', scale: 1 }],
      sync_mode: true,
    });
    const result = await make().generate(request({ model: SCHNELL, n: 1, seed: 2, steps: 3, providerOptions }), context());
    assert.equal(result.images.length, 1);
    const [submit] = standin.submits();
    assert.equal(submit.path, '/fal-ai/flux/schnell');
    assert.deepEqual(submit.json, {
      prompt: 'a red fox in the snow',
      num_images: 1,
      seed: 2,
      num_inference_steps: 3,
      output_format: 'png',
      enable_safety_checker: true,
      sync_mode: true,
    });
    assert.doesNotMatch(JSON.stringify(submit.json), HOSTILE);
    assertWarnsAbout(result.warnings, ['n', 'model', 'size', 'prompt', 'image', 'input.prompt', '__proto__', 'num_images', 'num_inference_steps', 'image_size', 'enable_safety_checker', 'image_url', 'loras']);
  });

  test('each endpoint declares itself: text-to-image, image-to-image with strength, inpainting with a mask', async () => {
    const backend = make();
    const spec = (m: string) => completeSpec(backend.modelSpec(m), m);
    const schnell = spec(SCHNELL);
    assert.deepEqual(schnell.capabilities, { generate: true, edit: false, mask: false, variation: false, maxInputImages: 0 });
    assert.equal(providerOptionsProblem(SCHNELL, schnell, { sync_mode: true, acceleration: 'high' }), undefined);
    assert.equal(providerOptionsProblem(SCHNELL, schnell, { strength: 0.5 })?.code, 'unknown_parameter');
    assert.equal(providerOptionsProblem(SCHNELL, schnell, { num_inference_steps: 4 })?.code, 'provider_option_not_allowed');
    assert.equal(providerOptionsProblem('fal-ai/flux-lora', spec('fal-ai/flux-lora'), { acceleration: 'high' })?.code, 'invalid_value');
    const i2i = spec('fal-ai/flux/dev/image-to-image');
    assert.equal(capabilityProblem('i2i', i2i, { kind: 'generation', inputImages: 0, mask: false })?.code, 'unsupported_capability');
    assert.equal(capabilityProblem('i2i', i2i, { kind: 'edit', inputImages: 1, mask: false }), undefined);
    assert.equal(capabilityProblem('i2i', i2i, { kind: 'edit', inputImages: 1, mask: true })?.code, 'unsupported_capability');
    assert.equal(providerOptionsProblem('i2i', i2i, { strength: 0.6 }), undefined);
    const inpaint = spec('fal-ai/flux-lora/inpainting');
    assert.equal(capabilityProblem('inpaint', inpaint, { kind: 'edit', inputImages: 1, mask: true }), undefined);
    assert.equal(schnell.pricing, 'price-table');
    assert.equal(make({ usdPerSecond: 0.001 }).modelSpec(SCHNELL).pricing, 'provider-reported');

    const png = standinPng(16, 16).png;
    await backend.generate(request({ kind: 'edit', model: 'fal-ai/flux/dev/image-to-image', inputImages: [{ data: png, mediaType: 'image/png' }], providerOptions: { strength: 0.6 } }), context());
    const [submit] = standin.submits();
    assert.equal(submit.json.strength, 0.6);
    assert.match(submit.json.image_url, /^data:image\/png;base64,/);
    const refused = await rejection(backend.generate(request({ kind: 'edit', model: SCHNELL, inputImages: [{ data: png, mediaType: 'image/png' }] }), context()));
    assert.equal(refused.code, 'invalid_request');
  });
});
