/** The `onnx` backend: engine runs on worker threads, batching across jobs, formats, errors, aborts. */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertWarnsAbout, hostileOptions } from '../support/hostile-options.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { OnnxBackend } from '../../src/backends/onnx/onnx-backend.ts';
import { BackendError } from '../../src/backends/image-backend.ts';
import type { BackendCallContext, BackendRequest } from '../../src/backends/image-backend.ts';
import { buildTinyModel } from './support/tiny-models.ts';

let root: string;
let backend: OnnxBackend;

before(() => {
  root = mkdtempSync(join(tmpdir(), 'easel-onnx-backend-'));
  buildTinyModel(join(root, 'models', 'tiny'), { unet: 'text', vaeEncoder: true, manifest: { name: 'tiny', kind: 'pipeline', family: 'sd' } });
  buildTinyModel(join(root, 'models', 'turbo'), { unet: 'identity', manifest: { name: 'turbo', kind: 'pipeline', family: 'turbo' } });
  buildTinyModel(join(root, 'turbo-only', 'turbo'), { unet: 'identity', manifest: { name: 'turbo', kind: 'pipeline', family: 'turbo' } });
  backend = new OnnxBackend({ type: 'onnx', name: 'local', modelsDir: join(root, 'models'), intraOpThreads: 1 });
});
after(async () => {
  await backend.close();
  rmSync(root, { recursive: true, force: true });
});

function ctx(signal = new AbortController().signal, progress: number[] = []): BackendCallContext {
  return { jobId: 'job_test', signal, reportProgress: (p) => progress.push(p), savedState: undefined, saveState: async () => {} };
}

function req(over: Partial<BackendRequest> = {}): BackendRequest {
  return {
    kind: 'generation',
    model: 'tiny',
    prompt: 'a red fox in snow',
    n: 1,
    size: { width: 64, height: 48 },
    outputFormat: 'png',
    seed: 42,
    steps: 2,
    inputImages: [],
    providerOptions: {},
    ...over,
  };
}

describe('generation through the worker thread', () => {
  test('n images of the requested size, each with its own seed', async () => {
    const progress: number[] = [];
    const res = await backend.generate(req({ n: 2 }), ctx(undefined, progress));
    assert.equal(res.images.length, 2);
    assert.deepEqual(res.images.map((i) => i.seed), [42, 43]);
    for (const img of res.images) {
      assert.equal(img.mediaType, 'image/png');
      const meta = await sharp(img.data).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 48]);
    }
    assert.notDeepEqual(res.images[0]!.data, res.images[1]!.data);
    assert.equal(res.providerMetadata?.batchImages, 2, 'both images in one batch');
    assert.equal(progress.at(-1), 1);
  });

  test('same request and seed → the same bytes; the seed comes back when none was given', async () => {
    const a = await backend.generate(req(), ctx());
    const b = await backend.generate(req(), ctx());
    assert.deepEqual(a.images[0]!.data, b.images[0]!.data);
    const c = await backend.generate(req({ seed: undefined }), ctx());
    assert.equal(typeof c.images[0]!.seed, 'number');
    const d = await backend.generate(req({ seed: c.images[0]!.seed }), ctx());
    assert.deepEqual(d.images[0]!.data, c.images[0]!.data);
  });

  test('webp and jpeg come out encoded as asked', async () => {
    for (const [format, mime] of [['webp', 'image/webp'], ['jpeg', 'image/jpeg']] as const) {
      const res = await backend.generate(req({ outputFormat: format, outputCompression: 80 }), ctx());
      assert.equal(res.images[0]!.mediaType, mime);
      assert.equal((await sharp(res.images[0]!.data).metadata()).format, format);
    }
  });

  test('the model default size and steps apply when none are given', async () => {
    const res = await backend.generate(req({ model: 'turbo', size: undefined, steps: undefined }), ctx());
    const meta = await sharp(res.images[0]!.data).metadata();
    assert.deepEqual([meta.width, meta.height], [64, 64], 'the tiny VAE config says sample_size 64');
    assert.equal(res.providerMetadata?.steps, 1);
    assert.equal(res.providerMetadata?.scheduler, 'euler');
  });

  test('queued jobs that agree on model, size and steps share one batch; their bytes do not change', async () => {
    const solo = await backend.generate(req({ prompt: 'a blue bird', seed: 7 }), ctx());
    const [first, b1, b2] = await Promise.all([
      backend.generate(req({ prompt: 'keeps the engine busy', seed: 1, steps: 3 }), ctx()),
      backend.generate(req({ prompt: 'a blue bird', seed: 7 }), ctx()),
      backend.generate(req({ prompt: 'a green frog', negativePrompt: 'blurry', seed: 8 }), ctx()),
    ]);
    assert.equal(first.providerMetadata?.batchImages, 1);
    assert.equal(b1.providerMetadata?.batchImages, 2);
    assert.equal(b2.providerMetadata?.batchImages, 2);
    assert.deepEqual(b1.images[0]!.data, solo.images[0]!.data);
  });

  test('the event loop stays responsive while the engine works', async () => {
    let worst = 0;
    let last = performance.now();
    const timer = setInterval(() => {
      const now = performance.now();
      worst = Math.max(worst, now - last - 5);
      last = now;
    }, 5);
    try {
      await backend.generate(req({ n: 4, size: { width: 256, height: 256 }, steps: 4 }), ctx());
    } finally {
      clearInterval(timer);
    }
    assert.ok(worst < 150, `event loop stalled ${worst.toFixed(0)} ms`);
  });
});

