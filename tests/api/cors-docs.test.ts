/** CORS for configured origins only; the OpenAPI document and the docs page. */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';

let easel: TestEasel;
before(async () => {
  easel = await startEasel({ overrides: { cors: { origins: ['https://app.example.com'] } } });
});
after(() => easel.close());

const preflight = (origin: string) =>
  fetch(`${easel.url}/v1/images/generations`, {
    method: 'OPTIONS',
    headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });

describe('CORS', () => {
  test('a configured origin passes preflight and gets the allow headers', async () => {
    const res = await preflight('https://app.example.com');
    assert.equal(res.status, 204);
    assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example.com');
    assert.match(res.headers.get('access-control-allow-headers') ?? '', /authorization/);
    const real = await easel.api('/v1/models', { headers: { origin: 'https://app.example.com' } });
    assert.equal(real.headers.get('access-control-allow-origin'), 'https://app.example.com');
  });

  test('any other origin is refused', async () => {
    const res = await preflight('https://evil.example.net');
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('access-control-allow-origin'), null);
    assert.equal(((await res.json()) as any).error.code, 'cors_origin_refused');
    const real = await easel.api('/v1/models', { headers: { origin: 'https://evil.example.net' } });
    assert.equal(real.headers.get('access-control-allow-origin'), null);
  });

  test('no origins are allowed by default', async () => {
    const plain = await startEasel();
    try {
      const res = await fetch(`${plain.url}/v1/models`, { method: 'OPTIONS', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'GET' } });
      assert.equal(res.status, 403);
    } finally {
      await plain.close();
    }
  });
});

describe('API docs', () => {
  test('/openapi.json is generated from the request schemas', async () => {
    const res = await fetch(`${easel.url}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as any;
    assert.match(doc.openapi, /^3\./);
    const gen = doc.paths['/v1/images/generations'].post.requestBody.content['application/json'].schema;
    assert.deepEqual(gen.required, ['prompt']);
    // Optional fields are `anyOf: [schema, null]` in JSON Schema 2020-12.
    const prop = (name: string) => gen.properties[name].anyOf?.find((b: any) => b.type !== 'null') ?? gen.properties[name];
    assert.equal(prop('n').maximum, easel.runtime.config.limits.maxImagesPerRequest);
    assert.deepEqual(prop('response_format').enum, ['url', 'b64_json']);
    const edit = doc.paths['/v1/images/edits'].post.requestBody.content['multipart/form-data'].schema;
    assert.equal(edit.properties.mask.format, 'binary');
    assert.ok(doc.paths['/v1/images/variations']);
    assert.ok(doc.paths['/v1/images/jobs/{id}'].get);
  });

  test('/docs is an interactive page that loads its assets', async () => {
    const page = await fetch(`${easel.url}/docs`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    const html = await page.text();
    for (const src of html.match(/\/docs\/[a-z\-/.]+\.(js|css)/g) ?? []) {
      const asset = await fetch(`${easel.url}${src}`);
      assert.equal(asset.status, 200, src);
      assert.ok((await asset.arrayBuffer()).byteLength > 10, src);
    }
  });
});
