import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ImagenBackend } from '../../src/backends/imagen/imagen-backend.ts';
import type { ImagenBackendConfigInput } from '../../src/backends/imagen/options.ts';
import { IMAGEN_KEY, startImagenStandin } from '../support/imagen-standin.ts';
import type { ImagenStandin } from '../support/imagen-standin.ts';
import { HOSTILE, context, hostileOptions, assertWarnsAbout, recordingLog, rejection, request, warningText } from './helpers.ts';
import { completeSpec, providerOptionsProblem } from '../../src/backends/model-spec.ts';

const MODEL = 'imagen-4.0-generate-001';

describe('ImagenBackend against the Imagen stand-in', () => {
  let standin: ImagenStandin;
  const make = (config: Partial<ImagenBackendConfigInput> = {}, deps = {}) =>
    new ImagenBackend({ type: 'imagen', name: 'img', baseUrl: standin.url, apiKey: IMAGEN_KEY, ...config }, { retry: { baseDelayMs: 5 }, ...deps });

  before(async () => {
    standin = await startImagenStandin();
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
  });

  test('the stand-in’s quirk: a request without sampleCount makes four images', async () => {
    const res = await fetch(`${standin.url}/models/${MODEL}:predict`, {
      method: 'POST',
      headers: { 'x-goog-api-key': IMAGEN_KEY, 'content-type': 'application/json' },
      body: JSON.stringify({ instances: [{ prompt: 'x' }], parameters: {} }),
    });
    const body = (await res.json()) as { predictions: unknown[] };
    assert.equal(body.predictions.length, 4);
  });

  test('sampleCount is always explicit: n=1 asks for (and pays for) one image', async () => {
    const before = standin.imagesServed;
    const result = await make().generate(request({ model: MODEL, size: { width: 1024, height: 1024 } }), context());
    assert.equal(result.images.length, 1);
    assert.equal(result.images[0]!.mediaType, 'image/png');
    assert.equal(standin.imagesServed - before, 1);
    const [sent] = standin.predicts();
    assert.equal(sent.path, `/v1beta/models/${MODEL}:predict`);
    assert.equal(sent.headers['x-goog-api-key'], IMAGEN_KEY);
    assert.deepEqual(sent.json, {
      instances: [{ prompt: 'a red fox in the snow' }],
      parameters: { sampleCount: 1, includeRaiReason: true, aspectRatio: '1:1', outputOptions: { mimeType: 'image/png' } },
    });
  });

  test('n above four fans out; sizes map to the nearest aspect ratio; 2K for large Imagen 4 sizes; jpeg asked as jpeg', async () => {
    const result = await make({ personGeneration: 'dont_allow' }).generate(
      request({ model: MODEL, n: 6, size: { width: 2048, height: 1152 }, outputFormat: 'jpeg', outputCompression: 80 }),
      context(),
    );
    assert.equal(result.images.length, 6);
    assert.equal(result.images[0]!.mediaType, 'image/jpeg');
    const sent = standin.predicts();
    assert.deepEqual(sent.map((s) => s.json.parameters.sampleCount).sort(), [2, 4]);
    for (const s of sent) {
      assert.equal(s.json.parameters.aspectRatio, '16:9');
      assert.equal(s.json.parameters.sampleImageSize, '2K');
      assert.equal(s.json.parameters.personGeneration, 'dont_allow');
      assert.deepEqual(s.json.parameters.outputOptions, { mimeType: 'image/jpeg', compressionQuality: 80 });
    }
  });

  test('seed and negative prompt are Vertex-only: warned about, never sent', async () => {
    const result = await make().generate(request({ model: MODEL, seed: 3, negativePrompt: 'blur' }), context());
    assert.equal(result.images.length, 1, 'the stand-in would 400 on either');
    assert.match(warningText(result.warnings), /seed is not supported/);
    assert.match(warningText(result.warnings), /negative_prompt is not supported/);
  });

  test('a silently filtered image is a warning; all filtered is a content_policy_violation naming Google', async () => {
    const some = await make().generate(request({ model: MODEL, n: 3, prompt: 'filter-one please' }), context());
    assert.equal(some.images.length, 2);
    assert.match(warningText(some.warnings), /filtered 1 of 3 images \(Unable to show generated images\. Violence filter\.\)/);
    const err = await rejection(make().generate(request({ model: MODEL, n: 2, prompt: 'filter-all please' }), context()));
    assert.equal(err.code, 'content_policy_violation');
    assert.match(err.message, /^Google Imagen refused/);
  });

  test('a safety-worded 400 is a content_policy_violation', async () => {
    const err = await rejection(make().generate(request({ model: MODEL, prompt: 'unsafe words' }), context()));
    assert.equal(err.code, 'content_policy_violation');
    assert.match(err.message, /sensitive words/);
  });

  test('Google’s 400 API_KEY_INVALID is backend_auth with health red and a log line', async () => {
    const log = recordingLog();
    const backend = make({ apiKey: 'wrong' }, { log });
    const err = await rejection(backend.generate(request({ model: MODEL }), context()));
    assert.equal(err.code, 'backend_auth');
    assert.match(err.message, /API key not valid/);
    assert.equal((await backend.health()).ok, false);
    assert.equal(log.lines.filter((l) => l.level === 'error').length, 1);
  });

  test('429 RESOURCE_EXHAUSTED is retried; an unknown model is model_not_found; edits are refused', async () => {
    standin.inject({ status: 429, body: { error: { code: 429, message: 'Resource has been exhausted (e.g. check quota).', status: 'RESOURCE_EXHAUSTED' } } });
    const ok = await make().generate(request({ model: MODEL }), context());
    assert.equal(ok.images.length, 1);
    const nf = await rejection(make().generate(request({ model: 'imagen-9' }), context()));
    assert.equal(nf.code, 'model_not_found');
    const edit = await rejection(make().generate(request({ model: MODEL, kind: 'edit', inputImages: [{ data: new Uint8Array(4), mediaType: 'image/png' }] }), context()));
    assert.equal(edit.code, 'invalid_request');
  });

  test('hostile provider options never reach Imagen: sampleCount, prompt and moderation stay easel’s', async () => {
    const before = standin.imagesServed;
    const providerOptions = hostileOptions({ sampleCount: 4, personGeneration: 'allow_all', safetySetting: 'BLOCK_NONE', instances: [{ prompt: 'hostile instance' }], language: 'en' });
    const result = await make({ personGeneration: 'dont_allow' }).generate(request({ model: MODEL, n: 1, providerOptions }), context());
    assert.equal(result.images.length, 1);
    assert.equal(standin.imagesServed - before, 1, 'one image asked, one paid for');
    const [sent] = standin.predicts();
    assert.deepEqual(sent.json, {
      instances: [{ prompt: 'a red fox in the snow' }],
      parameters: { sampleCount: 1, includeRaiReason: true, personGeneration: 'dont_allow', language: 'en', outputOptions: { mimeType: 'image/png' } },
    });
    assert.doesNotMatch(JSON.stringify(sent.json), HOSTILE);
    assertWarnsAbout(result.warnings, ['n', 'model', 'size', 'prompt', 'image', 'input.prompt', '__proto__', 'sampleCount', 'personGeneration', 'safetySetting', 'instances']);
  });

  test('the spec: generate only, four samples per call, five aspect ratios, language and safety attributes as options', () => {
    const spec = completeSpec(make().modelSpec(MODEL), MODEL);
    assert.deepEqual(spec.capabilities, { generate: true, edit: false, mask: false, variation: false, maxInputImages: 0 });
    assert.equal(spec.maxImagesPerCall, 4);
    assert.equal(providerOptionsProblem(MODEL, spec, { language: 'ja', includeSafetyAttributes: true }), undefined);
    assert.equal(providerOptionsProblem(MODEL, spec, { enhancePrompt: true })?.code, 'unknown_parameter');
    assert.equal(providerOptionsProblem(MODEL, spec, { sampleCount: 2 })?.code, 'provider_option_not_allowed');
  });
});
