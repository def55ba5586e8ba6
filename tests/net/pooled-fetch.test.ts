/**
 * The keep-alive fetch the openai backend hands its SDK (src/net/pooled-fetch.ts): a standard
 * Response for plain requests, aborts and size limits honoured, anything else left to global fetch.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createPooledFetch } from '../../src/net/pooled-fetch.ts';

describe('pooled fetch', () => {
  let base: string;
  const sockets = new Set<string>();
  const server = createServer((req, res) => {
    sockets.add(`${req.socket.remotePort}`);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      if (req.url === '/slow') return void setTimeout(() => res.end('late'), 2000);
      if (req.url === '/big') return void res.end(Buffer.alloc(4096, 120));
      if (req.url === '/empty') return void res.writeHead(204).end();
      res.writeHead(201, { 'content-type': 'application/json', 'x-request-id': 'req_1' });
      res.end(JSON.stringify({ method: req.method, body, contentType: req.headers['content-type'] ?? null, auth: req.headers.authorization ?? null }));
    });
  });
  const fetch = createPooledFetch({ maxBodyBytes: 1024 });

  before(async () => {
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    fetch.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  test('a JSON POST gets the status, headers and body, over one reused connection', async () => {
    sockets.clear();
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${base}/x`, { method: 'post', headers: new Headers({ 'content-type': 'application/json', authorization: 'Bearer k' }), body: '{"a":1}' });
      assert.equal(res.status, 201);
      assert.equal(res.headers.get('x-request-id'), 'req_1');
      assert.equal(res.url, `${base}/x`);
      assert.deepEqual(await res.json(), { method: 'POST', body: '{"a":1}', contentType: 'application/json', auth: 'Bearer k' });
    }
    assert.equal(sockets.size, 1, 'keep-alive: one socket served all five');
  });

  test('204 has no body', async () => {
    const res = await fetch(`${base}/empty`);
    assert.equal(res.status, 204);
    assert.equal(await res.text(), '');
  });

  test('an abort rejects at once with an AbortError', async () => {
    const ac = new AbortController();
    const t0 = Date.now();
    const p = fetch(`${base}/slow`, { signal: ac.signal });
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, (err: Error) => err.name === 'AbortError');
    assert.ok(Date.now() - t0 < 1500);
    await assert.rejects(fetch(`${base}/x`, { signal: AbortSignal.abort() }), (err: Error) => err.name === 'AbortError');
  });

  test('an answer over the size limit fails the call', async () => {
    await assert.rejects(fetch(`${base}/big`), /larger than 1024 bytes/);
  });

  test('a refused connection is a TypeError like fetch', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    await assert.rejects(fetch(`http://127.0.0.1:${port}/`), (err: Error) => err instanceof TypeError && /fetch failed/.test(err.message));
  });

  test('a multipart body goes through the global fetch and arrives intact', async () => {
    const form = new FormData();
    form.append('prompt', 'a fox');
    const res = await fetch(`${base}/x`, { method: 'POST', body: form });
    const got = (await res.json()) as { body: string; contentType: string };
    assert.match(got.contentType, /^multipart\/form-data; boundary=/);
    assert.match(got.body, /name="prompt"\r\n\r\na fox/);
  });
});
