import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BflBackend, modelShape } from '../../src/backends/bfl/bfl-backend.ts';
import type { BflBackendConfigInput } from '../../src/backends/bfl/options.ts';
import { BFL_KEY, startBflStandin } from '../support/bfl-standin.ts';
import type { BflStandin } from '../support/bfl-standin.ts';
import { HOSTILE, abortWith, context, hostileOptions, assertWarnsAbout, isPng, recordingLog, rejection, request, warningText } from './helpers.ts';
import { capabilityProblem, completeSpec, providerOptionsProblem, requestProblem } from '../../src/backends/model-spec.ts';
import { standinPng } from '../support/openai-standin.ts';
import { until } from './standin-kit.ts';

describe('BflBackend against the Black Forest Labs stand-in', () => {
  let standin: BflStandin;
  const make = (config: Partial<BflBackendConfigInput> = {}, deps = {}) =>
    new BflBackend(
      { type: 'bfl', name: 'bfl', baseUrl: standin.url, apiKey: BFL_KEY, pollIntervalMs: 10, maxPollIntervalMs: 30, ...config },
      { retry: { baseDelayMs: 5 }, ...deps },
    );

  before(async () => {
    standin = await startBflStandin();
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
    standin.setHold(false);
  });

  test('submit with x-key, poll the returned regional polling_url until Ready, download the sample', async () => {
    const ctx = context();
    const result = await make().generate(request({ model: 'flux-pro-1.1', size: { width: 1024, height: 768 }, seed: 5, outputFormat: 'webp' }), ctx);
    assert.equal(result.images.length, 1);
    assert.ok(isPng(result.images[0]!.data));
    assert.equal(result.images[0]!.seed, 5);
    const [submit] = standin.submits();
    assert.equal(submit.path, '/v1/flux-pro-1.1');
    assert.equal(submit.headers['x-key'], BFL_KEY);
    assert.deepEqual(submit.json, { prompt: 'a red fox in the snow', width: 1024, height: 768, seed: 5, output_format: 'png' });
    const polls = standin.requests.filter((r) => r.path.endsWith('/get_result'));
    assert.ok(polls.length >= 1);
    for (const p of polls) {
      assert.equal(p.path, '/eu/v1/get_result', 'the returned polling_url, never a rebuilt one');
      assert.equal(p.headers['x-key'], BFL_KEY);
    }
    assert.equal(standin.requests.filter((r) => r.path.startsWith('/delivery/')).length, 1);
    assert.match((ctx.lastSaved() as any).tasks[0].polling, /\/eu\/v1\/get_result\?id=/);
  });

  test('BFL’s reported cost (credits) is the job’s cost', async () => {
    const result = await make().generate(request({ model: 'flux-pro-1.1', n: 2 }), context());
    assert.equal(result.costUsd, 0.08, '2 tasks × 4 credits × $0.01');
    const s2 = await startBflStandin({ cost: null });
    try {
      const b = new BflBackend({ type: 'bfl', name: 'bfl', baseUrl: s2.url, apiKey: BFL_KEY, pollIntervalMs: 10 });
      const r = await b.generate(request({ model: 'flux-pro-1.1' }), context());
      assert.equal(r.costUsd, undefined, 'no cost reported: the price table prices it');
    } finally {
      await s2.close();
    }
  });

  test('sizes snap to multiples of 32 within 256–1440 (with a warning); ultra takes an aspect ratio', async () => {
    const r = await make().generate(request({ model: 'flux-pro-1.1', size: { width: 1000, height: 2000 } }), context());
    const [s1] = standin.submits();
    assert.equal(s1.json.width, 992);
    assert.equal(s1.json.height, 1440);
    assert.match(warningText(r.warnings), /sent as 992x1440/);
    standin.requests.length = 0;
    await make().generate(request({ model: 'flux-pro-1.1-ultra', size: { width: 1920, height: 1080 } }), context());
    const [s2] = standin.submits();
    assert.equal(s2.json.aspect_ratio, '16:9');
    assert.equal(s2.json.width, undefined);
    assert.equal(modelShape('flux-2-pro').step, 16);
  });

  test('n fans out to one task per image, each handle saved as soon as it is submitted', async () => {
    const ctx = context();
    const result = await make().generate(request({ model: 'flux-pro-1.1', n: 3, seed: 10 }), ctx);
    assert.equal(result.images.length, 3);
    assert.deepEqual(standin.submits().map((s) => s.json.seed), [10, 11, 12]);
    assert.equal(ctx.saved.length, 3);
  });

  test('an expired sample URL is fetched again from a fresh poll', async () => {
    standin.expireNextSample();
    const result = await make().generate(request({ model: 'flux-dev' }), context());
    assert.equal(result.images.length, 1);
    const downloads = standin.requests.filter((r) => r.path.startsWith('/delivery/'));
    assert.deepEqual(downloads.map((d) => d.status), [403, 200]);
  });

  test('Request Moderated and Content Moderated are content_policy_violation naming Black Forest Labs', async () => {
    for (const prompt of ['moderate-request please', 'moderate-content please']) {
      const err = await rejection(make().generate(request({ model: 'flux-pro-1.1', prompt }), context()));
      assert.equal(err.code, 'content_policy_violation');
      assert.match(err.message, /^Black Forest Labs refused/);
      assert.match(err.message, /Derivative Works Filter/);
    }
  });

  test('Error is retryable and drops the task from the saved state so a retry resubmits', async () => {
    const ctx = context();
    const err = await rejection(make().generate(request({ model: 'flux-pro-1.1', prompt: 'fail now' }), ctx));
    assert.equal(err.code, 'backend_error');
    assert.equal(err.retryable, true);
    assert.deepEqual((ctx.lastSaved() as any).tasks, [null]);
  });

  test('resume: a restarted attempt polls the saved URL and submits nothing', async () => {
    standin.setHold(true);
    const first = new AbortController();
    const ctx1 = context({ signal: first.signal });
    const run1 = make().generate(request({ model: 'flux-pro-1.1' }), ctx1);
    await until('saved', () => ctx1.saved.length === 1);
    abortWith(first, 'lease_lost');
    await rejection(run1);
    const run2 = make().generate(request({ model: 'flux-pro-1.1' }), context({ savedState: ctx1.lastSaved() }));
    await until('resumed poll', () => standin.requests.filter((r) => r.path.endsWith('/get_result')).length >= 2);
    standin.release();
    const result = await run2;
    assert.equal(result.images.length, 1);
    assert.equal(result.costUsd, 0.04, 'the cost BFL named at submit survived the restart');
    assert.equal(standin.submits().length, 1);
  });

  test('a wrong key is backend_auth (403) with health red and a log line; 402 is backend_quota_exceeded', async () => {
    const log = recordingLog();
    const backend = make({ apiKey: 'nope' }, { log });
    const err = await rejection(backend.generate(request({ model: 'flux-pro-1.1' }), context()));
    assert.equal(err.code, 'backend_auth');
    assert.equal((await backend.health()).ok, false);
    assert.equal(log.lines.filter((l) => l.level === 'error').length, 1);
    standin.inject({ status: 402, body: { detail: 'Insufficient credits' }, match: (r) => r.method === 'POST' });
    const quota = await rejection(make().generate(request({ model: 'flux-pro-1.1' }), context()));
    assert.equal(quota.code, 'backend_quota_exceeded');
    assert.match(quota.message, /Insufficient credits/);
  });

  test('429 (too many active tasks) on submit is retried honouring retry-after', async () => {
    standin.inject({ status: 429, body: { detail: 'You have reached the maximum number of active tasks' }, headers: { 'retry-after': '0.2' }, match: (r) => r.method === 'POST' });
    const started = Date.now();
    const result = await make().generate(request({ model: 'flux-pro-1.1' }), context());
    assert.equal(result.images.length, 1);
    assert.ok(Date.now() - started >= 190);
    assert.equal(standin.submits().length, 1);
  });

  test('hostile provider options never reach BFL: the model path, size, prompt, images and safety tolerance stay easel’s', async () => {
    const providerOptions = hostileOptions({ width: 1440, height: 256, safety_tolerance: 6, input_image: 'aGhostile', webhook_url: 'https://hostile.example/hook', prompt_upsampling: true });
    const result = await make({ safetyTolerance: 1 }).generate(request({ model: 'flux-pro-1.1', size: { width: 1024, height: 768 }, seed: 3, providerOptions }), context());
    assert.equal(result.images.length, 1);
    const [submit] = standin.submits();
    assert.equal(submit.path, '/v1/flux-pro-1.1');
    assert.deepEqual(submit.json, { prompt: 'a red fox in the snow', width: 1024, height: 768, seed: 3, output_format: 'png', safety_tolerance: 1, prompt_upsampling: true });
    assert.doesNotMatch(JSON.stringify(submit.json), HOSTILE);
    assertWarnsAbout(result.warnings, ['n', 'model', 'size', 'prompt', 'image', 'input.prompt', '__proto__', 'width', 'height', 'safety_tolerance', 'input_image', 'webhook_url']);
  });

  test('each model declares itself: kontext edits one image, fill needs image and mask, FLUX.2 takes eight; sizes per model', async () => {
    const backend = make();
    const spec = (m: string) => completeSpec(backend.modelSpec(m), m);
    const pro = spec('flux-pro-1.1');
    assert.equal(pro.pricing, 'provider-reported');
    assert.equal(capabilityProblem('flux-pro-1.1', pro, { kind: 'edit', inputImages: 1, mask: false })?.code, 'unsupported_capability');
    assert.equal(requestProblem('flux-pro-1.1', pro, { prompt: 'x', size: { width: 1000, height: 768 } }, 'generation')?.param, 'size');
    assert.equal(requestProblem('flux-pro-1.1', pro, { prompt: 'x', size: { width: 1440, height: 256 } }, 'generation'), undefined);
    assert.equal(providerOptionsProblem('flux-pro-1.1', pro, { prompt_upsampling: true }), undefined);
    assert.equal(providerOptionsProblem('flux-pro-1.1', pro, { raw: true })?.code, 'unknown_parameter');
    assert.equal(providerOptionsProblem('flux-pro-1.1-ultra', spec('flux-pro-1.1-ultra'), { raw: true }), undefined);
    const kontext = spec('flux-kontext-pro');
    assert.equal(capabilityProblem('flux-kontext-pro', kontext, { kind: 'edit', inputImages: 1, mask: false }), undefined);
    assert.equal(capabilityProblem('flux-kontext-pro', kontext, { kind: 'edit', inputImages: 2, mask: false })?.code, 'unsupported_capability');
    const fill = spec('flux-pro-1.0-fill');
    assert.equal(capabilityProblem('flux-pro-1.0-fill', fill, { kind: 'generation', inputImages: 0, mask: false })?.code, 'unsupported_capability');
    assert.equal(capabilityProblem('flux-pro-1.0-fill', fill, { kind: 'edit', inputImages: 1, mask: true }), undefined);
    const flux2 = spec('flux-2-pro');
    assert.equal(flux2.capabilities.maxInputImages, 8);
    assert.equal(requestProblem('flux-2-pro', flux2, { prompt: 'x', size: { width: 2048, height: 2048 } }, 'generation'), undefined);
    assert.equal(requestProblem('flux-2-pro', flux2, { prompt: 'x', size: { width: 4096, height: 2048 } }, 'generation')?.param, 'size');

    const png = standinPng(16, 16).png;
    const img = { data: png, mediaType: 'image/png' };
    await backend.generate(request({ kind: 'edit', model: 'flux-2-pro', inputImages: [img, img, img] }), context());
    const [s] = standin.submits();
    assert.deepEqual(Object.keys(s.json).filter((k) => k.startsWith('input_image')).sort(), ['input_image', 'input_image_2', 'input_image_3']);
  });
});
