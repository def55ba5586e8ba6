import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import sharp from 'sharp';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';

let easel: TestEasel;
let client: OpenAI;

before(async () => {
  easel = await startEasel();
  client = new OpenAI({ apiKey: easel.adminKey, baseURL: `${easel.url}/v1`, maxRetries: 0 });
});
after(() => easel.close());

describe('the official openai SDK, unchanged', () => {
  test('images.generate with b64_json returns decodable PNGs', async () => {
    const res = await client.images.generate({ prompt: 'a red fox in snow', n: 2, response_format: 'b64_json', model: 'test-model' });
    assert.equal(typeof res.created, 'number');
    assert.equal(res.data?.length, 2);
    for (const item of res.data!) {
      const meta = await sharp(Buffer.from(item.b64_json!, 'base64')).metadata();
      assert.equal(meta.format, 'png');
    }
  });

  test('images.generate with url returns absolute, fetchable, immutable-cached links', async () => {
    const res = await client.images.generate({ prompt: 'a lighthouse', model: 'test-model', response_format: 'url' });
    const url = res.data![0]!.url!;
    assert.match(url, new RegExp(`^${easel.url}/files/`));
    const img = await fetch(url);
    assert.equal(img.status, 200);
    assert.equal(img.headers.get('content-type'), 'image/png');
    assert.match(img.headers.get('cache-control') ?? '', /^public, max-age=\d+, immutable$/);
    assert.equal((await sharp(Buffer.from(await img.arrayBuffer())).metadata()).format, 'png');
    // The link is signed: tampering with it is refused.
    const forged = url.replace(/signature=[^&]+/, 'signature=AAAA');
    assert.equal((await fetch(forged)).status, 403);
  });

  test('revised_prompt comes through where the backend gives one', async () => {
    const res = await client.images.generate({ prompt: 'a castle', model: 'dall-e-3', response_format: 'url' });
    assert.equal(typeof res.data![0]!.revised_prompt, 'string');
  });

  test('output_format converts the stored image', async () => {
    const res = await client.images.generate({ prompt: 'a cat', model: 'test-model', output_format: 'webp' } as any);
    const b64 = res.data![0]!.b64_json ?? (await (await fetch(res.data![0]!.url!)).arrayBuffer());
    const buf = typeof b64 === 'string' ? Buffer.from(b64, 'base64') : Buffer.from(b64);
    assert.equal((await sharp(buf).metadata()).format, 'webp');
  });

  test('easel extensions reach the backend', async () => {
    const before = easel.standin.requests.length;
    await client.images.generate({ prompt: 'seeded', model: 'test-model', seed: 42, negative_prompt: 'blurry', steps: 12, guidance_scale: 6.5 } as any);
    const sent = easel.standin.requests.slice(before).find((r) => r.path === '/v1/images/generations')!;
    assert.equal(sent.body?.seed, 42);
    assert.equal(sent.body?.negative_prompt, 'blurry');
    assert.equal(sent.body?.steps, 12);
    assert.equal(sent.body?.guidance_scale, 6.5);
  });

  test('models.list shows what easel serves', async () => {
    const models = await client.models.list();
    const ids = models.data.map((m) => m.id).sort();
    assert.deepEqual(ids, ['dall-e-2', 'dall-e-3', 'test-model']);
  });
});

