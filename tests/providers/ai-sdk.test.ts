import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AiSdkBackend, defaultOptionsKey } from '../../src/backends/ai-sdk/ai-sdk-backend.ts';
import type { AiSdkBackendConfigInput } from '../../src/backends/ai-sdk/options.ts';
import { DEFAULT_STANDIN_KEY, MODERATION_BLOCKED, startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { HOSTILE, context, hostileOptions, assertWarnsAbout, isPng, recordingLog, rejection, request } from './helpers.ts';
import { completeSpec, providerOptionsProblem, requestProblem } from '../../src/backends/model-spec.ts';
import { aiSdkBackendConfigSchema } from '../../src/backends/ai-sdk/options.ts';

describe('AiSdkBackend (a generic AI SDK provider: @ai-sdk/openai against the OpenAI stand-in)', () => {
  let standin: OpenAIStandin;
  const make = (config: Partial<AiSdkBackendConfigInput> = {}, deps = {}) =>
    new AiSdkBackend(
      { type: 'ai-sdk', name: 'aisdk', package: '@ai-sdk/openai', apiKey: DEFAULT_STANDIN_KEY, settings: { baseURL: standin.url }, maxRetries: 1, ...config },
      deps,
    );
  const images = () => standin.requests.filter((r) => r.path.startsWith('/v1/images/'));

  before(async () => {
    standin = await startOpenAIStandin();
  });
  after(() => standin.close());
  beforeEach(() => {
    standin.requests.length = 0;
  });

  test('generates through the provider package, passing n, size, quality (the package’s own option) and provider options', async () => {
    const result = await make().generate(
      request({ model: 'gpt-image-1', n: 2, size: { width: 1024, height: 1024 }, quality: 'low', providerOptions: { moderation: 'low' } }),
      context(),
    );
    assert.equal(result.images.length, 2);
    for (const img of result.images) {
      assert.ok(isPng(img.data));
      assert.equal(img.mediaType, 'image/png');
    }
    const [sent] = images();
    assert.equal(sent.headers.authorization, `Bearer ${DEFAULT_STANDIN_KEY}`);
    assert.equal(sent.body?.model, 'gpt-image-1');
    assert.equal(sent.body?.n, 2);
    assert.equal(sent.body?.size, '1024x1024');
    assert.equal(sent.body?.quality, 'low');
    assert.equal(sent.body?.moderation, 'low');
    assert.deepEqual(result.warnings, []);
  });

  test('hostile provider options never reach the provider: n, model, size, quality and prompt stay easel’s', async () => {
    const providerOptions = hostileOptions({ quality: 'high', numberOfImages: 4, outputFormat: 'jpeg', moderation: 'low' });
    const result = await make().generate(request({ model: 'gpt-image-1', n: 1, size: { width: 1024, height: 1024 }, quality: 'low', providerOptions }), context());
    assert.equal(result.images.length, 1);
    const [sent] = images();
    assert.equal(sent.body?.model, 'gpt-image-1');
    assert.equal(sent.body?.n, 1);
    assert.equal(sent.body?.size, '1024x1024');
    assert.equal(sent.body?.quality, 'low');
    assert.equal(sent.body?.prompt, 'a red fox in the snow');
    assert.equal(sent.body?.output_format, undefined);
    assert.equal(sent.body?.moderation, 'low');
    assert.doesNotMatch(JSON.stringify(sent.body), HOSTILE);
    assertWarnsAbout(result.warnings, ['n', 'model', 'size', 'quality', 'prompt', 'image', 'input.prompt', '__proto__', 'numberOfImages', 'outputFormat']);
  });

  test('the spec: OpenAI’s rules for @ai-sdk/openai; for other packages what config declares, else nothing', async () => {
    const openai = completeSpec(make().modelSpec('dall-e-3'), 'dall-e-3');
    assert.deepEqual(openai.qualities, ['standard', 'hd']);
    assert.equal(requestProblem('dall-e-3', openai, { prompt: 'x', size: { width: 512, height: 512 } }, 'generation')?.param, 'size');
    assert.equal(providerOptionsProblem('dall-e-3', openai, { moderation: 'low' }), undefined);
    const other = (config: Partial<AiSdkBackendConfigInput> = {}) => make({ package: '@ai-sdk/some-provider', ...config });
    assert.equal(providerOptionsProblem('m', other().modelSpec('m'), { anything: 1 })?.code, 'unknown_parameter');
    const declared = other({ providerOptions: { stylePreset: { type: 'string', values: ['photo', 'anime'] } }, sizes: ['1024x1024'] });
    const spec = completeSpec(declared.modelSpec('m'), 'm');
    assert.equal(providerOptionsProblem('m', spec, { stylePreset: 'anime' }), undefined);
    assert.equal(providerOptionsProblem('m', spec, { stylePreset: 'oil' })?.code, 'invalid_value');
    assert.equal(requestProblem('m', spec, { prompt: 'x', size: { width: 512, height: 512 } }, 'generation')?.param, 'size');
    const bad = aiSdkBackendConfigSchema.safeParse({ type: 'ai-sdk', name: 'a', package: '@ai-sdk/x', providerOptions: { num_inference_steps: 'integer' } });
    assert.equal(bad.success, false);
    assert.equal(aiSdkBackendConfigSchema.safeParse({ type: 'ai-sdk', name: 'a', package: '@ai-sdk/x', providerOptions: { seed: 'integer' } }).success, false);
    // A mapped request field goes under the operator's name for it.
    const mapped = make({ requestFields: { style: 'style' }, package: '@ai-sdk/openai' });
    await mapped.generate(request({ model: 'dall-e-3', style: 'natural' }), context());
    assert.equal(images()[0]!.body?.style, 'natural');
  });

  test('a moderation refusal names the provider; a bad key is backend_auth with health red', async () => {
    standin.failNext(1, 400, MODERATION_BLOCKED);
    const err = await rejection(make().generate(request({ model: 'gpt-image-1' }), context()));
    assert.equal(err.code, 'content_policy_violation');
    assert.match(err.message, /@ai-sdk\/openai refused/);
    const log = recordingLog();
    const bad = make({ apiKey: 'sk-wrong' }, { log });
    const auth = await rejection(bad.generate(request({ model: 'gpt-image-1' }), context()));
    assert.equal(auth.code, 'backend_auth');
    assert.equal((await bad.health()).ok, false);
    assert.equal(log.lines.filter((l) => l.level === 'error').length, 1);
  });

  test('5xx is a retryable backend_unavailable (the SDK retries per maxRetries)', async () => {
    standin.failNext(5, 500);
    const err = await rejection(make({ maxRetries: 0 }).generate(request({ model: 'gpt-image-1' }), context()));
    assert.equal(err.code, 'backend_unavailable');
    assert.equal(err.retryable, true);
    assert.equal(images().length, 1);
  });

  test('a package that is not installed is a clear error', async () => {
    const backend = make({ package: '@ai-sdk/not-a-real-provider' });
    const err = await rejection(backend.generate(request({ model: 'x' }), context()));
    assert.match(err.message, /not installed \(npm install @ai-sdk\/not-a-real-provider\)/);
    assert.equal(defaultOptionsKey('@ai-sdk/black-forest-labs'), 'blackForestLabs');
    assert.equal(defaultOptionsKey('@ai-sdk/openai'), 'openai');
  });
});
