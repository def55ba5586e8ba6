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

describe('query parameters are validated like bodies', () => {
  test('a single-valued parameter sent twice → 400 naming it (it was a 500)', async () => {
    const err = await expectError(await easel.api('/v1/images?prompt=a&prompt=b'), 400, 'prompt', 'invalid_type');
    assert.match(err.message, /send it once/);
    await expectError(await easel.api('/v1/images/batches?after=x&after=y'), 400, 'after', 'invalid_type');
    await expectError(await easel.api('/v1/images/jobs?limit=5&limit=6'), 400, 'limit', 'invalid_type');
  });
  test('numbers are read from their text, with a 400 that says what was expected', async () => {
    const err = await expectError(await easel.api('/v1/images/jobs?limit=abc'), 400, 'limit', 'invalid_type');
    assert.match(err.message, /expected a number, got a string \("abc"\)/);
    await expectError(await easel.api('/v1/images/jobs?limit=1.5'), 400, 'limit');
    await expectError(await easel.api('/v1/images/batches/batch_01ARZ3NDEKTSV4RRFFQ69G5FAV/results?after=-2'), 400, 'after');
    await expectError(await easel.api('/v1/images?created_after=yesterday'), 400, 'created_after');
    await expectError(await easel.api('/v1/usage/report?days=0'), 400, 'days');
    const ok = await easel.api('/v1/images/jobs?limit=2');
    assert.equal(ok.status, 200);
    assert.ok(((await ok.json()) as any).data.length <= 2);
  });
  test('an empty value counts as absent', async () => {
    assert.equal((await easel.api('/v1/images/jobs?limit=&status=')).status, 200);
    assert.equal((await easel.api('/v1/images?created_after=&prompt=')).status, 200);
  });
  test('a parameter the route does not take → 400 unknown_parameter, whether it takes others or none', async () => {
    await expectError(await easel.api('/v1/images/jobs?colour=red'), 400, 'colour', 'unknown_parameter');
    await expectError(await easel.api('/v1/models?x=1'), 400, 'x', 'unknown_parameter');
    await expectError(await easel.api('/v1/images/generations?debug=1', { method: 'POST', json: { prompt: 'x' } }), 400, 'debug', 'unknown_parameter');
    await expectError(await fetch(`${easel.url}/health?probe=1`), 400, 'probe', 'unknown_parameter');
  });
  test("provider webhooks ignore their query string (the URL may be the operator's own)", async () => {
    const res = await fetch(`${easel.url}/hooks/providers/nope?token=abc`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    await expectError(res, 404, null, 'unknown_backend');
  });
});

describe('ids in paths', () => {
  test('an id that cannot exist is a 404 for that thing, before anything is looked up', async () => {
    await expectError(await easel.api('/v1/images/jobs/abc'), 404, 'id', 'job_not_found');
    await expectError(await easel.api('/v1/images/jobs/abc/events'), 404, 'id', 'job_not_found');
    await expectError(await easel.api('/v1/images/jobs/abc/cancel', { method: 'POST' }), 404, 'id', 'job_not_found');
    await expectError(await easel.api('/v1/images/jobs/job_%00/retry', { method: 'POST' }), 404, 'id', 'job_not_found');
    await expectError(await easel.api(`/v1/images/jobs/job_${'x'.repeat(300)}`), 404, 'id', 'job_not_found');
    await expectError(await easel.api('/v1/images/batches/nope'), 404, 'id', 'batch_not_found');
    await expectError(await easel.api('/v1/keys/nope/revoke', { method: 'POST' }), 404, 'id', 'key_not_found');
  });
  test('a URL that is not valid percent-encoding → 400 in the same shape, with a request id', async () => {
    for (const path of ['/v1/images/jobs/%zz', '/files/%zz']) {
      const res = await fetch(`${easel.url}${path}`);
      const err = await expectError(res, 400, null, 'invalid_url');
      assert.match(err.message, /percent-encoding/);
      assert.ok(res.headers.get('x-request-id'));
    }
  });
});

describe('actions that take no body', () => {
  let jobId: string;
  before(async () => {
    const res = await gen({ prompt: 'a finished job', model: 'test-model' });
    assert.equal(res.status, 200);
    jobId = res.headers.get('x-easel-job-id')!;
  });
  const emptyJson = { method: 'POST', headers: { 'content-type': 'application/json' }, body: '' };

  test('an empty application/json body reads as {} (it was 400 invalid_json)', async () => {
    await expectError(await easel.api(`/v1/images/jobs/${jobId}/cancel`, emptyJson), 409, null, 'job_already_finished');
    await expectError(await easel.api(`/v1/images/jobs/${jobId}/retry`, emptyJson), 409, null, 'job_not_retryable');
    await expectError(await easel.api('/v1/keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV/revoke', emptyJson), 404, 'id', 'key_not_found');
  });
  test('so do no body and {}; a field they do not take is refused', async () => {
    await expectError(await easel.api(`/v1/images/jobs/${jobId}/cancel`, { method: 'POST' }), 409, null, 'job_already_finished');
    await expectError(await easel.api(`/v1/images/jobs/${jobId}/cancel`, { method: 'POST', json: {} }), 409, null, 'job_already_finished');
    await expectError(await easel.api(`/v1/images/jobs/${jobId}/cancel`, { method: 'POST', json: { reason: 'x' } }), 400, 'reason', 'unknown_parameter');
  });
  test('an empty body on a route that takes one is still bad JSON', async () => {
    await expectError(await easel.api('/v1/keys', emptyJson), 400, null, 'invalid_json');
  });
});
