import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplicateBackend, logProgress, outputUrls } from '../../src/backends/replicate/replicate-backend.ts';
import type { ReplicateBackendConfigInput } from '../../src/backends/replicate/options.ts';
import { parseModelRef } from '../../src/backends/replicate/models.ts';
import { REPLICATE_TOKEN, startReplicateStandin } from '../support/replicate-standin.ts';
import type { ReplicateStandin } from '../support/replicate-standin.ts';
import { HOSTILE, abortWith, context, hostileOptions, assertWarnsAbout, isPng, recordingLog, rejection, request } from './helpers.ts';
import { capabilityProblem, completeSpec, providerOptionsProblem, requestProblem } from '../../src/backends/model-spec.ts';
import { replicateBackendConfigSchema } from '../../src/backends/replicate/options.ts';
import { until } from './standin-kit.ts';

const VERSION = 'a'.repeat(64);

describe('ReplicateBackend against the Replicate stand-in', () => {
  let standin: ReplicateStandin;
  const make = (config: Partial<ReplicateBackendConfigInput> = {}, deps = {}) =>
    new ReplicateBackend(
      { type: 'replicate', name: 'rep', baseUrl: standin.url, apiKey: REPLICATE_TOKEN, pollIntervalMs: 10, maxPollIntervalMs: 30, ...config },
      deps,
    );

  before(async () => {
    standin = await startReplicateStandin();
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
    standin.setHold(false);
  });

  test('official model: 201 create on the models route, input mapped, outputs downloaded, handle saved first', async () => {
    const ctx = context();
    const saves: number[] = [];
    const ctx2 = { ...ctx, saveState: async (s: unknown) => { saves.push(standin.requests.filter((r) => r.method === 'GET').length); await ctx.saveState(s); } };
    const result = await make().generate(
      request({ model: 'black-forest-labs/flux-schnell', n: 2, size: { width: 1344, height: 768 }, seed: 7, steps: 4, outputFormat: 'jpeg' }),
      ctx2,
    );
    assert.equal(result.images.length, 2);
    for (const img of result.images) {
      assert.ok(isPng(img.data));
      assert.equal(img.mediaType, 'image/png');
    }
    const [create] = standin.creates();
    assert.equal(create.path, '/v1/models/black-forest-labs/flux-schnell/predictions');
    assert.equal(create.status, 201);
    assert.equal(create.headers.authorization, `Bearer ${REPLICATE_TOKEN}`);
    assert.equal(create.json.version, undefined);
    assert.deepEqual(create.json.input, {
      prompt: 'a red fox in the snow',
      aspect_ratio: '16:9',
      num_outputs: 2,
      seed: 7,
      num_inference_steps: 4,
      output_format: 'jpg',
    });
    assert.equal(saves[0], 0, 'the prediction id was saved before the first poll');
    const saved = ctx.lastSaved() as { tasks: { id: string }[] };
    assert.equal(saved.tasks.length, 1);
    assert.ok(standin.predictions.has(saved.tasks[0]!.id));
    assert.deepEqual(result.warnings, [
      { type: 'compatibility', setting: 'size', detail: 'size 1344x768 sent as the nearest aspect ratio 16:9 for black-forest-labs/flux-schnell' },
    ]);
    assert.equal(ctx.progress.at(-1), 1);
    const downloads = standin.requests.filter((r) => r.path.startsWith('/files/'));
    assert.equal(downloads.length, 2);
  });

  test('a version runs on POST /v1/predictions with the version, and a single-string output works', async () => {
    const s2 = await startReplicateStandin({ outputShape: 'string' });
    try {
      const backend = new ReplicateBackend({ type: 'replicate', name: 'rep', baseUrl: s2.url, apiKey: REPLICATE_TOKEN, pollIntervalMs: 10 });
      const result = await backend.generate(request({ model: `someone/sdxl-custom:${VERSION}`, size: { width: 1000, height: 1000 } }), context());
      assert.equal(result.images.length, 1);
      const [create] = s2.creates();
      assert.equal(create.path, '/v1/predictions');
      assert.equal(create.json.version, VERSION);
      assert.deepEqual(create.json.input, { prompt: 'a red fox in the snow', width: 1000, height: 1000 });
    } finally {
      await s2.close();
    }
  });

  test('Prefer: wait may answer an unfinished prediction; it is saved and polled', async () => {
    standin.setHold(true);
    const ctx = context();
    const run = make({ preferWaitSeconds: 5 }).generate(request({ model: 'black-forest-labs/flux-schnell' }), ctx);
    const create = await until('create answered', () => standin.creates()[0]);
    assert.equal(create.headers.prefer, 'wait=5');
    const p = [...standin.predictions.values()].at(-1)!;
    assert.notEqual(p.status, 'succeeded', 'create answered before the model finished');
    await until('handle saved', () => ctx.saved.length === 1);
    standin.release(p.id);
    const result = await run;
    assert.equal(result.images.length, 1);
    assert.ok(standin.requests.some((r) => r.method === 'GET' && r.path === `/v1/predictions/${p.id}`));
  });

  test('n beyond a prediction’s outputs fans out; every handle is saved before waiting', async () => {
    const ctx = context();
    const result = await make().generate(request({ model: 'black-forest-labs/flux-schnell', n: 6, seed: 100 }), ctx);
    assert.equal(result.images.length, 6);
    const creates = standin.creates();
    assert.deepEqual(creates.map((c) => c.json.input.num_outputs), [4, 2]);
    assert.deepEqual(creates.map((c) => c.json.input.seed), [100, 104]);
    assert.equal(ctx.saved.length, 2);
    assert.equal((ctx.saved[0] as any).tasks[1], null, 'first save: second task not submitted yet');
    assert.equal((ctx.saved[1] as any).tasks.length, 2);
  });

  test('a one-output model gets one prediction per image', async () => {
    await make().generate(request({ model: 'black-forest-labs/flux-1.1-pro', n: 3 }), context());
    const creates = standin.creates();
    assert.equal(creates.length, 3);
    for (const c of creates) assert.equal(c.json.input.num_outputs, undefined);
  });

  test('resuming a saved handle submits nothing and waits on it', async () => {
    standin.setHold(true);
    const first = new AbortController();
    const ctx1 = context({ signal: first.signal });
    const run1 = make().generate(request({ model: 'black-forest-labs/flux-schnell' }), ctx1);
    await until('handle saved', () => ctx1.saved.length === 1);
    abortWith(first, 'lease_lost');
    const err = await rejection(run1);
    assert.equal(err.code, 'aborted');
    assert.ok(!standin.requests.some((r) => r.path.endsWith('/cancel')), 'a handed-back job keeps its prediction running');

    const ctx2 = context({ savedState: ctx1.lastSaved() });
    const run2 = make().generate(request({ model: 'black-forest-labs/flux-schnell' }), ctx2);
    await until('resumed poll', () => standin.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/predictions/')).length >= 2);
    standin.release();
    const result = await run2;
    assert.equal(result.images.length, 1);
    assert.equal(standin.creates().length, 1, 'exactly one submission');
    assert.equal(result.providerMetadata?.resumed, 1);
  });

  test('a saved state is used once per attempt (the worker splits n over several calls)', async () => {
    const ctx1 = context();
    await make().generate(request({ model: 'black-forest-labs/flux-schnell', n: 1 }), ctx1);
    const state = ctx1.lastSaved();
    const shared = context({ savedState: state });
    await make().generate(request({ model: 'black-forest-labs/flux-schnell', n: 1 }), shared);
    await make().generate(request({ model: 'black-forest-labs/flux-schnell', n: 1 }), shared);
    assert.equal(standin.creates().length, 2, 'the first call resumed, the second submitted its own');
  });

  test('canceling the job cancels the prediction at Replicate', async () => {
    standin.setHold(true);
    const ac = new AbortController();
    const ctx = context({ signal: ac.signal });
    const run = make().generate(request({ model: 'black-forest-labs/flux-schnell' }), ctx);
    await until('handle saved', () => ctx.saved.length === 1);
    abortWith(ac, 'canceled');
    const err = await rejection(run);
    assert.equal(err.code, 'aborted');
    const id = (ctx.lastSaved() as any).tasks[0].id;
    await until('cancel sent', () => standin.requests.some((r) => r.method === 'POST' && r.path === `/v1/predictions/${id}/cancel`));
    assert.equal(standin.predictions.get(id)!.status, 'canceled');
  });

  test('an NSFW failure is a content_policy_violation naming Replicate', async () => {
    const err = await rejection(make().generate(request({ model: 'black-forest-labs/flux-schnell', prompt: 'nsfw thing' }), context()));
    assert.equal(err.code, 'content_policy_violation');
    assert.match(err.message, /Replicate/);
    assert.match(err.message, /NSFW/);
  });

  test('another failure is a non-retryable backend_error with Replicate’s words', async () => {
    const err = await rejection(make().generate(request({ model: 'black-forest-labs/flux-schnell', prompt: 'crash now' }), context()));
    assert.equal(err.code, 'backend_error');
    assert.equal(err.retryable, false);
    assert.match(err.message, /CUDA out of memory/);
  });

  test('aborted (Cancel-After passed before start) is retryable and drops the handle so a retry resubmits', async () => {
    const ctx = context();
    const err = await rejection(make({ cancelAfter: '30s' }).generate(request({ model: 'black-forest-labs/flux-schnell', prompt: 'abort-me' }), ctx));
    assert.equal(err.code, 'backend_unavailable');
    assert.equal(err.retryable, true);
    assert.equal(standin.creates()[0]!.headers['cancel-after'], '30s');
    assert.deepEqual((ctx.lastSaved() as any).tasks, [null]);
  });

  test('a wrong token is backend_auth, health turns red with one clear log line', async () => {
    const log = recordingLog();
    const backend = make({ apiKey: 'r8_wrong' }, { log });
    assert.deepEqual(await backend.health(), { ok: true });
    const err = await rejection(backend.generate(request({ model: 'black-forest-labs/flux-schnell' }), context()));
    assert.equal(err.code, 'backend_auth');
    assert.equal(err.status, 401);
    assert.match(err.message, /Replicate refused the credentials/);
    const health = await backend.health();
    assert.equal(health.ok, false);
    assert.match(health.message!, /refused the credentials/);
    const errors = log.lines.filter((l) => l.level === 'error');
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.msg, /unhealthy.*check apiKey/);
    await rejection(backend.generate(request({ model: 'black-forest-labs/flux-schnell' }), context()));
    assert.equal(log.lines.filter((l) => l.level === 'error').length, 1, 'logged once, not per job');
  });

  test('no token at all fails at once without a call', async () => {
    const backend = new ReplicateBackend({ type: 'replicate', name: 'rep', baseUrl: standin.url }, { env: {} });
    const err = await rejection(backend.generate(request({ model: 'black-forest-labs/flux-schnell' }), context()));
    assert.equal(err.code, 'backend_auth');
    assert.match(err.message, /REPLICATE_API_TOKEN/);
    assert.equal((await backend.health()).ok, false);
    assert.equal(standin.requests.length, 0);
  });

  test('a 429 on create waits for retry-after, then succeeds', async () => {
    standin.inject({ status: 429, body: { detail: 'Request was throttled. Your rate limit resets in ~1s.' }, headers: { 'retry-after': '1' }, match: (r) => r.method === 'POST' });
    const started = Date.now();
    const result = await make().generate(request({ model: 'black-forest-labs/flux-schnell' }), context());
    assert.equal(result.images.length, 1);
    assert.ok(Date.now() - started >= 950, 'waited about a second');
    assert.equal(standin.creates().length, 1);
  });

  test('5xx on polls is retried; 422 on create is invalid_request with Replicate’s detail', async () => {
    standin.inject({ status: 503, count: 2, match: (r) => r.method === 'GET' && r.path.startsWith('/v1/predictions/') });
    const ok = await make({ maxRetries: 3 }, { retry: { baseDelayMs: 5 } }).generate(request({ model: 'black-forest-labs/flux-schnell' }), context());
    assert.equal(ok.images.length, 1);
    const err = await rejection(make().generate(request({ model: `x/y:${'z'.repeat(64)}` }), context()));
    assert.equal(err.code, 'invalid_request');
  });

  test('usdPerSecond prices the image from metrics.predict_time', async () => {
    const result = await make({ usdPerSecond: 0.001 }).generate(request({ model: 'black-forest-labs/flux-schnell', n: 6 }), context());
    assert.equal(result.costUsd, 0.003, 'two predictions of 1.5 s at $0.001/s');
    const none = await make().generate(request({ model: 'black-forest-labs/flux-schnell' }), context());
    assert.equal(none.costUsd, undefined, 'no hardware price: the table prices it');
  });

  test('helpers: model references, output shapes, log progress', () => {
    assert.deepEqual(parseModelRef('owner/name'), { kind: 'model', owner: 'owner', name: 'name' });
    assert.deepEqual(parseModelRef(`owner/name:${VERSION}`), { kind: 'version', owner: 'owner', name: 'name', version: VERSION });
    assert.deepEqual(parseModelRef(VERSION), { kind: 'version', version: VERSION });
    assert.deepEqual(parseModelRef('deployments/acme/sdxl'), { kind: 'deployment', owner: 'acme', name: 'sdxl' });
    assert.throws(() => parseModelRef('not a model'), /not a Replicate model reference/);
    assert.deepEqual(outputUrls('https://x/a.png'), ['https://x/a.png']);
    assert.deepEqual(outputUrls(['https://x/a.png', ['https://x/b.png']]), ['https://x/a.png', 'https://x/b.png']);
    assert.deepEqual(outputUrls({ image: 'data:image/png;base64,AAAA' }), ['data:image/png;base64,AAAA']);
    assert.deepEqual(outputUrls(null), []);
    assert.equal(logProgress(' 25%|██  | 1/4\n 75%|██████ | 3/4\n'), 0.75);
    assert.equal(logProgress('no bars'), undefined);
  });

  test('hostile provider options never reach Replicate: the count, size, prompt, images and safety checker stay easel’s', async () => {
    const providerOptions = hostileOptions({
      num_outputs: 4,
      megapixels: '1',
      aspect_ratio: '21:9',
      disable_safety_checker: true,
      lora_weights: 'hostile/lora',
      version: 'b'.repeat(64),
      go_fast: false,
    });
    const result = await make({ input: { extra: { num_outputs: 4 } } }).generate(
      request({ model: 'black-forest-labs/flux-schnell', n: 1, size: { width: 1024, height: 1024 }, seed: 4, providerOptions }),
      context(),
    );
    assert.equal(result.images.length, 1);
    const [create] = standin.creates();
    assert.equal(create.path, '/v1/models/black-forest-labs/flux-schnell/predictions');
    assert.equal(create.json.version, undefined);
    assert.deepEqual(create.json.input, { prompt: 'a red fox in the snow', aspect_ratio: '1:1', num_outputs: 1, seed: 4, output_format: 'png', go_fast: false });
    assert.doesNotMatch(JSON.stringify(create.json), HOSTILE);
    assertWarnsAbout(result.warnings, ['n', 'model', 'size', 'prompt', 'image', 'input.prompt', '__proto__', 'num_outputs', 'megapixels', 'aspect_ratio', 'disable_safety_checker', 'lora_weights', 'version']);
  });

  test('each known model declares itself; config declares options for the rest (guarded names refused)', () => {
    const backend = make();
    const spec = (m: string, b = backend) => completeSpec(b.modelSpec(m), m);
    const schnell = spec('black-forest-labs/flux-schnell');
    assert.equal(capabilityProblem('schnell', schnell, { kind: 'edit', inputImages: 1, mask: false })?.code, 'unsupported_capability');
    assert.equal(providerOptionsProblem('schnell', schnell, { go_fast: true, output_quality: 90 }), undefined);
    assert.equal(providerOptionsProblem('schnell', schnell, { output_quality: 101 })?.code, 'invalid_value');
    assert.equal(providerOptionsProblem('schnell', schnell, { megapixels: '0.25' })?.code, 'provider_option_not_allowed');
    assert.equal(requestProblem('schnell', schnell, { prompt: 'x', size: { width: 4096, height: 1024 } }, 'generation')?.param, 'size');
    const dev = spec('black-forest-labs/flux-dev');
    assert.equal(capabilityProblem('dev', dev, { kind: 'edit', inputImages: 1, mask: false }), undefined);
    assert.equal(providerOptionsProblem('dev', dev, { prompt_strength: 0.8 }), undefined);
    const sdxl = spec('stability-ai/sdxl');
    assert.equal(capabilityProblem('sdxl', sdxl, { kind: 'edit', inputImages: 1, mask: true }), undefined);
    assert.equal(providerOptionsProblem('sdxl', sdxl, { refine: 'expert_ensemble_refiner', scheduler: 'K_EULER' }), undefined);
    const custom = spec(`someone/custom:${VERSION}`);
    assert.equal(providerOptionsProblem('custom', custom, { style_strength: 0.5 })?.code, 'unknown_parameter');
    const declared = make({ input: { providerOptions: { style_strength: { type: 'number', min: 0, max: 1 } } } });
    assert.equal(providerOptionsProblem('custom', spec(`someone/custom:${VERSION}`, declared), { style_strength: 0.5 }), undefined);
    assert.equal(schnell.pricing, 'price-table');
    assert.equal(make({ usdPerSecond: 0.001 }).modelSpec('black-forest-labs/flux-schnell').pricing, 'provider-reported');
    const refused = replicateBackendConfigSchema.safeParse({ type: 'replicate', name: 'r', input: { providerOptions: { num_outputs: 'integer' } } });
    assert.equal(refused.success, false);
    assert.deepEqual(refused.error!.issues[0]!.path, ['input', 'providerOptions', 'num_outputs']);
  });
});
