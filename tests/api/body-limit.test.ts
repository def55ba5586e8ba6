/**
 * Bodies over `server.bodyLimitBytes` reach the client as a 413 in OpenAI's shape, JSON or multipart,
 * up to many times the limit: the official SDK raises a 413 APIError, not a connection reset.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';

const LIMIT = 1_000_000;
let easel: TestEasel;
let client: OpenAI;

before(async () => {
  easel = await startEasel({ overrides: { server: { bodyLimitBytes: LIMIT } } });
  client = new OpenAI({ apiKey: easel.adminKey, baseURL: `${easel.url}/v1`, maxRetries: 0 });
});
after(() => easel.close());

for (const times of [1.5, 4, 12]) {
  test(`a JSON body ${times}× the limit: 413 request_too_large`, async () => {
    await assert.rejects(client.images.generate({ prompt: 'x'.repeat(Math.floor(LIMIT * times)) }), (err: any) => {
      assert.equal(err.status, 413, String(err));
      assert.equal(err.code, 'request_too_large');
      assert.equal(err.type, 'invalid_request_error');
      return true;
    });
  });

  test(`a multipart body ${times}× the limit: 413 request_too_large`, async () => {
    const image = await toFile(Buffer.alloc(Math.floor(LIMIT * times), 7), 'big.png', { type: 'image/png' });
    await assert.rejects(client.images.edit({ image, prompt: 'x' }), (err: any) => {
      assert.equal(err.status, 413, String(err));
      assert.equal(err.code, 'request_too_large');
      return true;
    });
  });
}

test('the server keeps serving after oversized bodies', async () => {
  const res = await easel.api('/v1/models');
  assert.equal(res.status, 200);
});