describe('async jobs', () => {
  test('Prefer: respond-async answers 202 with a job and a Location', async () => {
    const res = await easel.api('/v1/images/generations', { method: 'POST', headers: { prefer: 'respond-async' }, json: { prompt: 'async one', model: 'test-model' } });
    assert.equal(res.status, 202);
    const job = (await res.json()) as any;
    assert.match(job.id, /^job_/);
    assert.equal(job.object, 'image.job');
    assert.ok(['queued', 'running', 'succeeded'].includes(job.status));
    assert.equal(res.headers.get('location'), `${easel.url}/v1/images/jobs/${job.id}`);
    const done = await waitForJob(easel, job.id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.progress, 1);
    assert.equal(done.backend, 'standin');
    assert.ok(done.created_at <= done.started_at && done.started_at <= done.finished_at);
    assert.equal(done.result.data.length, 1);
    assert.match(done.result.data[0].url, /\/files\//);
  });

  test('"async": true in the body does the same', async () => {
    const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'async two', async: true, response_format: 'b64_json' } });
    assert.equal(res.status, 202);
    const done = await waitForJob(easel, ((await res.json()) as any).id);
    assert.equal(done.status, 'succeeded');
    assert.ok(done.result.data[0].b64_json.length > 100);
  });

  test('a failed job reports its error', async () => {
    easel.standin.failNext(1, 400, { error: { message: 'Your request was rejected by the safety system.', type: 'image_generation_user_error', param: null, code: 'moderation_blocked' } });
    const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'blocked', async: true } });
    const done = await waitForJob(easel, ((await res.json()) as any).id);
    assert.equal(done.status, 'failed');
    assert.equal(done.error.code, 'content_policy_violation');
    assert.equal(done.result, null);
  });

  test('the same failure on a sync request is an OpenAI-shaped 400', async () => {
    easel.standin.failNext(1, 400, { error: { message: 'Your request was rejected by the safety system.', type: 'image_generation_user_error', param: null, code: 'moderation_blocked' } });
    await assert.rejects(client.images.generate({ prompt: 'blocked again' }), (err: any) => err.status === 400 && err.code === 'content_policy_violation');
  });
});

describe('listing jobs', () => {
  test('cursor pagination, newest first, and a status filter', async () => {
    const key = await newKey('lister');
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await easel.api('/v1/images/generations', { method: 'POST', key, json: { prompt: `list ${i}`, async: true } });
      ids.push(((await res.json()) as any).id);
    }
    for (const id of ids) await waitForJob(easel, id, { key });
    const page1 = (await (await easel.api('/v1/images/jobs?limit=2', { key })).json()) as any;
    assert.deepEqual(page1.data.map((j: any) => j.id), [ids[4], ids[3]]);
    assert.equal(page1.has_more, true);
    const page2 = (await (await easel.api(`/v1/images/jobs?limit=2&after=${page1.last_id}`, { key })).json()) as any;
    assert.deepEqual(page2.data.map((j: any) => j.id), [ids[2], ids[1]]);
    const page3 = (await (await easel.api(`/v1/images/jobs?limit=2&after=${page2.last_id}`, { key })).json()) as any;
    assert.deepEqual(page3.data.map((j: any) => j.id), [ids[0]]);
    assert.equal(page3.has_more, false);
    const failed = (await (await easel.api('/v1/images/jobs?status=failed', { key })).json()) as any;
    assert.equal(failed.data.length, 0);
    const ok = (await (await easel.api('/v1/images/jobs?status=succeeded&limit=100', { key })).json()) as any;
    assert.equal(ok.data.length, 5);
  });
});

describe('tenants', () => {
  test("a key never sees another key's jobs", async () => {
    const alice = await newKey('alice');
    const bob = await newKey('bob');
    const res = await easel.api('/v1/images/generations', { method: 'POST', key: alice, json: { prompt: 'private', async: true } });
    const id = ((await res.json()) as any).id;
    await waitForJob(easel, id, { key: alice });
    const peek = await easel.api(`/v1/images/jobs/${id}`, { key: bob });
    assert.equal(peek.status, 404);
    assert.equal(((await peek.json()) as any).error.code, 'job_not_found');
    const cancel = await easel.api(`/v1/images/jobs/${id}/cancel`, { method: 'POST', key: bob });
    assert.equal(cancel.status, 404);
    const list = (await (await easel.api('/v1/images/jobs?limit=100', { key: bob })).json()) as any;
    assert.ok(list.data.every((j: any) => j.id !== id));
  });

  test('a revoked key is refused', async () => {
    const { createApiKey } = await import('../../src/auth/api-keys.ts');
    const { secret, key } = await createApiKey(easel.runtime.keys, { name: 'short-lived' });
    assert.equal((await easel.api('/v1/models', { key: secret })).status, 200);
    await easel.runtime.keys.revokeKey(key.id);
    easel.runtime.auth.invalidate();
    const res = await easel.api('/v1/models', { key: secret });
    assert.equal(res.status, 401);
  });
});

async function newKey(name: string): Promise<string> {
  const { createApiKey } = await import('../../src/auth/api-keys.ts');
  return (await createApiKey(easel.runtime.keys, { name })).secret;
}
