/**
 * Two tenants on one server: key A makes jobs, images, a batch, a draft and cache entries; key B then
 * reads every route it may call, asks for A's things by id, and submits A's exact requests under
 * every cache mode. Nothing of A's (ids, prompts, image bytes or links, metadata, addresses) may
 * reach B. The read routes come from the server's own API document, so a new route is covered or
 * this test says it is not.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { until } from '../support/until.ts';

const PROMPT = 'a tenant-a-secret lighthouse at dawn';
const SEED = 4242;

let easel: TestEasel;
let keyA: string;
let keyB: string;
/** Everything of A's that must never show up in B's answers. */
const secrets = new Set<string>();
let jobA: any;
let batchA: any;

before(async () => {
  easel = await startEasel({ overrides: { cache: { semantic: { enabled: true, embedder: { type: 'hashed', dimensions: 256 }, threshold: 0.8 } }, batches: { pumpIntervalMs: 50 } } });
  keyA = (await createApiKey(easel.runtime.keys, { name: 'tenant-a' })).secret;
  keyB = (await createApiKey(easel.runtime.keys, { name: 'tenant-b' })).secret;
  const post = (path: string, json: unknown) => easel.api(path, { method: 'POST', key: keyA, json }).then(async (r) => (await r.json()) as any);
  jobA = await post('/v1/images/generations', { prompt: PROMPT, seed: SEED, async: true, metadata: { customer: 'tenant-a-customer' } });
  jobA = await waitForJob(easel, jobA.id, { key: keyA });
  assert.equal(jobA.status, 'succeeded');
  const draft = await post('/v1/images/drafts', { prompt: `${PROMPT} draft`, async: true, n: 2 });
  await waitForJob(easel, draft.id, { key: keyA });
  batchA = await post('/v1/images/batches', { requests: [{ prompt: `${PROMPT} batch`, custom_id: 'tenant-a-custom-id' }] });
  await until('A’s batch to finish', async () => ((await (await easel.api(`/v1/images/batches/${batchA.id}`, { key: keyA })).json()) as any).status === 'completed');
  for (const s of [jobA.id, draft.id, batchA.id, 'tenant-a-secret', 'tenant-a-customer', 'tenant-a-custom-id']) secrets.add(s);
  for (const d of jobA.result.data) secrets.add(new URL(d.url).pathname);
});
after(() => easel.close());

/** `echoed`: what B itself sent (an id in a 404's message is B's own words, not a leak). */
function assertClean(where: string, text: string, echoed: string[] = []): void {
  let t = text;
  for (const e of echoed) t = t.split(e).join('');
  for (const s of secrets) assert.ok(!t.includes(s), `${where} leaks ${s}: ${t.slice(0, 300)}`);
}

describe('key B reads every route', () => {
  test('every GET route of the API document answers B without anything of A’s', async () => {
    const doc = (await (await fetch(`${easel.url}/openapi.json`)).json()) as any;
    const ids: Record<string, string> = { id: jobA.id, job_id: jobA.id, batch_id: batchA.id, image_id: jobA.id };
    const checked: string[] = [];
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
      if (!('get' in ops) || !path.startsWith('/v1/')) continue;
      // Path parameters are A's ids: B must get a 404, not A's things.
      const url = path.replace(/\{([^}]+)\}/g, (_m, name: string) => ids[name] ?? jobA.id);
      const res = await easel.api(url, { key: keyB, headers: { accept: 'application/json' } });
      const text = res.headers.get('content-type')?.includes('event-stream') ? '' : await res.text();
      if (path.includes('{')) assert.ok(res.status === 404 || res.status === 403, `${url}: ${res.status}`);
      assertClean(`GET ${url}`, text, Object.values(ids));
      checked.push(path);
    }
    for (const must of ['/v1/images/jobs', '/v1/images', '/v1/images/batches', '/v1/usage', '/v1/system', '/v1/models', '/v1/keys/current']) {
      assert.ok(checked.includes(must), `${must} is in the API document and was checked`);
    }
  });

  test('B’s lists hold nothing of A’s; A’s own answers do (the test can see a leak)', async () => {
    for (const path of ['/v1/images/jobs?limit=100', '/v1/images?limit=100', `/v1/images?prompt=${encodeURIComponent('tenant-a-secret')}`, '/v1/images/batches']) {
      assertClean(path, await (await easel.api(path, { key: keyB })).text());
      const mine = await (await easel.api(path, { key: keyA })).text();
      assert.ok([...secrets].some((s) => mine.includes(s)), `${path}: A sees its own`);
    }
  });

  test('A’s job events, cancel, retry, refine and batch actions are 404 for B', async () => {
    for (const [method, path, json] of [
      ['GET', `/v1/images/jobs/${jobA.id}/events`, undefined],
      ['POST', `/v1/images/jobs/${jobA.id}/cancel`, undefined],
      ['POST', `/v1/images/jobs/${jobA.id}/retry`, undefined],
      ['POST', '/v1/images/refine', { job_id: jobA.id }],
      ['GET', `/v1/images/batches/${batchA.id}/results`, undefined],
      ['POST', `/v1/images/batches/${batchA.id}/cancel`, undefined],
    ] as const) {
      const res = await easel.api(path, { method, key: keyB, ...(json ? { json } : {}) });
      assert.equal(res.status, 404, `${method} ${path}`);
      assertClean(`${method} ${path}`, await res.text(), [jobA.id, batchA.id]);
    }
  });
});

describe('key B submits A’s exact request under every cache mode', () => {
  for (const mode of ['auto', 'reuse', 'similar', 'off']) {
    test(`Easel-Cache: ${mode}`, async () => {
      // A key of its own per mode, so no earlier request of B's own can be what answers it.
      const b = (await createApiKey(easel.runtime.keys, { name: `tenant-b-${mode}` })).secret;
      const before = easel.standin.requests.length;
      const res = await easel.api('/v1/images/generations', { method: 'POST', key: b, headers: { 'easel-cache': mode }, json: { prompt: PROMPT, seed: SEED } });
      const text = await res.text();
      assert.equal(res.status, 200, text.slice(0, 200));
      // B sent A's prompt itself: that text in B's answers is B's own; A's ids, links and metadata are not.
      assertClean(`cache ${mode}`, text, [PROMPT]);
      assert.ok(easel.standin.requests.length > before, 'B’s request ran on the backend: no cache hit from A');
      const job = (await (await easel.api(`/v1/images/jobs/${res.headers.get('x-easel-job-id')}`, { key: b })).json()) as any;
      assert.equal(job.cache.hit, false);
      assertClean(`B’s job (${mode})`, JSON.stringify(job), [PROMPT]);
      for (const d of JSON.parse(text).data) assert.ok(!secrets.has(new URL(d.url).pathname), 'not A’s stored image');
    });
  }
});
