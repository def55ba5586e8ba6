/**
 * GET /files/<key>: a stored image straight from disk, as browsers and CDNs expect of a static file:
 * an ETag (`If-None-Match` → 304), single byte ranges (206, `If-Range`, 416 outside the file), HEAD.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { byteRange } from '../../src/api/routes/files.ts';

let easel: TestEasel;
let url: string;
let whole: Buffer;

before(async () => {
  easel = await startEasel();
  const client = new OpenAI({ apiKey: easel.adminKey, baseURL: `${easel.url}/v1`, maxRetries: 0 });
  const res = await client.images.generate({ prompt: 'a lighthouse', model: 'test-model', response_format: 'url' });
  url = res.data![0]!.url!;
  whole = Buffer.from(await (await fetch(url)).arrayBuffer());
});
after(() => easel.close());

describe('/files', () => {
  test('the whole image, with an ETag, Accept-Ranges and its length', async () => {
    const res = await fetch(url);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('accept-ranges'), 'bytes');
    assert.match(res.headers.get('etag') ?? '', /^"[\w-]+"$/);
    assert.equal(Number(res.headers.get('content-length')), whole.length);
    assert.ok(whole.length > 100);
    assert.deepEqual(whole.subarray(1, 4).toString(), 'PNG');
    // The same image answers with the same ETag each time.
    assert.equal((await fetch(url)).headers.get('etag'), res.headers.get('etag'));
  });

  test('If-None-Match with its ETag is a 304 without a body; another ETag gets the image', async () => {
    const etag = (await fetch(url)).headers.get('etag')!;
    const same = await fetch(url, { headers: { 'if-none-match': etag } });
    assert.equal(same.status, 304);
    assert.equal((await same.arrayBuffer()).byteLength, 0);
    assert.equal(same.headers.get('etag'), etag);
    assert.equal((await fetch(url, { headers: { 'if-none-match': `W/${etag}, "other"` } })).status, 304, 'a weak match counts');
    const other = await fetch(url, { headers: { 'if-none-match': '"something-else"' } });
    assert.equal(other.status, 200);
    assert.equal((await other.arrayBuffer()).byteLength, whole.length);
  });

  test('a byte range is a 206 with exactly those bytes and a Content-Range', async () => {
    for (const [range, from, to] of [
      ['bytes=0-99', 0, 99],
      ['bytes=100-', 100, whole.length - 1],
      ['bytes=-50', whole.length - 50, whole.length - 1],
      [`bytes=10-${whole.length + 500}`, 10, whole.length - 1],
    ] as const) {
      const res = await fetch(url, { headers: { range } });
      assert.equal(res.status, 206, range);
      assert.equal(res.headers.get('content-range'), `bytes ${from}-${to}/${whole.length}`, range);
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), whole.subarray(from, to + 1), range);
    }
  });

  test('a range past the end is a 416 naming the size, in the OpenAI error shape', async () => {
    const res = await fetch(url, { headers: { range: `bytes=${whole.length}-` } });
    assert.equal(res.status, 416);
    assert.equal(res.headers.get('content-range'), `bytes */${whole.length}`);
    const body = (await res.json()) as { error: { code: string; param: string; message: string } };
    assert.equal(body.error.code, 'range_not_satisfiable');
    assert.equal(body.error.param, 'range');
    assert.match(body.error.message, new RegExp(`${whole.length} bytes`));
  });

  test('If-Range with another ETag, or several ranges, send the whole image', async () => {
    const stale = await fetch(url, { headers: { range: 'bytes=0-9', 'if-range': '"old"' } });
    assert.equal(stale.status, 200);
    assert.equal((await stale.arrayBuffer()).byteLength, whole.length);
    const etag = (await fetch(url)).headers.get('etag')!;
    assert.equal((await fetch(url, { headers: { range: 'bytes=0-9', 'if-range': etag } })).status, 206);
    const several = await fetch(url, { headers: { range: 'bytes=0-9,20-29' } });
    assert.equal(several.status, 200);
    assert.equal((await several.arrayBuffer()).byteLength, whole.length);
  });

  test('HEAD gives the headers without the bytes', async () => {
    const res = await fetch(url, { method: 'HEAD' });
    assert.equal(res.status, 200);
    assert.equal(Number(res.headers.get('content-length')), whole.length);
    assert.equal((await res.arrayBuffer()).byteLength, 0);
  });

  test('the signature still guards every form of the request', async () => {
    const forged = url.replace(/signature=[^&]+/, 'signature=AAAA');
    assert.equal((await fetch(forged, { headers: { range: 'bytes=0-9' } })).status, 403);
    assert.equal((await fetch(forged, { method: 'HEAD' })).status, 403);
  });
});

test('byteRange reads the forms RFC 9110 allows and ignores the rest', () => {
  assert.deepEqual(byteRange('bytes=0-0', 10), [0, 0]);
  assert.deepEqual(byteRange('bytes=5-', 10), [5, 9]);
  assert.deepEqual(byteRange('bytes=-3', 10), [7, 9]);
  assert.deepEqual(byteRange('bytes=-30', 10), [0, 9]);
  assert.equal(byteRange('bytes=10-', 10), 'unsatisfiable');
  assert.equal(byteRange('bytes=5-2', 10), 'unsatisfiable');
  assert.equal(byteRange('bytes=-0', 10), 'unsatisfiable');
  assert.equal(byteRange(undefined, 10), undefined);
  assert.equal(byteRange('items=0-5', 10), undefined);
  assert.equal(byteRange('bytes=0-1,3-4', 10), undefined);
  assert.equal(byteRange('bytes=-', 10), undefined);
  assert.deepEqual(byteRange(' bytes = 2 - 4 ', 10), [2, 4]);
  assert.equal(byteRange(`bytes=${' '.repeat(16_000)}x`, 10), undefined);
});
