import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AiSdkBackend, defaultOptionsKey } from '../../src/backends/ai-sdk/ai-sdk-backend.ts';
import type { AiSdkBackendConfigInput } from '../../src/backends/ai-sdk/options.ts';
import { DEFAULT_STANDIN_KEY, MODERATION_BLOCKED, startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { context, isPng, recordingLog, rejection, request } from './helpers.ts';

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

  test('generates through the provider package, passing n, size and provider options', async () => {
    const result = await make().generate(
      request({ model: 'gpt-image-1', n: 2, size: { width: 1024, height: 1024 }, providerOptions: { quality: 'low' } }),
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
