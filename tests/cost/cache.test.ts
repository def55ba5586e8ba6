/**
 * The image cache: exact hits for seeded requests and for requests that allow reuse, misses for
 * anything that changes the image, opt-outs, semantic hits with a deterministic embedder (the hashed
 * one, and an OpenAI-compatible embeddings endpoint), and the savings they report.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createHash } from 'node:crypto';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { HashedEmbedder, OpenAIEmbedder, cosine } from '../../src/cache/embedders.ts';
import { cacheKeys, decodeEmbedding, encodeEmbedding, normalizePrompt } from '../../src/cache/image-cache.ts';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { imageKey } from '../../src/images/keys.ts';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('cache keys and embedders', () => {
  test('the exact key ignores case and spacing of the prompt but nothing that changes the image', () => {
    const base = { prompt: 'A red  fox\tin snow ', n: 1, responseFormat: 'url' as const, outputFormat: 'png' as const, seed: 7 };
    const k = cacheKeys('m', base);
    assert.equal(k.prompt, 'a red fox in snow');
    assert.equal(cacheKeys('m', { ...base, prompt: 'a red fox in snow' }).cacheKey, k.cacheKey);
    assert.equal(cacheKeys('m', { ...base, responseFormat: 'b64_json' }).cacheKey, k.cacheKey, 'how it is delivered does not change the image');
    for (const change of [{ seed: 8 }, { n: 2 }, { size: { width: 512, height: 512 } }, { steps: 20 }, { negativePrompt: 'blur' }, { quality: 'hd' }, { outputFormat: 'webp' as const }]) {
      assert.notEqual(cacheKeys('m', { ...base, ...change }).cacheKey, k.cacheKey, JSON.stringify(change));
    }
    assert.notEqual(cacheKeys('other', base).cacheKey, k.cacheKey);
    assert.equal(cacheKeys('m', { ...base, prompt: 'something else' }).paramsKey, k.paramsKey, 'settings key leaves the prompt out');
  });

  test('the hashed embedder is deterministic and scores rewordings above unrelated prompts', async () => {
    const e = new HashedEmbedder(256);
    const a = await e.embed(normalizePrompt('A red fox in the snow, photo'));
    const b = await e.embed(normalizePrompt('red fox in snow photo'));
    const c = await e.embed(normalizePrompt('a blue whale under the sea'));
    assert.deepEqual(await e.embed(normalizePrompt('A red fox in the snow, photo')), a);
    assert.ok(cosine(a, b) > 0.9, `similar: ${cosine(a, b)}`);
    assert.ok(cosine(a, c) < 0.3, `unrelated: ${cosine(a, c)}`);
    const text = encodeEmbedding(e.id, a);
    assert.deepEqual(decodeEmbedding(text, e.id), a);
    assert.equal(decodeEmbedding(text, 'another-embedder'), undefined);
  });
});

describe('the cache through the API', () => {
  let easel: TestEasel;
  let optOut: string;
  let other: string;
  let stranger: string;
  const calls = () => easel.standin.requests.filter((r) => r.path === '/v1/images/generations').length;

  before(async () => {
    easel = await startEasel({
      overrides: {
        cache: {
          optOutKeys: ['private-key'],
          // The admin key and `other-tenant` trust each other; `stranger` shares with nobody.
          shareGroups: { studio: ['admin', 'other-tenant'] },
          semantic: { enabled: true, embedder: { type: 'hashed', dimensions: 256 }, threshold: 0.85 },
        },
      },
    });
    optOut = (await createApiKey(easel.runtime.keys, { name: 'private-key' })).secret;
    other = (await createApiKey(easel.runtime.keys, { name: 'other-tenant' })).secret;
    stranger = (await createApiKey(easel.runtime.keys, { name: 'stranger' })).secret;
  });
  after(() => easel.close());

  const gen = async (body: Record<string, unknown>, opts: { key?: string; cache?: string } = {}) => {
    const res = await easel.api('/v1/images/generations', {
      method: 'POST',
      key: opts.key,
      headers: opts.cache ? { 'easel-cache': opts.cache } : {},
      json: { async: true, model: 'dall-e-2', size: '512x512', ...body },
    });
    const json = (await res.json()) as any;
    assert.equal(res.status, 202, JSON.stringify(json));
    return waitForJob(easel, json.id, { key: opts.key });
  };
  const bytes = async (job: any) => Buffer.from(await (await fetch(job.result.data[0].url)).arrayBuffer());

  test('a seeded request repeats from the cache at no cost; the hit is marked on the job', async () => {
    const first = await gen({ prompt: 'A lighthouse at dawn', seed: 42 });
    assert.equal(first.cache.hit, false);
    const before = calls();
    const again = await gen({ prompt: '  a LIGHTHOUSE   at dawn', seed: 42 });
    assert.equal(calls(), before, 'the backend was not called');
    assert.equal(again.status, 'succeeded');
    assert.equal(again.backend, 'cache');
    assert.deepEqual(again.cache, { hit: true, kind: 'exact', source_job_id: first.id });
    assert.equal(again.cost.usd, 0);
    assert.equal(again.cost.saved_usd, 0.018);
    assert.equal(sha(await bytes(again)), sha(await bytes(first)));
    assert.notEqual(again.result.data[0].url, first.result.data[0].url, 'the hit has its own copy of the image');
    // Anything that changes the image misses.
    await gen({ prompt: 'A lighthouse at dawn', seed: 43 });
    await gen({ prompt: 'A lighthouse at dawn', seed: 42, size: '256x256' });
    assert.equal(calls(), before + 2);
  });

  test('an unseeded request runs again unless it allows reuse', async () => {
    const first = await gen({ prompt: 'a bowl of ramen' });
    const before = calls();
    const plain = await gen({ prompt: 'a bowl of ramen' });
    assert.equal(plain.cache.hit, false);
    assert.equal(calls(), before + 1);
    const reused = await gen({ prompt: 'a bowl of ramen' }, { cache: 'reuse' });
    assert.equal(calls(), before + 1);
    assert.equal(reused.cache.kind, 'exact');
    assert.ok([first.id, plain.id].includes(reused.cache.source_job_id));
  });

  test('a source whose image is gone from storage is a miss (and leaves the cache)', async () => {
    const first = await gen({ prompt: 'a vanishing act', seed: 77 });
    await easel.runtime.storage.delete(imageKey(first.id, 0, 'png'));
    const before = calls();
    const again = await gen({ prompt: 'a vanishing act', seed: 77 });
    assert.equal(again.status, 'succeeded');
    assert.equal(again.cache.hit, false);
    assert.equal(calls(), before + 1, 'it ran on the backend');
    const third = await gen({ prompt: 'a vanishing act', seed: 77 });
    assert.equal(third.cache.source_job_id, again.id, 'the new image took its place');
  });

  test('a sync request is answered from the cache at once', async () => {
    await gen({ prompt: 'a paper crane', seed: 5 });
    const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a paper crane', seed: 5, model: 'dall-e-2', size: '512x512', response_format: 'b64_json' } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as any;
    assert.ok(body.data[0].b64_json.length > 50);
    const job = (await (await easel.api(`/v1/images/jobs/${res.headers.get('x-easel-job-id')}`)).json()) as any;
    assert.equal(job.cache.hit, true);
  });

  test('Easel-Cache: off neither reads nor fills the cache; a bad value is a 400', async () => {
    await gen({ prompt: 'a kite', seed: 9 }, { cache: 'off' });
    const before = calls();
    const again = await gen({ prompt: 'a kite', seed: 9 });
    assert.equal(again.cache.hit, false, 'the first was not stored');
    assert.equal(calls(), before + 1);
    const bad = await easel.api('/v1/images/generations', { method: 'POST', headers: { 'easel-cache': 'maybe' }, json: { prompt: 'x' } });
    assert.equal(bad.status, 400);
    assert.equal(((await bad.json()) as any).error.param, 'Easel-Cache');
  });

  test('an opted-out key never uses or fills the cache; other keys share it', async () => {
    await gen({ prompt: 'a secret garden', seed: 1 }, { key: optOut });
    const before = calls();
    const b = await gen({ prompt: 'a secret garden', seed: 1 }, { key: optOut });
    assert.equal(b.cache.hit, false);
    const c = await gen({ prompt: 'a secret garden', seed: 1 }, { key: other });
    assert.equal(c.cache.hit, false, 'nothing of the opted-out key was stored');
    assert.equal(calls(), before + 2);
    const d = await gen({ prompt: 'a secret garden', seed: 1 });
    assert.equal(d.cache.hit, true, 'the admin key gets the image of a key in its share group');
    assert.equal(d.cache.source_job_id, null, 'but never the other key’s job id');
    assert.ok(!JSON.stringify(d).includes(c.id), 'nowhere in the job');
    const e = await gen({ prompt: 'a secret garden', seed: 1 }, { key: stranger });
    assert.equal(e.cache.hit, false, 'a key in no group only ever gets its own images');
    const f = await gen({ prompt: 'a secret garden', seed: 1 }, { key: stranger });
    assert.equal(f.cache.hit, true, 'its own, yes');
    assert.equal(f.cache.source_job_id, e.id);
  });

  test('semantic hits for near-identical prompts when the request allows them', async () => {
    const first = await gen({ prompt: 'A red fox in the snow, photo' });
    const before = calls();
    const similar = await gen({ prompt: 'a red fox in deep snow, photo' }, { cache: 'similar' });
    assert.equal(calls(), before, 'answered from the cache');
    assert.equal(similar.cache.kind, 'semantic');
    assert.equal(similar.cache.source_job_id, first.id);
    assert.ok(similar.cache.similarity >= 0.85 && similar.cache.similarity < 1);
    const unrelated = await gen({ prompt: 'a blue whale under the sea' }, { cache: 'similar' });
    assert.equal(unrelated.cache.hit, false);
    const notAllowed = await gen({ prompt: 'red fox in snow photo' });
    assert.equal(notAllowed.cache.hit, false, 'without Easel-Cache: similar only exact hits count');
    const optedOut = await gen({ prompt: 'red fox in snow photo' }, { cache: 'similar', key: optOut });
    assert.equal(optedOut.cache.hit, false);
    // Other settings are another image: no hit across sizes.
    const otherSize = await gen({ prompt: 'red fox in snow photo', size: '256x256' }, { cache: 'similar' });
    assert.equal(otherSize.cache.hit, false);
  });

  test('hits, hit rate and savings are measured', async () => {
    const usage = (await (await easel.api('/v1/usage')).json()) as any;
    assert.ok(usage.cache.exact_hits >= 4);
    assert.ok(usage.cache.semantic_hits >= 1);
    assert.ok(usage.cache.saved_usd > 0);
    assert.ok(usage.cache.hit_rate > 0 && usage.cache.hit_rate < 1);
    const cacheRow = usage.by_backend.find((b: any) => b.backend === 'cache');
    assert.equal(cacheRow.cost_usd, 0);
    const metrics = await (await fetch(`${easel.url}/metrics`)).text();
    assert.match(metrics, /easel_cache_lookups_total\{kind="exact",result="hit"\} [4-9]/);
    assert.match(metrics, /easel_cache_lookups_total\{kind="semantic",result="hit"\} [1-9]/);
    assert.match(metrics, /easel_cache_saved_usd_total\{kind="exact"\} 0\.\d+/);
    assert.match(metrics, /easel_cache_hit_ratio 0\.\d+/);
  });
});

describe('an OpenAI-compatible embeddings endpoint', () => {
  test('is called with the model and the prompt, and its vectors are used', async () => {
    const hashed = new HashedEmbedder(64);
    const seen: any[] = [];
    const server = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', async () => {
        const parsed = JSON.parse(body);
        seen.push({ auth: req.headers.authorization, path: req.url, ...parsed });
        const v = await hashed.embed(parsed.input);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'list', data: [{ object: 'embedding', index: 0, embedding: [...v] }], model: parsed.model }));
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
      const e = new OpenAIEmbedder({ type: 'openai', baseUrl: url, apiKey: 'sk-embed', apiKeyEnv: 'X', model: 'text-embedding-3-small', timeoutSeconds: 5 });
      const a = await e.embed('a red fox');
      assert.equal(a.length, 64);
      assert.deepEqual([...a].map((x) => Math.round(x * 1e5)), [...(await hashed.embed('a red fox'))].map((x) => Math.round(x * 1e5)));
      assert.deepEqual(seen[0], { auth: 'Bearer sk-embed', path: '/v1/embeddings', model: 'text-embedding-3-small', input: 'a red fox' });
    } finally {
      server.close();
    }
  });
});
