/** Idempotency-Key replays and refusals; prompt moderation before any work is queued. */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { createApiKey } from '../../src/auth/api-keys.ts';

let easel: TestEasel;
before(async () => {
  easel = await startEasel({ overrides: { moderation: { blocklist: ['gore'], patterns: ['\\bnsfw\\b'] } } });
});
after(() => easel.close());

const submit = (json: unknown, headers: Record<string, string> = {}, key?: string) =>
  easel.api('/v1/images/generations', { method: 'POST', json, headers, key });

describe('Idempotency-Key', () => {
  test('a retried async submission returns the same job, and only one job runs', async () => {
    const before = easel.standin.requests.length;
    const body = { prompt: 'idempotent fox', async: true };
    const a = await submit(body, { 'idempotency-key': 'order-1234' });
    const b = await submit(body, { 'idempotency-key': 'order-1234' });
    assert.equal(a.status, 202);
    assert.equal(b.status, 202);
    assert.equal(b.headers.get('idempotent-replayed'), 'true');
    const [ja, jb] = [(await a.json()) as any, (await b.json()) as any];
    assert.equal(ja.id, jb.id);
    await waitForJob(easel, ja.id);
    const c = await submit(body, { 'idempotency-key': 'order-1234' });
    assert.equal(((await c.json()) as any).status, 'succeeded');
    assert.equal(easel.standin.requests.slice(before).filter((r) => r.body?.prompt === 'idempotent fox').length, 1);
  });

  test('a sync retry gets the same images', async () => {
    const body = { prompt: 'sync idempotent', response_format: 'url' };
    const a = (await (await submit(body, { 'idempotency-key': 'sync-1' })).json()) as any;
    const b = await submit(body, { 'idempotency-key': 'sync-1' });
    assert.equal(b.status, 200);
    const jb = (await b.json()) as any;
    assert.equal(new URL(jb.data[0].url).pathname, new URL(a.data[0].url).pathname);
  });

  test('concurrent submissions with one key create one job', async () => {
    const body = { prompt: 'racing', async: true };
    const answers = await Promise.all(Array.from({ length: 8 }, () => submit(body, { 'idempotency-key': 'race-1' })));
    const ids = new Set(await Promise.all(answers.map(async (r) => ((await r.json()) as any).id)));
    assert.equal(ids.size, 1);
  });

  test('the same key with a different body is refused, naming the job', async () => {
    const first = (await (await submit({ prompt: 'one thing', async: true }, { 'idempotency-key': 'k-2' })).json()) as any;
    const res = await submit({ prompt: 'another thing', async: true }, { 'idempotency-key': 'k-2' });
    assert.equal(res.status, 422);
    const body = (await res.json()) as any;
    assert.equal(body.error.code, 'idempotency_key_reused');
    assert.equal(body.error.param, 'Idempotency-Key');
    assert.match(body.error.message, new RegExp(first.id));
  });

  test('keys are scoped to the API key', async () => {
    const other = (await createApiKey(easel.runtime.keys, { name: 'other' })).secret;
    const body = { prompt: 'scoped', async: true };
    const a = (await (await submit(body, { 'idempotency-key': 'shared-value' })).json()) as any;
    const b = (await (await submit(body, { 'idempotency-key': 'shared-value' }, other)).json()) as any;
    assert.notEqual(a.id, b.id);
  });

  test('a malformed key is a 400 naming the header', async () => {
    const res = await submit({ prompt: 'x' }, { 'idempotency-key': 'x'.repeat(300) });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as any).error.param, 'Idempotency-Key');
  });
});

describe('moderation', () => {
  for (const [name, body, param] of [
    ['a blocklisted word in the prompt', { prompt: 'a scene of GORE and mayhem' }, 'prompt'],
    ['a pattern in the prompt', { prompt: 'something NSFW please' }, 'prompt'],
    ['a blocklisted word in the negative prompt', { prompt: 'a meadow', negative_prompt: 'gore' }, 'negative_prompt'],
  ] as const) {
    test(`${name} is refused before anything is queued`, async () => {
      const before = easel.standin.requests.length;
      const total = async () => Object.values(await easel.runtime.store.countByStatus()).reduce((a, b) => a + b, 0);
      const jobsBefore = await total();
      const res = await submit({ ...body, async: true });
      assert.equal(res.status, 400);
      const err = ((await res.json()) as any).error;
      assert.equal(err.code, 'content_policy_violation');
      assert.equal(err.param, param);
      assert.equal(await total(), jobsBefore, 'no job was created');
      assert.ok(!easel.standin.requests.slice(before).some((r) => r.body?.prompt === body.prompt), 'the backend never saw it');
    });
  }

  test('ordinary prompts pass', async () => {
    assert.equal((await submit({ prompt: 'a glass of water', async: true })).status, 202);
  });
});
