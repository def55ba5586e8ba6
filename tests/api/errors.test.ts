/** Every bad input gets OpenAI's error shape, the right status and the offending `param`; never a 5xx. */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';

let easel: TestEasel;
before(async () => {
  easel = await startEasel({ overrides: { server: { bodyLimitBytes: 64 * 1024 } } });
});
after(() => easel.close());

async function expectError(res: Response, status: number, param: string | null, code?: string) {
  const body = (await res.json()) as any;
  assert.equal(res.status, status, JSON.stringify(body));
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  assert.equal(body.error.param, param, body.error.message);
  if (code) assert.equal(body.error.code, code);
  return body.error;
}

const gen = (json: unknown) => easel.api('/v1/images/generations', { method: 'POST', json });

describe('authentication', () => {
  test('missing key → 401', async () => {
    const res = await fetch(`${easel.url}/v1/models`);
    await expectError(res, 401, null, 'missing_api_key');
  });
  test('wrong key → 401', async () => {
    await expectError(await easel.api('/v1/models', { key: 'easel_sk_nope' }), 401, null, 'invalid_api_key');
  });
  test('a malformed Authorization header → 401', async () => {
    const res = await fetch(`${easel.url}/v1/models`, { headers: { authorization: 'Basic abc' } });
    await expectError(res, 401, null);
  });
});

describe('invalid fields name their param', () => {
  const cases: [string, Record<string, unknown>, string, string?][] = [
    ['missing prompt', {}, 'prompt', 'missing_required_parameter'],
    ['empty prompt', { prompt: '   ' }, 'prompt'],
    ['prompt not a string', { prompt: 42 }, 'prompt'],
    ['n zero', { prompt: 'x', n: 0 }, 'n'],
    ['n too big', { prompt: 'x', n: 11 }, 'n'],
    ['n fractional', { prompt: 'x', n: 1.5 }, 'n'],
    ['size malformed', { prompt: 'x', size: 'big' }, 'size'],
    ['size too large', { prompt: 'x', size: '9000x9000' }, 'size'],
    ['quality unknown', { prompt: 'x', quality: 'ultra' }, 'quality'],
    ['style unknown', { prompt: 'x', style: 'gothic' }, 'style'],
    ['response_format unknown', { prompt: 'x', response_format: 'jpeg' }, 'response_format'],
    ['output_format unknown', { prompt: 'x', output_format: 'gif' }, 'output_format'],
    ['output_compression out of range', { prompt: 'x', output_compression: 101 }, 'output_compression'],
    ['background unknown', { prompt: 'x', background: 'green' }, 'background'],
    ['transparent jpeg', { prompt: 'x', background: 'transparent', output_format: 'jpeg' }, 'background'],
    ['seed negative', { prompt: 'x', seed: -1 }, 'seed'],
    ['steps zero', { prompt: 'x', steps: 0 }, 'steps'],
    ['guidance_scale not a number', { prompt: 'x', guidance_scale: 'high' }, 'guidance_scale'],
    ['webhook_url not a URL', { prompt: 'x', webhook_url: 'not a url' }, 'webhook_url'],
    ['webhook_url not http', { prompt: 'x', webhook_url: 'ftp://example.com/x' }, 'webhook_url'],
    ['metadata value not a string', { prompt: 'x', metadata: { a: 1 } }, 'metadata.a'],
    ['priority unknown', { prompt: 'x', priority: 'urgent' }, 'priority'],
    ['stream with async', { prompt: 'x', stream: true, async: true }, 'stream'],
    ['stream not a boolean', { prompt: 'x', stream: 'yes' }, 'stream'],
    ['partial_images out of range', { prompt: 'x', partial_images: 4 }, 'partial_images'],
    ['unknown argument', { prompt: 'x', colour: 'red' }, 'colour', 'unknown_parameter'],
  ];
  for (const [name, body, param, code] of cases) {
    test(name, async () => {
      await expectError(await gen(body), 400, param, code);
    });
  }

  test('unknown model → 404 model_not_found', async () => {
    await expectError(await gen({ prompt: 'x', model: 'no-such-model' }), 404, 'model', 'model_not_found');
  });
});

describe('malformed requests', () => {
  test('malformed JSON → 400', async () => {
    const res = await easel.api('/v1/images/generations', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"prompt": "x",' });
    await expectError(res, 400, null, 'invalid_json');
  });
  test('a JSON array body → 400', async () => {
    await expectError(await gen([1, 2]), 400, null);
  });
  test('an empty body → 400', async () => {
    const res = await easel.api('/v1/images/generations', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '' });
    await expectError(res, 400, null);
  });
  test('oversized body → 413', async () => {
    await expectError(await gen({ prompt: 'x'.repeat(100 * 1024) }), 413, null, 'request_too_large');
  });
  test('wrong content type → 415', async () => {
    const res = await easel.api('/v1/images/generations', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'prompt=x' });
    await expectError(res, 415, null);
  });
  test('bad list parameters → 400', async () => {
    await expectError(await easel.api('/v1/images/jobs?limit=0'), 400, 'limit');
    await expectError(await easel.api('/v1/images/jobs?status=done'), 400, 'status');
    await expectError(await easel.api('/v1/images/jobs?after=xyz'), 400, 'after');
  });
  test('an unknown job → 404', async () => {
    await expectError(await easel.api('/v1/images/jobs/job_01ARZ3NDEKTSV4RRFFQ69G5FAV'), 404, 'id', 'job_not_found');
  });
  test('an unknown route → 404 in the same shape', async () => {
    await expectError(await easel.api('/v1/nothing-here'), 404, null);
  });
  test('a file link with no signature → 403', async () => {
    const res = await fetch(`${easel.url}/files/images/job_x/0.png`);
    await expectError(res, 403, null);
  });
});
