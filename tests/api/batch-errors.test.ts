/**
 * A batch that is wrong says everything that is wrong with it, by line (JSONL) or request index,
 * in words: a line that is not JSON, a field of the wrong type (not "missing"), and every bad request
 * at once. The CLI reads its file the same way before sending it.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readJsonl, resultName } from '../../src/cli/batch.ts';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';

let easel: TestEasel;
before(async () => {
  easel = await startEasel();
});
after(() => easel.close());

const jsonl = (body: string) => easel.api('/v1/images/batches', { method: 'POST', headers: { 'content-type': 'application/jsonl' }, body }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));

test('every line that is not JSON is named by its line number, with why', async () => {
  const { status, body } = await jsonl(['{"prompt":"ok"}', 'not json', '', '{"prompt": "also ok"}', "{'prompt': 'single quotes'}", '{"prompt":'].join('\n'));
  assert.equal(status, 400);
  assert.equal(body.error.code, 'invalid_json');
  assert.equal(body.error.param, 'requests[1]');
  assert.match(body.error.message, /3 requests of the batch are invalid/);
  for (const line of [2, 5, 6]) assert.match(body.error.message, new RegExp(`Line ${line} is not valid JSON \\(`));
  assert.doesNotMatch(body.error.message, /Line 1 |Line 4 /);
});

test('a field of the wrong type says so (and which type), in every request at once', async () => {
  const { status, body } = await jsonl(['{"prompt": 5}', '{"prompt":"fine"}', '{"prompt":"x","n":"2"}', '{"prompt":"x","seed":0.5}'].join('\n'));
  assert.equal(status, 400);
  assert.equal(body.error.param, 'requests[0].prompt');
  assert.equal(body.error.code, 'invalid_type');
  assert.match(body.error.message, /Request 0 \(line 1\): Invalid type for 'prompt': expected a string, got the integer 5/);
  assert.match(body.error.message, /Request 2 \(line 3\): Invalid type for 'n': expected a number, got a string \("2"\)/);
  assert.match(body.error.message, /Request 3 \(line 4\): Invalid type for 'seed': expected an integer, got the number 0\.5/);
});

test('generations name the wrong type too: "n":"2", "prompt":123, "seed":0.5, "guidance_scale":1e999', async () => {
  for (const [json, param, says] of [
    ['{"prompt":"x","n":"2"}', 'n', /expected a number, got a string/],
    ['{"prompt":123}', 'prompt', /expected a string, got the integer 123/],
    ['{"prompt":"x","seed":0.5}', 'seed', /expected an integer, got the number 0\.5/],
    ['{"prompt":"x","guidance_scale":1e999}', 'guidance_scale', /expected a number, got a number out of range/],
    ['{"n":2}', 'prompt', /Missing required parameter/],
  ] as const) {
    const res = await easel.api('/v1/images/generations', { method: 'POST', headers: { 'content-type': 'application/json' }, body: json });
    const body = (await res.json()) as any;
    assert.equal(res.status, 400, json);
    assert.equal(body.error.param, param, json);
    assert.match(body.error.message, says, json);
    assert.equal(body.error.code, json === '{"n":2}' ? 'missing_required_parameter' : 'invalid_type', json);
  }
});

test('the CLI reads its file with line numbers, names unnamed outputs by line, and lists every bad line', () => {
  const ok = readJsonl('\n"a prompt"\n{"prompt":"b","custom_id":"bee"}\n\n{"prompt":"c"}\n');
  assert.deepEqual(ok.lineNumbers, [2, 3, 5]);
  assert.equal(JSON.parse(ok.lines[0]!).prompt, 'a prompt');
  assert.equal(resultName({ index: 2, custom_id: null }, (i) => ok.lineNumbers[i]!), 'line-00005');
  assert.equal(resultName({ index: 1, custom_id: 'bee' }), 'bee');
  assert.throws(() => readJsonl('{"prompt":"a"}\nnope\n{"prompt":"b"}\n{oops}\n'), (err: Error) => {
    assert.match(err.message, /2 line\(s\) of the file are not valid JSON/);
    assert.match(err.message, /line 2: not valid JSON/);
    assert.match(err.message, /line 4: not valid JSON/);
    return true;
  });
});
