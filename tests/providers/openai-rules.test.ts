import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { OpenAIBackend } from '../../src/backends/openai/openai-backend.ts';
import type { OpenAIBackendConfigInput } from '../../src/backends/openai/options.ts';
import { applyOpenAIModelRules, gptImage2SizeProblem, openaiFamily, rulesApply } from '../../src/backends/openai/model-rules.ts';
import { DEFAULT_STANDIN_KEY, startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { context, rejection, request } from './helpers.ts';

const png = { data: new Uint8Array([0x89, 0x50, 0x4e, 0x47]), mediaType: 'image/png' };

describe('OpenAI model rules', () => {
  test('auto applies them to OpenAI itself only', () => {
    assert.equal(rulesApply('auto', 'https://api.openai.com/v1'), true);
    assert.equal(rulesApply('auto', 'http://localai:8080/v1'), false);
    assert.equal(rulesApply('on', 'http://localai:8080/v1'), true);
    assert.equal(rulesApply('off', 'https://api.openai.com/v1'), false);
    assert.equal(openaiFamily(''), 'dall-e-2');
    assert.equal(openaiFamily('gpt-image-1.5'), 'gpt-image');
    assert.equal(openaiFamily('gpt-image-2-2026-04-21'), 'gpt-image-2');
    assert.equal(openaiFamily('chatgpt-image-latest'), 'gpt-image');
  });

  test('n limits: dall-e-3 takes one image per call, the rest up to ten', () => {
    assert.deepEqual(applyOpenAIModelRules(request({ model: 'dall-e-3', n: 3 }), 'b').calls, [1, 1, 1]);
    assert.deepEqual(applyOpenAIModelRules(request({ model: 'gpt-image-1', n: 12 }), 'b').calls, [10, 2]);
    assert.deepEqual(applyOpenAIModelRules(request({ model: 'dall-e-2', n: 4 }), 'b').calls, [4]);
  });

  test('sizes per model', () => {
    const size = (model: string, width: number, height: number) => () => applyOpenAIModelRules(request({ model, size: { width, height } }), 'b');
    assert.throws(size('dall-e-3', 512, 512), /size 512x512 is not offered; use one of 1024x1024, 1792x1024, 1024x1792/);
    assert.throws(size('dall-e-2', 1792, 1024), /not offered/);
    assert.throws(size('gpt-image-1', 1792, 1024), /1536x1024, 1024x1536 or auto/);
    assert.doesNotThrow(size('gpt-image-1', 1536, 1024));
    assert.doesNotThrow(size('gpt-image-2', 2048, 1152));
    assert.throws(size('gpt-image-2', 1000, 1000), /multiples of 16/);
    assert.equal(gptImage2SizeProblem(4000, 1008), 'the aspect ratio must be between 1:3 and 3:1');
    assert.equal(gptImage2SizeProblem(3840, 2176), 'it must be at most 3840x2160');
    assert.doesNotThrow(size('some-local-model', 777, 333), 'unknown models pass through');
  });

  test('qualities and styles', () => {
    const q = (model: string, quality: string) => applyOpenAIModelRules(request({ model, quality }), 'b');
    assert.equal(q('dall-e-3', 'high').request.quality, 'hd');
    assert.match(q('dall-e-3', 'high').warnings[0]!.detail, /sent as "hd"/);
    assert.equal(q('gpt-image-1', 'hd').request.quality, 'high');
    assert.equal(q('gpt-image-1', 'standard').request.quality, 'medium');
    assert.equal(q('dall-e-2', 'hd').request.quality, undefined);
    assert.match(q('dall-e-2', 'hd').warnings[0]!.detail, /not offered/);
    assert.deepEqual(q('dall-e-2', 'auto').warnings, []);
    assert.throws(() => q('gpt-image-1', 'ultra'), /quality "ultra" is not offered; use one of low, medium, high, auto/);
    assert.throws(() => applyOpenAIModelRules(request({ model: 'dall-e-3', style: 'moody' }), 'b'), /style "moody".*vivid, natural/);
  });

  test('prompt lengths, edits, variations, transparency, input_fidelity', () => {
    assert.throws(() => applyOpenAIModelRules(request({ model: 'dall-e-2', prompt: 'x'.repeat(1001) }), 'b'), /1001 characters; at most 1000/);
    assert.doesNotThrow(() => applyOpenAIModelRules(request({ model: 'dall-e-3', prompt: 'x'.repeat(4000) }), 'b'));
    assert.throws(() => applyOpenAIModelRules(request({ model: 'dall-e-3', kind: 'edit', inputImages: [png] }), 'b'), /does not support edits/);
    assert.throws(() => applyOpenAIModelRules(request({ model: 'dall-e-2', kind: 'edit', inputImages: [png, png] }), 'b'), /at most 1 input image/);
    assert.throws(() => applyOpenAIModelRules(request({ model: 'gpt-image-1', kind: 'variation', inputImages: [png] }), 'b'), /only offered by dall-e-2/);
    assert.throws(() => applyOpenAIModelRules(request({ model: 'gpt-image-1', background: 'transparent', outputFormat: 'jpeg' }), 'b'), /png or webp/);
    const mini = applyOpenAIModelRules(request({ model: 'gpt-image-1-mini', kind: 'edit', inputImages: [png], providerOptions: { input_fidelity: 'high' } }), 'b');
    assert.equal(mini.request.providerOptions.input_fidelity, undefined);
    assert.match(mini.warnings[0]!.detail, /input_fidelity/);
  });
});

describe('OpenAIBackend with model rules on (against the strict stand-in)', () => {
  let standin: OpenAIStandin;
  const make = (config: Partial<OpenAIBackendConfigInput> = {}) =>
    new OpenAIBackend({ type: 'openai', name: 'oai', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY, modelRules: 'on', ...config });
  const images = () => standin.requests.filter((r) => r.path.startsWith('/v1/images/'));

  before(async () => {
    standin = await startOpenAIStandin();
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
  });

  test('dall-e-3 with n=3 becomes three n=1 calls, each with its revised_prompt', async () => {
    const ctx = context();
    const result = await make().generate(request({ model: 'dall-e-3', n: 3, quality: 'high', size: { width: 1792, height: 1024 } }), ctx);
    assert.equal(result.images.length, 3);
    for (const img of result.images) assert.match(img.revisedPrompt!, /a red fox/);
    assert.equal(images().length, 3);
    for (const r of images()) {
      assert.equal(r.body?.n, 1);
      assert.equal(r.body?.quality, 'hd');
      assert.equal(r.body?.response_format, 'b64_json', 'DALL·E is asked for base64, never a URL to fetch');
    }
    assert.equal(ctx.progress.at(-1), 1);
  });

  test('a size the model does not offer fails before any call', async () => {
    const err = await rejection(make().generate(request({ model: 'dall-e-3', size: { width: 512, height: 512 } }), context()));
    assert.equal(err.code, 'invalid_request');
    assert.match(err.message, /param 'size'/);
    assert.equal(images().length, 0);
  });

  test('gpt-image is never asked for a response format, and gets a mapped quality', async () => {
    const result = await make().generate(request({ model: 'gpt-image-1', quality: 'hd', n: 2 }), context());
    assert.equal(result.images.length, 2);
    const [sent] = images();
    assert.equal(sent.body?.response_format, undefined);
    assert.equal(sent.body?.quality, 'high');
    assert.match(result.warnings.map((w) => w.detail).join('\n'), /sent as "high"/);
  });

  test('rules off (the default for non-OpenAI hosts) sends the request as it is', async () => {
    const err = await rejection(make({ modelRules: 'auto' }).generate(request({ model: 'dall-e-3', n: 2 }), context()));
    assert.equal(err.code, 'invalid_request');
    assert.equal(err.status, 400, 'the endpoint refused it');
    assert.equal(images().length, 1);
  });
});
