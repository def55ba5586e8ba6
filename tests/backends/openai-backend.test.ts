import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { HOSTILE, assertWarnsAbout, hostileOptions } from '../support/hostile-options.ts';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { OpenAIBackend } from '../../src/backends/openai/openai-backend.ts';
import { openaiBackendConfigSchema } from '../../src/backends/openai/options.ts';
import type { OpenAIBackendConfigInput } from '../../src/backends/openai/options.ts';
import { BackendError } from '../../src/backends/image-backend.ts';
import type { BackendCallContext, BackendRequest } from '../../src/backends/image-backend.ts';
import { DEFAULT_STANDIN_KEY, MODERATION_BLOCKED, openaiError, startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';

function request(overrides: Partial<BackendRequest> = {}): BackendRequest {
  return {
    kind: 'generation',
    model: 'gpt-image-1',
    prompt: 'a red fox in the snow',
    n: 1,
    outputFormat: 'png',
    inputImages: [],
    providerOptions: {},
    ...overrides,
  };
}

function context(signal: AbortSignal = new AbortController().signal): BackendCallContext & { progress: number[] } {
  const progress: number[] = [];
  return {
    jobId: 'job_test',
    signal,
    progress,
    reportProgress: (p) => progress.push(p),
    savedState: undefined,
    saveState: async () => {},
  };
}

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof BackendError, `expected a BackendError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the call to fail');
}

const imageRequests = (s: OpenAIStandin) => s.requests.filter((r) => r.path.startsWith('/v1/images/'));

describe('OpenAIBackend against the stand-in (OpenAI behaviour)', () => {
  let standin: OpenAIStandin;
  let inputPng: Uint8Array;
  const make = (config: Partial<OpenAIBackendConfigInput> = {}) =>
    new OpenAIBackend({ type: 'openai', name: 'oai', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY, ...config });

  before(async () => {
    standin = await startOpenAIStandin();
    inputPng = new Uint8Array(standin.png);
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
    standin.setLatency(0);
  });

  test('gpt-image generation returns b64 images and sends only the fields that were set', async () => {
    const ctx = context();
    const result = await make().generate(
      request({ n: 2, size: { width: 1024, height: 1024 }, quality: 'high', user: 'u-1' }),
      ctx,
    );
    assert.equal(result.images.length, 2);
    for (const image of result.images) {
      assert.deepEqual(Buffer.from(image.data), standin.png);
      assert.equal(image.mediaType, 'image/png');
      assert.equal(image.revisedPrompt, undefined);
    }
    assert.deepEqual(result.warnings, []);
    assert.deepEqual(ctx.progress, [1]);
    assert.ok(result.providerMetadata?.usage, 'usage is passed on');
    assert.match(String(result.providerMetadata?.requestId), /^req_standin_/);

    const [sent] = imageRequests(standin);
    assert.equal(sent.path, '/v1/images/generations');
    assert.equal(sent.headers.authorization, `Bearer ${DEFAULT_STANDIN_KEY}`);
    assert.deepEqual(sent.body, {
      model: 'gpt-image-1',
      prompt: 'a red fox in the snow',
      n: 2,
      size: '1024x1024',
      quality: 'high',
      output_format: 'png',
      user: 'u-1',
    });
  });

  test('gpt-image output format, compression and background are sent', async () => {
    await make().generate(request({ outputFormat: 'webp', outputCompression: 80, background: 'transparent' }), context());
    const [sent] = imageRequests(standin);
    assert.equal(sent.body?.output_format, 'webp');
    assert.equal(sent.body?.output_compression, 80);
    assert.equal(sent.body?.background, 'transparent');
  });

  test('dall-e-2 is asked for b64_json, and GPT-only fields stay out', async () => {
    const result = await make().generate(
      request({ model: 'dall-e-2', size: { width: 512, height: 512 }, outputFormat: 'jpeg', background: 'opaque' }),
      context(),
    );
    assert.equal(result.images.length, 1);
    assert.equal(result.images[0].mediaType, 'image/png', 'the bytes are PNG whatever was asked; the worker converts');
    const [sent] = imageRequests(standin);
    assert.equal(sent.body?.response_format, 'b64_json');
    assert.equal(sent.body?.output_format, undefined);
    assert.equal(sent.body?.background, undefined);
    assert.equal(result.warnings.length, 1);
    assert.match(JSON.stringify(result.warnings[0]), /background/);
    assert.ok(!standin.requests.some((r) => r.path.startsWith('/files/')), 'no second download');
  });

  test('dall-e-3 passes revised_prompt and style through', async () => {
    const result = await make().generate(request({ model: 'dall-e-3', style: 'natural' }), context());
    assert.equal(result.images.length, 1);
    assert.equal(result.images[0].revisedPrompt, 'A detailed rendering of: a red fox in the snow');
    assert.equal(imageRequests(standin)[0].body?.style, 'natural');
  });

  test('dall-e-3 with n>1 is an invalid_request naming the param', async () => {
    const err = await rejection(make().generate(request({ model: 'dall-e-3', n: 2 }), context()));
    assert.equal(err.code, 'invalid_request');
    assert.equal(err.retryable, false);
    assert.equal(err.status, 400);
    assert.match(err.message, /'n'/);
    assert.match(err.message, /n=1/);
    assert.equal(imageRequests(standin).length, 1, '400 is not retried');
  });

  test('an unknown model is model_not_found', async () => {
    const err = await rejection(make().generate(request({ model: 'dall-e-9' }), context()));
    assert.equal(err.code, 'model_not_found');
    assert.equal(err.status, 404);
  });

  test('easel extras are warned about and kept out of the body by default', async () => {
    const result = await make().generate(
      request({ negativePrompt: 'blurry', seed: 42, steps: 20, guidanceScale: 7.5 }),
      context(),
    );
    assert.equal(result.images.length, 1, 'strict OpenAI stand-in accepted the body');
    assert.equal(result.warnings.length, 4);
    for (const field of ['negative_prompt', 'seed', 'steps', 'guidance_scale']) {
      assert.ok(result.warnings.some((w) => JSON.stringify(w).includes(field)), `warns about ${field}`);
      assert.equal(imageRequests(standin)[0].body?.[field], undefined);
    }
  });

  test('provider options are merged into the body; stream is refused', async () => {
    const result = await make().generate(request({ providerOptions: { moderation: 'low', stream: true } }), context());
    const [sent] = imageRequests(standin);
    assert.equal(sent.body?.moderation, 'low');
    assert.equal(sent.body?.stream, undefined);
    assert.match(result.warnings.map((w) => w.detail).join('\n'), /stream/);
  });

  test('hostile provider options never reach OpenAI: the model, n, size, prompt and answer format stay easel’s', async () => {
    const providerOptions = hostileOptions({ n: 10, model: 'gpt-image-1', quality: 'high', response_format: 'url', partial_images: 3, moderation: 'low', made_up: true });
    const result = await make({ modelRules: 'on', baseUrl: standin.url }).generate(
      request({ model: 'dall-e-2', size: { width: 256, height: 256 }, providerOptions }),
      context(),
    );
    assert.equal(result.images.length, 1);
    const [sent] = imageRequests(standin);
    assert.equal(sent.body?.model, 'dall-e-2');
    assert.equal(sent.body?.n, 1);
    assert.equal(sent.body?.size, '256x256');
    assert.equal(sent.body?.quality, undefined);
    assert.equal(sent.body?.prompt, 'a red fox in the snow');
    assert.equal(sent.body?.response_format, 'b64_json');
    assert.equal(sent.body?.moderation, 'low', 'a declared option still goes through');
    assert.doesNotMatch(JSON.stringify(sent.body), HOSTILE);
    assert.doesNotMatch(JSON.stringify(sent.body), /made_up|partial_images/);
    assertWarnsAbout(result.warnings, ['n', 'model', 'size', 'quality', 'prompt', 'image', 'input.prompt', '__proto__', 'response_format', 'partial_images', 'made_up']);
  });

  test('edit with one image sends an `image` part', async () => {
    const result = await make().generate(
      request({ kind: 'edit', prompt: 'add a hat', inputImages: [{ data: inputPng, mediaType: 'image/png' }] }),
      context(),
    );
    assert.equal(result.images.length, 1);
    const [sent] = imageRequests(standin);
    assert.equal(sent.path, '/v1/images/edits');
    assert.match(String(sent.headers['content-type']), /^multipart\/form-data/);
    assert.deepEqual(sent.files, [{ field: 'image', filename: 'image.png', type: 'image/png', size: inputPng.length }]);
    assert.equal(sent.body?.prompt, 'add a hat');
    assert.equal(sent.body?.model, 'gpt-image-1');
    assert.equal(sent.body?.n, 1);
  });

  test('edit with two images sends repeated `image[]` parts', async () => {
    const jpeg = new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4]);
    await make().generate(
      request({
        kind: 'edit',
        prompt: 'combine them',
        inputImages: [
          { data: inputPng, mediaType: 'image/png' },
          { data: jpeg, mediaType: 'image/jpeg' },
        ],
      }),
      context(),
    );
    const [sent] = imageRequests(standin);
    assert.deepEqual(
      sent.files.map((f) => [f.field, f.type, f.size]),
      [
        ['image[]', 'image/png', inputPng.length],
        ['image[]', 'image/jpeg', jpeg.length],
      ],
    );
  });

  test('edit with a mask sends a `mask` part', async () => {
    const mask = new Uint8Array(standin.png.subarray(0, standin.png.length));
    await make().generate(
      request({
        kind: 'edit',
        model: 'dall-e-2',
        prompt: 'fill the hole',
        inputImages: [{ data: inputPng, mediaType: 'image/png' }],
        mask: { data: mask, mediaType: 'image/png' },
      }),
      context(),
    );
    const [sent] = imageRequests(standin);
    assert.deepEqual(
      sent.files.map((f) => f.field),
      ['image', 'mask'],
    );
    assert.equal(sent.body?.response_format, 'b64_json');
  });

  test('variation sends the image and no prompt', async () => {
    const result = await make().generate(
      request({ kind: 'variation', model: 'dall-e-2', n: 3, prompt: '', inputImages: [{ data: inputPng, mediaType: 'image/png' }] }),
      context(),
    );
    assert.equal(result.images.length, 3);
    assert.deepEqual(result.warnings, []);
    const [sent] = imageRequests(standin);
    assert.equal(sent.path, '/v1/images/variations');
    assert.deepEqual(sent.body, { model: 'dall-e-2', n: 3, response_format: 'b64_json' });
    assert.deepEqual(sent.files.map((f) => f.field), ['image']);
  });

  test('a moderation refusal is content_policy_violation and names the backend', async () => {
    standin.failNext(1, 400, MODERATION_BLOCKED);
    const err = await rejection(make().generate(request(), context()));
    assert.equal(err.code, 'content_policy_violation');
    assert.equal(err.retryable, false);
    assert.match(err.message, /"oai"/);
    assert.match(err.message, /safety system/);

    standin.failNext(1, 400, openaiError('Your request was rejected as a result of our safety system.', { code: 'content_policy_violation' }));
    const err2 = await rejection(make().generate(request({ model: 'dall-e-3' }), context()));
    assert.equal(err2.code, 'content_policy_violation');
  });

  test('a wrong key is backend_auth and health says the credentials were refused', async () => {
    const backend = make({ apiKey: 'sk-wrong' });
    const err = await rejection(backend.generate(request(), context()));
    assert.equal(err.code, 'backend_auth');
    assert.equal(err.status, 401);
    assert.equal(err.retryable, false);
    const health = await backend.health();
    assert.equal(health.ok, false);
    assert.match(String(health.message), /refused the credentials/);
  });

  test('a 401 marks a healthy backend unhealthy until a later health check passes', async () => {
    const backend = new OpenAIBackend(
      { type: 'openai', name: 'oai', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY },
      { healthCacheMs: 150 },
    );
    assert.deepEqual(await backend.health(), { ok: true });
    standin.failNext(1, 401, openaiError('Incorrect API key provided.', { code: 'invalid_api_key' }));
    const err = await rejection(backend.generate(request(), context()));
    assert.equal(err.code, 'backend_auth');
    const modelsCalls = () => standin.requests.filter((r) => r.path === '/v1/models').length;
    const callsBefore = modelsCalls();
    const marked = await backend.health();
    assert.equal(marked.ok, false);
    assert.match(String(marked.message), /credentials/);
    assert.equal(modelsCalls(), callsBefore, 'the mark is answered without a request');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(await backend.health(), { ok: true });
  });

  test('health is cached', async () => {
    const backend = make();
    const [a, b] = await Promise.all([backend.health(), backend.health()]);
    assert.deepEqual(a, { ok: true });
    assert.deepEqual(b, { ok: true });
    await backend.health();
    assert.equal(standin.requests.filter((r) => r.path === '/v1/models').length, 1);
  });

  test('a 500 is retried by the SDK and then succeeds', async () => {
    standin.failNext(1, 500);
    const result = await make().generate(request(), context());
    assert.equal(result.images.length, 1);
    assert.deepEqual(
      imageRequests(standin).map((r) => r.status),
      [500, 200],
    );
  });

  test('a 429 waits for retry-after before the retry', async () => {
    standin.failNext(1, 429, openaiError('Rate limit reached', { type: 'requests', code: 'rate_limit_exceeded' }), {
      'retry-after': '1',
    });
    const started = performance.now();
    const result = await make().generate(request(), context());
    const elapsed = performance.now() - started;
    assert.equal(result.images.length, 1);
    assert.equal(imageRequests(standin).length, 2);
    assert.ok(elapsed >= 950, `waited ${elapsed.toFixed(0)} ms`);
  });

  test('5xx after the retries are spent is a retryable backend_unavailable', async () => {
    standin.failNext(3, 503, undefined, { 'retry-after-ms': '5' });
    const err = await rejection(make({ maxRetries: 2 }).generate(request(), context()));
    assert.equal(err.code, 'backend_unavailable');
    assert.equal(err.retryable, true);
    assert.equal(err.status, 503);
    assert.equal(imageRequests(standin).length, 3);
  });

  test('insufficient_quota is not retried by the worker', async () => {
    standin.failNext(1, 429, openaiError('You exceeded your current quota.', { type: 'insufficient_quota', code: 'insufficient_quota' }), {
      'x-should-retry': 'false',
    });
    const err = await rejection(make().generate(request(), context()));
    assert.equal(err.code, 'backend_quota_exceeded');
    assert.equal(err.retryable, false);
  });

  test('aborting the signal aborts the HTTP call and the stand-in sees the disconnect', async () => {
    standin.setLatency(2000);
    const abortedBefore = standin.aborted();
    const controller = new AbortController();
    const started = performance.now();
    setTimeout(() => controller.abort(), 100);
    const ctx = context(controller.signal);
    const err = await rejection(make().generate(request(), ctx));
    assert.equal(err.code, 'aborted');
    assert.ok(performance.now() - started < 1000, 'did not wait for the answer');
    assert.deepEqual(ctx.progress, []);
    for (let i = 0; i < 100 && standin.aborted() === abortedBefore; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(standin.aborted(), abortedBefore + 1);
    assert.equal(imageRequests(standin).length, 1, 'an abort is not retried');
  });

  test('an already aborted signal never reaches the network', async () => {
    const controller = new AbortController();
    controller.abort();
    const err = await rejection(make().generate(request(), context(controller.signal)));
    assert.equal(err.code, 'aborted');
    assert.equal(imageRequests(standin).length, 0);
  });

  test('a slow endpoint times out per config, after the SDK retries', async () => {
    standin.setLatency(1000);
    const started = performance.now();
    const err = await rejection(make({ timeoutSeconds: 0.2, maxRetries: 1 }).generate(request(), context()));
    const elapsed = performance.now() - started;
    assert.equal(err.code, 'timeout');
    assert.equal(err.retryable, true);
    assert.ok(elapsed < 1500, `gave up after ${elapsed.toFixed(0)} ms`);
    assert.equal(imageRequests(standin).length, 2);
  });

  test('capabilities follow config', () => {
    assert.deepEqual(make().capabilities, {
      generate: true,
      edit: true,
      mask: true,
      variation: true,
      maxInputImages: 16,
      maxImagesPerCall: 10,
    });
    assert.deepEqual(make({ maxImagesPerCall: 1, capabilities: { variation: false, mask: false, maxInputImages: 4 } }).capabilities, {
      generate: true,
      edit: true,
      mask: false,
      variation: false,
      maxInputImages: 4,
      maxImagesPerCall: 1,
    });
    assert.equal(make({ capabilities: { edit: false } }).capabilities.maxInputImages, 0);
  });

  test('a request the capabilities rule out fails before any call', async () => {
    const backend = make({ capabilities: { variation: false } });
    const err = await rejection(
      backend.generate(request({ kind: 'variation', inputImages: [{ data: inputPng, mediaType: 'image/png' }] }), context()),
    );
    assert.equal(err.code, 'invalid_request');
    assert.equal(imageRequests(standin).length, 0);
  });
});

describe('OpenAIBackend streaming partial images (stream: true, partial_images)', () => {
  let standin: OpenAIStandin;
  /** Released by the test: the stand-in holds the `completed` event until then. */
  let release: () => void = () => {};
  let gate: Promise<void> = Promise.resolve();
  before(async () => {
    standin = await startOpenAIStandin({ beforeCompleted: () => gate });
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
    gate = Promise.resolve();
  });
  const make = () => new OpenAIBackend({ type: 'openai', name: 'oai', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY });
  const withPartials = (ctx: ReturnType<typeof context>) => {
    const partials: { index: number; partialIndex: number; data: Buffer; mediaType: string }[] = [];
    const listeners: (() => void)[] = [];
    ctx.reportPartialImage = (img) => {
      partials.push({ ...img, data: Buffer.from(img.data) });
      for (const l of listeners.splice(0)) l();
    };
    const nextPartial = () => new Promise<void>((resolve) => listeners.push(resolve));
    return { partials, nextPartial };
  };

  test('partials reach the job while the answer is still open, then the finished image', async () => {
    gate = new Promise<void>((resolve) => (release = resolve));
    const ctx = context();
    const { partials, nextPartial } = withPartials(ctx);
    const firstPartial = nextPartial();
    const call = make().generate(request({ partialImages: 2, size: { width: 1024, height: 1024 }, quality: 'low' }), ctx);
    // Nothing would arrive here if the answer were read whole: the stand-in holds back the end.
    await firstPartial;
    assert.ok(partials.length >= 1 && partials.length <= 2);
    release();
    const result = await call;

    const [sent] = imageRequests(standin);
    assert.equal(sent.body?.stream, true);
    assert.equal(sent.body?.partial_images, 2);
    assert.deepEqual(partials.map((p) => [p.index, p.partialIndex]), [[0, 0], [0, 1]]);
    for (const p of partials) {
      assert.deepEqual(p.data, standin.partialPng);
      assert.equal(p.mediaType, 'image/png');
    }
    assert.equal(result.images.length, 1);
    assert.deepEqual(Buffer.from(result.images[0]!.data), standin.png);
    assert.deepEqual(result.warnings, []);
    assert.deepEqual(ctx.progress, [1 / 3, 2 / 3, 1]);
    assert.match(String(result.providerMetadata?.requestId), /^req_standin_/);
    assert.ok(result.providerMetadata?.usage, 'usage comes from the completed event');
  });

  test('n=2 is two streamed calls, each image with its own partials', async () => {
    const ctx = context();
    const { partials } = withPartials(ctx);
    const result = await make().generate(request({ n: 2, partialImages: 1 }), ctx);
    assert.equal(result.images.length, 2);
    const sent = imageRequests(standin);
    assert.equal(sent.length, 2);
    for (const r of sent) assert.equal(r.body?.n, 1);
    assert.deepEqual(partials.map((p) => `${p.index}/${p.partialIndex}`).sort(), ['0/0', '1/0']);
  });

  test('edits stream too (image_edit.* events over multipart)', async () => {
    const ctx = context();
    const { partials } = withPartials(ctx);
    const result = await make().generate(request({ kind: 'edit', partialImages: 3, inputImages: [{ data: new Uint8Array(standin.png), mediaType: 'image/png' }] }), ctx);
    assert.equal(partials.length, 3);
    assert.deepEqual(Buffer.from(result.images[0]!.data), standin.png);
    const [sent] = imageRequests(standin);
    assert.equal(sent.path, '/v1/images/edits');
    assert.equal(sent.body?.stream, 'true');
  });

  test('a model that cannot stream is called plainly, with a warning', async () => {
    const ctx = context();
    const { partials } = withPartials(ctx);
    const result = await make().generate(request({ model: 'dall-e-3', partialImages: 2 }), ctx);
    assert.equal(result.images.length, 1);
    assert.equal(partials.length, 0);
    assert.equal(imageRequests(standin)[0]!.body?.stream, undefined);
    assert.match(result.warnings.map((w) => w.detail).join('\n'), /partial_images is not supported by dall-e-3/);
  });

  test('without a partial-image listener nothing is streamed', async () => {
    const result = await make().generate(request({ partialImages: 2 }), context());
    assert.equal(result.images.length, 1);
    assert.equal(imageRequests(standin)[0]!.body?.stream, undefined);
  });

  test('a refusal sent as an error event mid-stream is content_policy_violation', async () => {
    const refusing = await startOpenAIStandin({ streamError: MODERATION_BLOCKED });
    try {
      const backend = new OpenAIBackend({ type: 'openai', name: 'oai', baseUrl: refusing.url, apiKey: DEFAULT_STANDIN_KEY });
      const ctx = context();
      const { partials } = withPartials(ctx);
      const err = await rejection(backend.generate(request({ partialImages: 1 }), ctx));
      assert.equal(err.code, 'content_policy_violation');
      assert.match(err.message, /oai/);
      assert.equal(partials.length, 1, 'the partial sent before the refusal was still delivered');
    } finally {
      await refusing.close();
    }
  });

  test('canceling mid-stream aborts the call', async () => {
    gate = new Promise<void>(() => {}); // never completes
    const controller = new AbortController();
    const ctx = context(controller.signal);
    const { nextPartial } = withPartials(ctx);
    const first = nextPartial();
    const call = make().generate(request({ partialImages: 1 }), ctx);
    await first;
    controller.abort();
    const err = await rejection(call);
    assert.equal(err.code, 'aborted');
  });
});

describe('OpenAIBackend against an OpenAI-compatible endpoint (LocalAI / easel)', () => {
  let standin: OpenAIStandin;
  before(async () => {
    standin = await startOpenAIStandin({ strict: false, apiKey: null });
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
  });

  test('a url-only answer is downloaded', async () => {
    const backend = new OpenAIBackend({ type: 'openai', name: 'local', baseUrl: standin.url, apiKey: 'k' });
    const result = await backend.generate(request({ model: 'sd-turbo', n: 2, outputFormat: 'png' }), context());
    assert.equal(result.images.length, 2);
    for (const image of result.images) {
      assert.deepEqual(Buffer.from(image.data), standin.png);
      assert.equal(image.mediaType, 'image/png');
    }
    const [sent] = standin.requests.filter((r) => r.path.startsWith('/v1/images/'));
    assert.equal(sent.body?.response_format, undefined, 'not sent to models we do not know');
    const downloads = standin.requests.filter((r) => r.path.startsWith('/files/'));
    assert.equal(downloads.length, 2);
    assert.equal(downloads[0].headers.authorization, 'Bearer k', 'same origin gets the key');
  });

  test('extras go in the body when the endpoint accepts them', async () => {
    const backend = new OpenAIBackend({ type: 'openai', name: 'local', baseUrl: standin.url, apiKey: 'k', extraBodyFields: true });
    const result = await backend.generate(
      request({ model: 'sd-turbo', negativePrompt: 'blurry', seed: 42, steps: 20, guidanceScale: 7.5 }),
      context(),
    );
    assert.deepEqual(result.warnings, []);
    const [sent] = standin.requests.filter((r) => r.path.startsWith('/v1/images/'));
    assert.equal(sent.body?.negative_prompt, 'blurry');
    assert.equal(sent.body?.seed, 42);
    assert.equal(sent.body?.steps, 20);
    assert.equal(sent.body?.guidance_scale, 7.5);
  });

  test('an OpenAI-compatible server takes the options its config declares, and no others', async () => {
    const backend = new OpenAIBackend({ type: 'openai', name: 'local', baseUrl: standin.url, apiKey: 'k', providerOptions: { true_cfg_scale: { type: 'number', min: 0, max: 20 } } });
    const result = await backend.generate(request({ model: 'local-sd', providerOptions: { true_cfg_scale: 4, flow_shift: 3 } }), context());
    const [sent] = standin.requests.filter((r) => r.path.startsWith('/v1/images/'));
    assert.equal(sent.body?.true_cfg_scale, 4);
    assert.equal(sent.body?.flow_shift, undefined);
    assert.deepEqual(result.warnings.map((w) => w.setting), ['provider_options.flow_shift']);
    assert.equal(openaiBackendConfigSchema.safeParse({ type: 'openai', name: 'x', providerOptions: { num_inference_steps: 'integer' } }).success, false);
  });

  test('with no key configured no Authorization header is sent', async () => {
    const backend = new OpenAIBackend({ type: 'openai', name: 'local', baseUrl: standin.url }, { env: {} });
    await backend.generate(request({ model: 'sd-turbo' }), context());
    assert.equal(standin.requests[0].headers.authorization, undefined);
  });

  test('the key is read from apiKeyEnv', async () => {
    const backend = new OpenAIBackend(
      { type: 'openai', name: 'local', baseUrl: standin.url, apiKeyEnv: 'LOCALAI_KEY' },
      { env: { LOCALAI_KEY: 'from-env', OPENAI_API_KEY: 'not-this' } },
    );
    await backend.generate(request({ model: 'sd-turbo' }), context());
    assert.equal(standin.requests[0].headers.authorization, 'Bearer from-env');
  });
});

describe('OpenAIBackend without a reachable endpoint', () => {
  test('connection refused is a retryable backend_unavailable, and health is not ok', async () => {
    const port = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const backend = new OpenAIBackend({ type: 'openai', name: 'gone', baseUrl: `http://127.0.0.1:${port}/v1`, apiKey: 'k', maxRetries: 0 });
    const err = await rejection(backend.generate(request(), context()));
    assert.equal(err.code, 'backend_unavailable');
    assert.equal(err.retryable, true);
    const health = await backend.health();
    assert.equal(health.ok, false);
    assert.match(String(health.message), /unreachable/);
  });
});

describe('openaiBackendConfigSchema', () => {
  test('fills defaults', () => {
    const config = openaiBackendConfigSchema.parse({ type: 'openai', name: 'oai' });
    assert.equal(config.baseUrl, 'https://api.openai.com/v1');
    assert.equal(config.timeoutSeconds, 300);
    assert.equal(config.maxRetries, 2);
    assert.equal(config.maxImagesPerCall, 10);
    assert.equal(config.extraBodyFields, false);
  });

  test('rejects unknown keys and non-http URLs, naming them', () => {
    const unknown = openaiBackendConfigSchema.safeParse({ type: 'openai', name: 'oai', apikey: 'x' });
    assert.equal(unknown.success, false);
    assert.match(JSON.stringify(unknown.error?.issues), /apikey/);
    const badUrl = openaiBackendConfigSchema.safeParse({ type: 'openai', name: 'oai', baseUrl: 'file:///etc/passwd' });
    assert.equal(badUrl.success, false);
    assert.deepEqual(badUrl.error?.issues[0]?.path, ['baseUrl']);
    const badCaps = openaiBackendConfigSchema.safeParse({ type: 'openai', name: 'oai', capabilities: { inpaint: true } });
    assert.equal(badCaps.success, false);
  });
});