describe('edits (img2img)', () => {
  test('capability follows the VAE encoder', () => {
    assert.equal(backend.capabilities.edit, true);
    assert.equal(backend.capabilities.mask, false);
    const turboOnly = new OnnxBackend({ type: 'onnx', name: 'x', modelsDir: join(root, 'turbo-only') });
    assert.equal(turboOnly.capabilities.edit, false);
    assert.equal(turboOnly.capabilities.maxInputImages, 0);
  });

  test('an uploaded image is resized, encoded and repainted at the given strength', async () => {
    const input = await sharp({ create: { width: 100, height: 80, channels: 3, background: { r: 200, g: 100, b: 50 } } }).png().toBuffer();
    const res = await backend.generate(
      req({ kind: 'edit', size: { width: 48, height: 32 }, inputImages: [{ data: input, mediaType: 'image/png' }], providerOptions: { strength: 0.5 }, steps: 4 }),
      ctx(),
    );
    const meta = await sharp(res.images[0]!.data).metadata();
    assert.deepEqual([meta.width, meta.height], [48, 32]);
    assert.equal(res.providerMetadata?.steps, 2, '4 steps at strength 0.5 run 2');
    const noSize = await backend.generate(req({ kind: 'edit', size: undefined, inputImages: [{ data: input, mediaType: 'image/png' }] }), ctx());
    const m2 = await sharp(noSize.images[0]!.data).metadata();
    assert.deepEqual([m2.width, m2.height], [64, 56], '100x80 scaled to about 64² and down to multiples of 8');
  });

  test('a model without an encoder refuses edits', async () => {
    const input = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#fff' } }).png().toBuffer();
    await assert.rejects(backend.generate(req({ kind: 'edit', model: 'turbo', inputImages: [{ data: input, mediaType: 'image/png' }] }), ctx()), (e: BackendError) => e.code === 'invalid_request' && /no VAE encoder/.test(e.message));
  });
});

