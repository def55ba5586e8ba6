/**
 * The reproductions behind "one way in": what each entry point let through before admission was one
 * pipeline, as the report that found them sent it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { until } from '../support/until.ts';

let easel: TestEasel;
let poor: string;

before(async () => {
  easel = await startEasel({ overrides: { budgets: { keys: { poor: { dailyUsd: 0.02 } } }, moderation: { blocklist: ['forbiddenword'] }, batches: { pumpIntervalMs: 50 } } });
  poor = (await createApiKey(easel.runtime.keys, { name: 'poor' })).secret;
});
after(() => easel.close());

test('provider_options cannot change the model, n, size or quality that were priced (400, nothing sent, nothing charged)', async () => {
  const before = easel.standin.requests.length;
  const res = await easel.api('/v1/images/generations', {
    method: 'POST',
    key: poor,
    json: { prompt: 'bypass', model: 'dall-e-2', size: '256x256', n: 1, provider_options: { n: 10, model: 'gpt-image-1', size: '1536x1024', quality: 'high' } },
  });
  const body = (await res.json()) as any;
  assert.equal(res.status, 400, JSON.stringify(body));
  assert.match(body.error.param, /^provider_options\.(n|model|size|quality)$/);
  assert.match(body.error.message, /would change/);
  assert.equal(easel.standin.requests.length, before, 'the provider received nothing');
  const usage = (await (await easel.api('/v1/usage', { key: poor })).json()) as any;
  assert.equal(usage.budgets[0].spent_usd, 0);
  assert.equal(usage.budgets[0].reserved_usd, 0);
});

test('provider_options.prompt cannot carry a prompt past moderation', async () => {
  const before = easel.standin.requests.length;
  const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a calm lake', provider_options: { prompt: 'a forbiddenword scene' } } });
  const body = (await res.json()) as any;
  assert.equal(res.status, 400);
  assert.equal(body.error.param, 'provider_options.prompt');
  assert.equal(easel.standin.requests.length, before);
});

test('an unknown provider option is refused, naming it', async () => {
  const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a calm lake', provider_options: { frobnicate: true } } });
  const body = (await res.json()) as any;
  assert.equal(res.status, 400);
  assert.equal(body.error.param, 'provider_options.frobnicate');
  assert.equal(body.error.code, 'unknown_parameter');
});

test('a batch request whose enqueue fails ends failed (queue_unavailable), and its item says so', async () => {
  const queue = easel.runtime.queue;
  const original = queue.enqueue.bind(queue);
  let failures = 0;
  queue.enqueue = async (m) => {
    if (failures === 0) {
      failures++;
      throw new Error('queue down (simulated)');
    }
    return original(m);
  };
  try {
    const res = await easel.api('/v1/images/batches', { method: 'POST', json: { requests: [{ prompt: 'a batch request whose enqueue fails' }] } });
    assert.equal(res.status, 201);
    const batch = (await res.json()) as any;
    let item: any;
    await until('the request to be admitted', async () => {
      item = ((await (await easel.api(`/v1/images/batches/${batch.id}/results`)).json()) as any).data[0];
      return item.status === 'failed';
    });
    assert.equal(item.error.code, 'queue_unavailable');
    const job = (await (await easel.api(`/v1/images/jobs/${item.job_id}`)).json()) as any;
    assert.equal(job.status, 'failed', 'the job that was created is not left queued with nobody to run it');
  } finally {
    queue.enqueue = original;
  }
});

test('a dall-e-3 edit is refused at admission, not failed later on a worker', async () => {
  const form = new FormData();
  form.append('image', new File([new Uint8Array(easel.standin.png)], 'i.png', { type: 'image/png' }));
  form.append('prompt', 'edit me');
  form.append('model', 'dall-e-3');
  const before = easel.standin.requests.length;
  const res = await easel.api('/v1/images/edits', { method: 'POST', body: form });
  const body = (await res.json()) as any;
  assert.equal(res.status, 400);
  assert.equal(body.error.code, 'unsupported_capability');
  assert.match(body.error.message, /'dall-e-3' cannot do edits/);
  assert.equal(easel.standin.requests.length, before);
});

test('GET /v1/models shows each model’s spec, the one admission checks against', async () => {
  const list = (await (await easel.api('/v1/models')).json()) as any;
  const dalle3 = list.data.find((m: any) => m.id === 'dall-e-3');
  assert.deepEqual(dalle3.spec.capabilities, { generate: true, edit: false, mask: false, variation: false, max_input_images: 0 });
  assert.deepEqual(dalle3.spec.sizes, { kind: 'list', sizes: ['1024x1024', '1792x1024', '1024x1792'], auto: true });
  assert.deepEqual(dalle3.spec.qualities, ['standard', 'hd']);
  assert.equal(dalle3.spec.pricing, 'price-table');
  assert.ok(dalle3.spec.provider_options.properties.moderation, 'its provider options as JSON Schema');
  const one = (await (await easel.api('/v1/models/test-model')).json()) as any;
  assert.equal(one.spec.capabilities.edit, true);
  assert.equal(one.spec.max_prompt_chars, 32000);
});
