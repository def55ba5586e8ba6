import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { StabilityBackend, endpointFor } from '../../src/backends/stability/stability-backend.ts';
import type { StabilityBackendConfigInput } from '../../src/backends/stability/options.ts';
import { STABILITY_KEY, startStabilityStandin } from '../support/stability-standin.ts';
import type { StabilityStandin } from '../support/stability-standin.ts';
import { standinPng } from '../support/openai-standin.ts';
import { HOSTILE, context, hostileOptions, assertWarnsAbout, isPng, recordingLog, rejection, request, warningText } from './helpers.ts';
import { providerOptionsProblem, requestProblem, completeSpec } from '../../src/backends/model-spec.ts';

describe('StabilityBackend against the Stability stand-in', () => {
  let standin: StabilityStandin;
  const make = (config: Partial<StabilityBackendConfigInput> = {}, deps = {}) =>
    new StabilityBackend({ type: 'stability', name: 'stab', baseUrl: standin.url, apiKey: STABILITY_KEY, ...config }, { retry: { baseDelayMs: 5 }, ...deps });

  before(async () => {
    standin = await startStabilityStandin();
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
  });

  test('a text-only request is still multipart; bytes come back with the seed in a header', async () => {
    const result = await make().generate(
      request({ model: 'core', size: { width: 1344, height: 768 }, negativePrompt: 'blurry', seed: 42, style: 'anime', outputFormat: 'webp' }),
      context(),
    );
    assert.equal(result.images.length, 1);
    assert.ok(isPng(result.images[0]!.data));
    assert.equal(result.images[0]!.seed, 42);
    const [sent] = standin.generations();
    assert.equal(sent.path, '/v2beta/stable-image/generate/core');
    assert.match(String(sent.headers['content-type']), /^multipart\/form-data; boundary=/);
    assert.equal(sent.headers.accept, 'image/*');
    assert.equal(sent.headers.authorization, `Bearer ${STABILITY_KEY}`);
    assert.deepEqual(sent.fields, {
      prompt: 'a red fox in the snow',
      aspect_ratio: '16:9',
      negative_prompt: 'blurry',
      seed: '42',
      style_preset: 'anime',
      output_format: 'webp',
    });
    assert.deepEqual(sent.files, []);
  });

  test('JSON answers are decoded too', async () => {
    const result = await make({ accept: 'json' }).generate(request({ model: 'ultra' }), context());
    assert.ok(isPng(result.images[0]!.data));
    assert.equal(typeof result.images[0]!.seed, 'number');
    assert.equal(standin.generations()[0]!.headers.accept, 'application/json');
  });

  test('sd3 models carry model and mode; n fans out one request per image with seed+i', async () => {
    const ctx = context();
    const result = await make().generate(request({ model: 'sd3.5-large-turbo', n: 3, seed: 7, negativePrompt: 'x', guidanceScale: 4, outputFormat: 'webp' }), ctx);
    assert.equal(result.images.length, 3);
    const sent = standin.generations();
    assert.equal(sent.length, 3);
    assert.deepEqual(sent.map((s) => s.fields!.seed).sort(), ['7', '8', '9']);
    for (const s of sent) {
      assert.equal(s.path, '/v2beta/stable-image/generate/sd3');
      assert.equal(s.fields!.model, 'sd3.5-large-turbo');
      assert.equal(s.fields!.mode, 'text-to-image');
      assert.equal(s.fields!.output_format, 'png', 'sd3 has no webp; the worker converts');
      assert.equal(s.fields!.cfg_scale, '4');
      assert.equal(s.fields!.negative_prompt, undefined, 'turbo takes no negative prompt');
    }
    assert.match(warningText(result.warnings), /negative_prompt is not supported/);
    assert.deepEqual(result.images.map((i) => i.seed).sort(), [7, 8, 9]);
    assert.equal(ctx.progress.at(-1), 1);
  });

  test('an edit sends the image part and image-to-image mode', async () => {
    const png = standinPng(32, 32).png;
    await make().generate(request({ kind: 'edit', model: 'sd3.5-large', inputImages: [{ data: png, mediaType: 'image/png' }] }), context());
    const [sent] = standin.generations();
    assert.equal(sent.fields!.mode, 'image-to-image');
    assert.equal(sent.fields!.strength, '0.7');
    assert.deepEqual(sent.files!.map((f) => f.field), ['image']);
  });

  test('CONTENT_FILTERED on a 200 is a content_policy_violation naming Stability', async () => {
    for (const accept of ['image', 'json'] as const) {
      const err = await rejection(make({ accept }).generate(request({ model: 'core', prompt: 'filtered cat' }), context()));
      assert.equal(err.code, 'content_policy_violation');
      assert.match(err.message, /^Stability AI refused/);
      assert.match(err.message, /CONTENT_FILTERED/);
    }
  });

  test('a 403 content_moderation is a content_policy_violation, not an auth failure', async () => {
    const backend = make();
    const err = await rejection(backend.generate(request({ model: 'core', prompt: 'forbidden cat' }), context()));
    assert.equal(err.code, 'content_policy_violation');
    assert.match(err.message, /flagged by our content moderation system/);
    assert.deepEqual(await backend.health(), { ok: true });
  });

  test('a wrong key is backend_auth with health red', async () => {
    const log = recordingLog();
    const backend = make({ apiKey: 'sk-wrong' }, { log });
    const err = await rejection(backend.generate(request({ model: 'core' }), context()));
    assert.equal(err.code, 'backend_auth');
    assert.match(err.message, /authorization: invalid/);
    assert.equal((await backend.health()).ok, false);
    assert.equal(log.lines.filter((l) => l.level === 'error').length, 1);
  });

  test('429 is retried honouring retry-after; 5xx after the retries is retryable backend_unavailable', async () => {
    standin.inject({ status: 429, body: { id: 'x', name: 'rate_limit_exceeded', errors: ['slow down'] }, headers: { 'retry-after': '0.1' } });
    const ok = await make().generate(request({ model: 'core' }), context());
    assert.equal(ok.images.length, 1);
    standin.inject({ status: 500, count: 5, body: { id: 'x', name: 'internal_error', errors: ['boom'] } });
    const err = await rejection(make({ maxRetries: 2 }).generate(request({ model: 'core' }), context()));
    assert.equal(err.code, 'backend_unavailable');
    assert.equal(err.retryable, true);
    assert.match(err.message, /boom/);
  });

  test('an unknown model fails before any call', async () => {
    const err = await rejection(make().generate(request({ model: 'sdxl-1.0' }), context()));
    assert.equal(err.code, 'model_not_found');
    assert.equal(standin.requests.length, 0);
    assert.equal(endpointFor('stable-image-ultra')?.path, 'ultra');
  });

  test('hostile provider options never reach Stability: mapped fields win, guarded and unknown keys are dropped with warnings', async () => {
    const png = standinPng(32, 32).png;
    const providerOptions = hostileOptions({ aspect_ratio: '21:9', mode: 'text-to-image', output_format: 'jpeg', style_preset: 'anime', strength: 0.4 });
    const result = await make().generate(
      request({ kind: 'edit', model: 'sd3.5-large', inputImages: [{ data: png, mediaType: 'image/png' }], seed: 5, providerOptions }),
      context(),
    );
    assert.equal(result.images.length, 1);
    const [sent] = standin.generations();
    assert.deepEqual(sent.fields, {
      prompt: 'a red fox in the snow',
      seed: '5',
      output_format: 'png',
      model: 'sd3.5-large',
      mode: 'image-to-image',
      strength: '0.4',
    });
    assert.deepEqual(sent.files!.map((f) => f.field), ['image']);
    assert.doesNotMatch(JSON.stringify(sent.fields), HOSTILE);
    assertWarnsAbout(result.warnings, ['n', 'model', 'size', 'prompt', 'image', 'input.prompt', 'aspect_ratio', 'output_format', '__proto__', 'mode', 'style_preset']);
  });

  test('each endpoint declares itself: core generates only, ultra and sd3 edit with strength; aspect ratios, presets, 10,000 characters', () => {
    const backend = make();
    const core = completeSpec(backend.modelSpec('core'), 'core');
    assert.deepEqual(core.capabilities, { generate: true, edit: false, mask: false, variation: false, maxInputImages: 0 });
    assert.equal(providerOptionsProblem('core', core, { strength: 0.5 })?.code, 'unknown_parameter');
    const ultra = completeSpec(backend.modelSpec('ultra'), 'ultra');
    assert.equal(ultra.capabilities.edit, true);
    assert.equal(providerOptionsProblem('ultra', ultra, { strength: 0.5 }), undefined);
    assert.equal(providerOptionsProblem('ultra', ultra, { strength: 2 })?.code, 'invalid_value');
    assert.equal(providerOptionsProblem('ultra', ultra, { cfg_scale: 5 })?.code, 'unknown_parameter');
    assert.equal(providerOptionsProblem('ultra', ultra, { aspect_ratio: '1:1' })?.code, 'provider_option_not_allowed');
    assert.equal(requestProblem('ultra', ultra, { prompt: 'x', style: 'anime', size: { width: 1344, height: 768 } }, 'generation'), undefined);
    assert.equal(requestProblem('ultra', ultra, { prompt: 'x', style: 'watercolour' }, 'generation')?.param, 'style');
    assert.equal(requestProblem('ultra', ultra, { prompt: 'x', size: { width: 4000, height: 1000 } }, 'generation')?.param, 'size');
    assert.equal(requestProblem('ultra', ultra, { prompt: 'x'.repeat(10_001) }, 'generation')?.param, 'prompt');
    assert.equal(ultra.pricing, 'price-table');
  });
});