describe('refusals', () => {
  const code = (c: string) => (e: unknown) => e instanceof BackendError && e.code === c;
  test('unknown model, variation, mask, bad size, bad provider option', async () => {
    await assert.rejects(backend.generate(req({ model: 'nope' }), ctx()), code('model_not_found'));
    await assert.rejects(backend.generate(req({ model: '../etc' }), ctx()), code('invalid_request'));
    await assert.rejects(backend.generate(req({ kind: 'variation' }), ctx()), code('invalid_request'));
    await assert.rejects(backend.generate(req({ kind: 'edit', mask: { data: new Uint8Array(1), mediaType: 'image/png' } }), ctx()), code('invalid_request'));
    await assert.rejects(backend.generate(req({ size: { width: 60, height: 64 } }), ctx()), code('invalid_request'));
    await assert.rejects(backend.generate(req({ size: { width: 2048, height: 2048 } }), ctx()), code('invalid_request'));
    await assert.rejects(backend.generate(req({ providerOptions: { scheduler: 'ddim' } }), ctx()), code('invalid_request'));
    await assert.rejects(backend.generate(req({ providerOptions: { scheduler: 'lcm' } }), ctx()), code('invalid_request'));
  });

  test('settings it cannot honour come back as warnings', async () => {
    const res = await backend.generate(req({ style: 'vivid', providerOptions: { foo: 1, scheduler: 'dpmpp-2m' } }), ctx());
    const text = res.warnings.map((w) => w.detail).join('\n');
    assert.match(text, /style is not supported/);
    assert.match(text, /provider option foo/);
    assert.equal(res.providerMetadata?.scheduler, 'dpmpp-2m');
  });

  test('hostile provider options change nothing easel maps: model, count, size, steps and prompt stay the request’s', async () => {
    const plain = await backend.generate(req(), ctx());
    const providerOptions = hostileOptions({ model: 'turbo', size: '8x8', width: 8, steps: 40, num_inference_steps: 40, negative_prompt: 'hostile', scheduler: 'euler' });
    const res = await backend.generate(req({ providerOptions }), ctx());
    assert.equal(res.images.length, 1);
    assert.deepEqual(res.images[0]!.data, plain.images[0]!.data, 'the same image as without the options');
    assert.deepEqual([res.providerMetadata?.width, res.providerMetadata?.height, res.providerMetadata?.steps], [64, 48, 2]);
    assertWarnsAbout(res.warnings, ['n', 'model', 'size', 'width', 'steps', 'num_inference_steps', 'prompt', 'negative_prompt', 'image', 'input.prompt', '__proto__']);
  });

  test('the spec: sizes in multiples of 8 up to maxPixels, edits only where the model has an encoder, no masks', async () => {
    const { completeSpec, providerOptionsProblem, requestProblem } = await import('../../src/backends/model-spec.ts');
    const tiny = completeSpec(backend.modelSpec('tiny'), 'tiny');
    assert.deepEqual(tiny.capabilities, { generate: true, edit: true, mask: false, variation: false, maxInputImages: 1 });
    assert.equal(backend.modelSpec('turbo').capabilities.edit, false);
    assert.equal(tiny.pricing, 'gpu-time');
    assert.equal(requestProblem('tiny', tiny, { prompt: 'x', size: { width: 60, height: 64 } }, 'generation')?.param, 'size');
    assert.equal(requestProblem('tiny', tiny, { prompt: 'x', size: { width: 2048, height: 2048 } }, 'generation')?.param, 'size');
    assert.equal(providerOptionsProblem('tiny', tiny, { scheduler: 'euler-a', strength: 0.5, decoder: 'vae' }), undefined);
    assert.equal(providerOptionsProblem('tiny', tiny, { foo: 1 })?.code, 'unknown_parameter');
  });
});

describe('abort and health', () => {
  test('an aborted call rejects as aborted and the engine keeps working', async () => {
    const controller = new AbortController();
    const p = backend.generate(req({ steps: 40 }), { ...ctx(controller.signal), reportProgress: () => controller.abort() });
    await assert.rejects(p, (e: BackendError) => e.code === 'aborted');
    const after = await backend.generate(req(), ctx());
    assert.equal(after.images.length, 1);
  });

  test('health says which models are there, or how to get one', async () => {
    assert.deepEqual(await backend.health(), { ok: true, message: '2 model(s): tiny, turbo' });
    const empty = new OnnxBackend({ type: 'onnx', name: 'x', modelsDir: join(root, 'nothing') });
    const h = await empty.health();
    assert.equal(h.ok, false);
    assert.match(h.message!, /easel models pull sd-turbo/);
  });

  test('CUDA asked for but unavailable: one log line for the backend, then CPU', async () => {
    const lines: string[] = [];
    const cuda = new OnnxBackend({ type: 'onnx', name: 'gpu', modelsDir: join(root, 'models'), executionProvider: 'cuda', intraOpThreads: 1 }, { warn: (m) => lines.push(m) });
    try {
      const a = await cuda.generate(req({ model: 'turbo' }), ctx());
      await cuda.generate(req({ model: 'tiny' }), ctx());
      assert.equal(lines.length, 1);
      assert.match(lines[0]!, /CUDA execution provider unavailable, running on CPU/);
      assert.equal(a.providerMetadata?.provider, 'cpu');
    } finally {
      await cuda.close();
    }
  });
});
