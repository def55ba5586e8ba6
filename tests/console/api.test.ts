/**
 * The public API pieces the console stands on (no browser needed): the image listing with
 * thumbnails, filters and cursor pagination; admin key management; system status; retrying a failed
 * job; and how the console's files are served (cache headers, page fallback, API 404s kept).
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';

async function generate(easel: TestEasel, body: Record<string, unknown>, key?: string): Promise<any> {
  const res = await easel.api('/v1/images/generations', { method: 'POST', key, headers: { prefer: 'respond-async' }, json: { response_format: 'url', ...body } });
  assert.equal(res.status, 202, await res.clone().text());
  return waitForJob(easel, ((await res.json()) as any).id, { key });
}

const json = async (res: Response): Promise<any> => res.json();

describe('console API', () => {
  let easel: TestEasel;
  before(async () => {
    // The console build is what `/` serves; the build script skips when it is up to date.
    const built = spawnSync(process.execPath, [join(import.meta.dirname, '../../scripts/build-console.ts')], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    easel = await startEasel({ standin: { imageSize: 600 } });
  });
  after(() => easel.close());

  test('GET /v1/images: newest first, WebP thumbnails, filters, cursor pages, own images only', async () => {
    const a = await generate(easel, { prompt: 'A red fox in snow', n: 2, seed: 7 });
    const b = await generate(easel, { prompt: 'lighthouse at dawn', model: 'dall-e-2' });
    assert.equal(a.status, 'succeeded');
    assert.equal(b.status, 'succeeded');

    const all = await json(await easel.api('/v1/images'));
    assert.equal(all.object, 'list');
    assert.deepEqual(all.data.map((i: any) => [i.job_id, i.index]), [[b.id, 0], [a.id, 0], [a.id, 1]]);
    const img = all.data[1];
    assert.match(img.id, /^img_/);
    assert.equal(img.prompt, 'A red fox in snow');
    assert.equal(img.model, 'test-model');
    assert.equal(img.backend, 'standin');
    assert.equal(img.request.seed, 7);
    assert.equal(img.request.n, 2);
    assert.equal(img.width, 600);
    assert.match(img.thumbnail_url, /\/files\/thumbs\/\d{8}\/\d{4}\/job_[0-9A-Z]+-0\.webp\?/);
    const thumb = await fetch(img.thumbnail_url);
    assert.equal(thumb.status, 200);
    assert.equal(thumb.headers.get('content-type'), 'image/webp');
    const meta = await sharp(Buffer.from(await thumb.arrayBuffer())).metadata();
    assert.equal(meta.format, 'webp');
    assert.ok(meta.width! <= 384 && meta.height! <= 384, `${meta.width}x${meta.height}`);
    assert.equal((await fetch(img.url)).status, 200);

    // Filters: prompt text (case-insensitive, LIKE wildcards literal), model, dates.
    const fox = await json(await easel.api('/v1/images?prompt=FOX'));
    assert.deepEqual(fox.data.map((i: any) => i.job_id), [a.id, a.id]);
    assert.equal((await json(await easel.api('/v1/images?prompt=%25'))).data.length, 0);
    assert.equal((await json(await easel.api('/v1/images?prompt=request'))).data.length, 0, 'matches the prompt, not the stored request JSON');
    assert.deepEqual((await json(await easel.api('/v1/images?model=dall-e-2'))).data.map((i: any) => i.job_id), [b.id]);
    const now = Math.floor(Date.now() / 1000);
    assert.equal((await json(await easel.api(`/v1/images?created_after=${now + 60}`))).data.length, 0);
    assert.equal((await json(await easel.api(`/v1/images?created_before=${now + 60}&created_after=${now - 600}`))).data.length, 3);

    // Pages: `after` is the last id of the previous page.
    const p1 = await json(await easel.api('/v1/images?limit=2'));
    assert.equal(p1.has_more, true);
    const p2 = await json(await easel.api(`/v1/images?limit=2&after=${p1.last_id}`));
    assert.equal(p2.has_more, false);
    assert.deepEqual([...p1.data, ...p2.data].map((i: any) => i.id), all.data.map((i: any) => i.id));

    // Validation names the parameter.
    for (const q of ['limit=0', 'after=nope', 'created_after=yesterday']) {
      const res = await easel.api(`/v1/images?${q}`);
      assert.equal(res.status, 400, q);
      assert.equal((await json(res)).error.param, q.split('=')[0]);
    }

    // Another key sees none of them.
    const other = await json(await easel.api('/v1/keys', { method: 'POST', json: { name: 'someone-else' } }));
    assert.equal((await json(await easel.api('/v1/images', { key: other.key }))).data.length, 0);
    assert.equal((await json(await easel.api(`/v1/images?after=${img.id}`, { key: other.key }))).data.length, 0);
  });

  test('keys: admin creates, lists and revokes; others get 403; a key cannot revoke itself', async () => {
    const me = await json(await easel.api('/v1/keys/current'));
    assert.equal(me.admin, true);
    assert.equal(me.name, 'admin');
    assert.ok(!('hash' in me) && !('key' in me));

    const created = await easel.api('/v1/keys', { method: 'POST', json: { name: 'ci-bot' } });
    assert.equal(created.status, 201);
    const bot = await json(created);
    assert.match(bot.key, /^easel_sk_/);
    assert.equal(bot.admin, false);
    assert.ok(bot.key.startsWith(bot.prefix));

    const list = await json(await easel.api('/v1/keys'));
    const listed = list.data.find((k: any) => k.id === bot.id);
    assert.equal(listed.name, 'ci-bot');
    assert.ok(!('key' in listed), 'the secret is shown only once');

    // A plain key: who am I works, managing keys does not.
    assert.equal((await json(await easel.api('/v1/keys/current', { key: bot.key }))).name, 'ci-bot');
    for (const [path, method, body] of [['/v1/keys', 'GET'], ['/v1/keys', 'POST', { name: 'x' }], [`/v1/keys/${me.id}/revoke`, 'POST']] as const) {
      const res = await easel.api(path, { method, key: bot.key, json: body });
      assert.equal(res.status, 403, `${method} ${path}`);
      assert.equal((await json(res)).error.code, 'admin_required');
    }

    // Bad input is a 400 naming the field.
    for (const body of [{}, { name: '' }, { name: 'x'.repeat(65) }, { name: 'ok', admin: 'yes' }, { name: 'ok', color: 'red' }]) {
      const res = await easel.api('/v1/keys', { method: 'POST', json: body });
      assert.equal(res.status, 400, JSON.stringify(body));
    }

    const self = await easel.api(`/v1/keys/${me.id}/revoke`, { method: 'POST' });
    assert.equal(self.status, 409);
    assert.equal((await json(self)).error.code, 'cannot_revoke_own_key');
    assert.equal((await easel.api('/v1/keys/key_00000000000000000000000000/revoke', { method: 'POST' })).status, 404);

    const revoked = await easel.api(`/v1/keys/${bot.id}/revoke`, { method: 'POST' });
    assert.equal(revoked.status, 200);
    assert.equal(typeof (await json(revoked)).revoked_at, 'number');
    // Effective at once in this process.
    assert.equal((await easel.api('/v1/keys/current', { key: bot.key })).status, 401);
    assert.equal((await easel.api(`/v1/keys/${bot.id}/revoke`, { method: 'POST' })).status, 409);
  });

  test('GET /v1/system: backends with health, capabilities, models and queue depth', async () => {
    const sys = await json(await easel.api('/v1/system'));
    assert.equal(sys.object, 'system');
    assert.equal(sys.default_model, 'test-model');
    assert.equal(typeof sys.jobs.succeeded, 'number');
    const b = sys.backends.find((x: any) => x.name === 'standin');
    assert.equal(b.type, 'openai');
    assert.equal(b.ok, true);
    assert.deepEqual(b.models, ['test-model', 'dall-e-3', 'dall-e-2']);
    assert.equal(b.capabilities.variation, true);
    assert.deepEqual(b.queue, { queued: 0, running: 0, waiting_for_host: null });
    assert.deepEqual(b.hosts, []);
  });

  test('retry: a failed job is submitted again as a new job; others are refused', async () => {
    easel.standin.failNext(1, 400, { error: { message: 'no such thing', type: 'invalid_request_error', code: null, param: null } });
    const failed = await generate(easel, { prompt: 'retry me', seed: 3, n: 1 });
    assert.equal(failed.status, 'failed');
    const res = await easel.api(`/v1/images/jobs/${failed.id}/retry`, { method: 'POST' });
    assert.equal(res.status, 202);
    const job = await json(res);
    assert.notEqual(job.id, failed.id);
    assert.equal(job.request.prompt, 'retry me');
    assert.equal(job.request.seed, 3);
    assert.equal((await waitForJob(easel, job.id)).status, 'succeeded');

    const again = await easel.api(`/v1/images/jobs/${job.id}/retry`, { method: 'POST' });
    assert.equal(again.status, 409);
    assert.equal((await json(again)).error.code, 'job_not_retryable');
    const other = await json(await easel.api('/v1/keys', { method: 'POST', json: { name: 'stranger' } }));
    assert.equal((await easel.api(`/v1/images/jobs/${failed.id}/retry`, { method: 'POST', key: other.key })).status, 404);
  });

  test('retry of an edit copies its uploads to the new job', async () => {
    const png = easel.standin.png;
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(png)], { type: 'image/png' }), 'in.png');
    form.append('prompt', 'make it blue');
    form.append('model', 'test-model');
    easel.standin.failNext(1, 400);
    const res = await easel.api('/v1/images/edits', { method: 'POST', headers: { prefer: 'respond-async' }, body: form });
    assert.equal(res.status, 202);
    const failed = await waitForJob(easel, ((await json(res)) as any).id);
    assert.equal(failed.status, 'failed');
    const retried = await json(await easel.api(`/v1/images/jobs/${failed.id}/retry`, { method: 'POST' }));
    const done = await waitForJob(easel, retried.id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.kind, 'edit');
    const stored = await easel.runtime.store.getJob(retried.id);
    assert.ok(stored!.request.inputImages!.every((k) => k.startsWith(`inputs/${retried.id}/`)), JSON.stringify(stored!.request.inputImages));
  });

  test('the console is served at / with page fallback and cache headers; API paths keep JSON 404s', async () => {
    const index = await fetch(`${easel.url}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get('content-type')!, /^text\/html/);
    assert.equal(index.headers.get('cache-control'), 'no-cache');
    assert.match(index.headers.get('content-security-policy')!, /script-src 'self'/);
    const html = await index.text();
    const asset = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    assert.ok(asset, html);
    const js = await fetch(`${easel.url}${asset}`);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type')!, /javascript/);
    assert.equal(js.headers.get('cache-control'), 'public, max-age=31536000, immutable');

    // A console page reloaded in the browser gets the app; anything API-like does not.
    const page = await fetch(`${easel.url}/gallery`, { headers: { accept: 'text/html,*/*' } });
    assert.equal(page.status, 200);
    assert.equal(await page.text(), html);
    assert.equal((await fetch(`${easel.url}/gallery`, { headers: { accept: 'application/json' } })).status, 404);
    for (const path of ['/v1/nope', '/assets/missing.js', '/files/nope', '/nope.js', '/assets/../package.json', '/assets/%2e%2e/%2e%2e/package.json']) {
      const res = await fetch(`${easel.url}${path}`, { headers: { accept: 'text/html' } });
      assert.ok(res.status === 404 || res.status === 403, `${path}: ${res.status}`);
      assert.match(res.headers.get('content-type') ?? '', /json/, path);
    }
    assert.equal((await fetch(`${easel.url}/docs`)).status, 200, 'other routes are untouched');
    assert.equal((await fetch(`${easel.url}/health`)).status, 200);
  });
});
