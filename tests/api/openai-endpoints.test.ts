/**
 * OpenAI-compatible endpoints that are not OpenAI, through easel's HTTP API: one without `/models`
 * is healthy as long as it answers (so `/ready` and the console agree with the generations that
 * succeed), `healthPath` points the check elsewhere; one that does not stream answers a
 * `partial_images` request with plain JSON and the image is taken from it, in one call; a stream that
 * ends without its image fails the job at once instead of being retried.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startEasel, waitForJob } from '../support/easel.ts';
import { DEFAULT_STANDIN_KEY, startOpenAIStandin } from '../support/openai-standin.ts';

const generations = (requests: { method: string; path: string }[]) => requests.filter((r) => r.method === 'POST' && r.path === '/v1/images/generations').length;

describe('health of OpenAI-compatible endpoints', () => {
  test('an endpoint that answers 404 on /models is up: /ready is 200, the system view says healthy, and generations succeed', async () => {
    const easel = await startEasel({ standin: { modelsRoute: false } });
    try {
      const ready = await fetch(`${easel.url}/ready`);
      const body = (await ready.json()) as any;
      assert.equal(ready.status, 200, JSON.stringify(body));
      assert.equal(body.checks.backends.ok, true);
      const sys = (await (await easel.api('/v1/system')).json()) as any;
      const standin = sys.backends.find((b: any) => b.name === 'standin');
      assert.equal(standin.ok, true);
      assert.equal(standin.message, 'reachable (/models answered 404)');
      const gen = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a red fox', model: 'dall-e-2' } });
      assert.equal(gen.status, 200);
      assert.ok(easel.standin.requests.some((r) => r.method === 'GET' && r.path === '/v1/models' && r.status === 404));
    } finally {
      await easel.close();
    }
  });

  test('healthPath: the check asks that path; a 5xx there is down, and /ready says why', async () => {
    const standin = await startOpenAIStandin({ strict: false, failNext: { status: 503, path: '/v1/healthz', count: 1000 } });
    const easel = await startEasel({
      existingStandin: standin,
      overrides: {
        backends: [{ type: 'openai', name: 'local-ai', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY, healthPath: '/healthz' }],
        models: [{ name: 'sd', backend: 'local-ai', model: 'dall-e-2', default: true }],
      },
    });
    try {
      const ready = await fetch(`${easel.url}/ready`);
      assert.equal(ready.status, 503);
      assert.equal(((await ready.json()) as any).checks.backends.message, 'no backend can take work', 'which check, without internals (no key is needed for /ready)');
      const why = (await (await easel.api('/v1/system')).json()) as any;
      assert.match(why.backends[0].message, /http:\/\/127\.0\.0\.1:\d+\/v1 answered 503 on \/healthz: Injected failure 503/, 'admins see why in /v1/system');
      assert.ok(standin.requests.some((r) => r.method === 'GET' && r.path === '/v1/healthz'));
      assert.ok(!standin.requests.some((r) => r.path === '/v1/models'), 'the default path is not asked');
    } finally {
      await easel.close();
      await standin.close();
    }
  });

  test('a refused key is down (every call would be refused too)', async () => {
    const standin = await startOpenAIStandin({ strict: false, apiKey: 'sk-right' });
    const easel = await startEasel({
      existingStandin: standin,
      overrides: { backends: [{ type: 'openai', name: 'oa', baseUrl: standin.url, apiKey: 'sk-wrong' }], models: [{ name: 'm', backend: 'oa', model: 'dall-e-2', default: true }] },
    });
    try {
      const sys = (await (await easel.api('/v1/system')).json()) as any;
      assert.equal(sys.backends[0].ok, false);
      assert.match(sys.backends[0].message, /refused the credentials \(401\): Incorrect API key provided\./);
    } finally {
      await easel.close();
      await standin.close();
    }
  });
});

describe('partial_images against an endpoint that does not stream', () => {
  test('the plain JSON answer to the streamed request gives the image, in one backend call, with a warning', async () => {
    const easel = await startEasel({ standin: { ignoreStream: true } });
    try {
      const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a red fox', model: 'test-model', partial_images: 2, async: true } });
      assert.equal(res.status, 202);
      const job = await waitForJob(easel, ((await res.json()) as any).id);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      assert.equal(job.result.data.length, 1);
      assert.ok(job.warnings.some((w: { setting?: string; detail: string }) => w.setting === 'partial_images' && /does not stream: it answered the streamed request with plain JSON/.test(w.detail)), JSON.stringify(job.warnings));
      assert.equal(generations(easel.standin.requests), 1);
      const sent = easel.standin.requests.find((r) => r.path === '/v1/images/generations')!;
      assert.equal(sent.body?.stream, true);
    } finally {
      await easel.close();
    }
  });

  test('stream: true to easel still ends with the completed image', async () => {
    const easel = await startEasel({ standin: { ignoreStream: true } });
    try {
      const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a red fox', model: 'test-model', partial_images: 1, stream: true } });
      assert.equal(res.status, 200);
      const text = await res.text();
      assert.match(text, /event: image_generation\.completed/);
      assert.doesNotMatch(text, /event: error/);
    } finally {
      await easel.close();
    }
  });

  test('a stream that ends without its image fails the job after one call, not five', async () => {
    const easel = await startEasel({ standin: { streamWithoutCompleted: true } });
    try {
      const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a red fox', model: 'test-model', partial_images: 2, async: true } });
      const job = await waitForJob(easel, ((await res.json()) as any).id);
      assert.equal(job.status, 'failed');
      assert.match(job.error.message, /ended its event stream without the finished image/);
      assert.equal(generations(easel.standin.requests), 1);
    } finally {
      await easel.close();
    }
  });
});
