import { after, before, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { ProviderHttp } from '../../src/backends/http/client.ts';
import { backoffDelay, DEFAULT_RETRY_POLICY, parseRetryAfter } from '../../src/backends/http/retry.ts';
import { httpFailureError, providerMessage } from '../../src/backends/http/errors.ts';
import { downloadImage, nearestAspectRatio } from '../../src/backends/http/media.ts';
import { BackendError } from '../../src/backends/image-backend.ts';
import { sleep, startStandinServer } from './standin-kit.ts';
import type { StandinServer } from './standin-kit.ts';
import { standinPng } from '../support/openai-standin.ts';

describe('retry-after and backoff', () => {
  test('retry-after in seconds, as an HTTP date, and retry-after-ms', () => {
    assert.equal(parseRetryAfter(new Headers({ 'retry-after': '3' })), 3000);
    assert.equal(parseRetryAfter(new Headers({ 'retry-after': '0.5' })), 500);
    assert.equal(parseRetryAfter(new Headers({ 'retry-after-ms': '120', 'retry-after': '9' })), 120);
    const now = Date.parse('2026-01-01T00:00:00Z');
    assert.equal(parseRetryAfter(new Headers({ 'retry-after': 'Thu, 01 Jan 2026 00:00:07 GMT' }), now), 7000);
    assert.equal(parseRetryAfter(new Headers({ 'retry-after': 'soon' })), undefined);
    assert.equal(parseRetryAfter(new Headers()), undefined);
  });

  test('a provider-asked wait wins, capped; otherwise exponential with jitter', () => {
    assert.equal(backoffDelay(0, DEFAULT_RETRY_POLICY, 2500), 2500);
    assert.equal(backoffDelay(0, DEFAULT_RETRY_POLICY, 3_600_000), DEFAULT_RETRY_POLICY.maxRetryAfterMs);
    for (let i = 0; i < 20; i++) {
      const d = backoffDelay(2, DEFAULT_RETRY_POLICY);
      assert.ok(d >= 1000 && d <= 2000, String(d));
    }
    assert.ok(backoffDelay(20, DEFAULT_RETRY_POLICY) <= DEFAULT_RETRY_POLICY.maxDelayMs);
  });
});

describe('ProviderHttp', () => {
  let server: StandinServer;
  let delayMs = 0;
  before(async () => {
    server = await startStandinServer(async (req, reply) => {
      if (req.path === '/slow') await sleep(delayMs);
      if (req.path === '/big') return reply.bytes(200, Buffer.alloc(2048, 1));
      return reply.json(200, { ok: true, path: req.path });
    });
  });
  after(() => server.close());
  beforeEach(() => {
    server.requests.length = 0;
    delayMs = 0;
  });
  const http = (over: Partial<ConstructorParameters<typeof ProviderHttp>[0]> = {}) =>
    new ProviderHttp({ provider: 'Prov', backend: 'b', timeoutMs: 2000, retry: { maxRetries: 2, baseDelayMs: 5 }, ...over });
  const signal = () => new AbortController().signal;

  test('429 and 5xx are retried, honouring retry-after; the final answer is returned as is', async () => {
    server.inject({ status: 429, headers: { 'retry-after': '0.3' } });
    server.inject({ status: 502 });
    const started = Date.now();
    const res = await http().send(`${server.url}/x`, { signal: signal(), idempotent: false, method: 'POST' });
    assert.equal(res.status, 200);
    assert.ok(Date.now() - started >= 290, 'waited what retry-after asked');
    assert.equal(server.requests.length, 3);
    server.inject({ status: 503, count: 3 });
    const last = await http().send(`${server.url}/x`, { signal: signal(), idempotent: true });
    assert.equal(last.status, 503);
    assert.equal(server.requests.length, 6, '1 + 2 retries');
  });

  test('a timed-out submission is not sent again (it may have been accepted); a timed-out GET is', async () => {
    delayMs = 300;
    const err = await http({ timeoutMs: 100 })
      .send(`${server.url}/slow`, { signal: signal(), idempotent: false, method: 'POST' })
      .catch((e: unknown) => e as BackendError);
    assert.ok(err instanceof BackendError);
    assert.equal(err.code, 'timeout');
    assert.equal(err.retryable, false);
    assert.match(err.message, /may have been accepted/);
    assert.equal(server.requests.length, 1);
    server.requests.length = 0;
    const err2 = await http({ timeoutMs: 100 }).send(`${server.url}/slow`, { signal: signal(), idempotent: true }).catch((e: unknown) => e as BackendError);
    assert.equal((err2 as BackendError).code, 'timeout');
    assert.equal((err2 as BackendError).retryable, true);
    await sleep(350);
    assert.equal(server.requests.length, 3);
  });

  test('connection refused is retried even for a submission (nothing was sent), then unavailable', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const retries: unknown[] = [];
    const err = await http({ onRetry: (i) => retries.push(i) })
      .send(`http://127.0.0.1:${port}/`, { signal: signal(), idempotent: false, method: 'POST' })
      .catch((e: unknown) => e as BackendError);
    assert.equal((err as BackendError).code, 'backend_unavailable');
    assert.equal((err as BackendError).retryable, true);
    assert.match((err as BackendError).message, /ECONNREFUSED/);
    assert.equal(retries.length, 2);
  });

  test('an aborted signal ends at once; bodies over the cap are refused', async () => {
    const ac = new AbortController();
    ac.abort(new Error('stop'));
    const err = await http().send(`${server.url}/x`, { signal: ac.signal, idempotent: true }).catch((e: unknown) => e as BackendError);
    assert.equal((err as BackendError).code, 'aborted');
    assert.equal(server.requests.length, 0);
    const big = await http({ maxBytes: 1024 }).send(`${server.url}/big`, { signal: signal(), idempotent: true }).catch((e: unknown) => e as BackendError);
    assert.match((big as BackendError).message, /over 1024 bytes/);
  });

  test('downloads: data URIs are decoded, http bytes are sniffed', async () => {
    const png = standinPng(8, 8).png;
    const viaData = await downloadImage(http(), `data:image/png;base64,${png.toString('base64')}`, { signal: signal() });
    assert.deepEqual(viaData.data, png);
    assert.equal(viaData.mediaType, 'image/png');
    await assert.rejects(downloadImage(http(), 'ftp://x/y.png', { signal: signal() }), /scheme ftp/);
  });
});

describe('provider error mapping', () => {
  test('messages from every shape providers use', () => {
    assert.equal(providerMessage({ error: { message: 'oai' } }, 'f'), 'oai');
    assert.equal(providerMessage({ detail: 'fastapi' }, 'f'), 'fastapi');
    assert.equal(providerMessage({ detail: [{ loc: ['body', 'width'], msg: 'bad' }] }, 'f'), 'body.width: bad');
    assert.equal(providerMessage({ title: 'Input validation failed', detail: '- input: prompt is required\n', status: 422 }, 'f'), 'Input validation failed: - input: prompt is required');
    assert.equal(providerMessage({ id: 'x', name: 'bad_request', errors: ['a', 'b'] }, 'f'), 'a; b');
    assert.equal(providerMessage(undefined, 'fallback'), 'fallback');
  });

  test('statuses map to easel codes', () => {
    const code = (status: number, extra = {}) => httpFailureError({ provider: 'P', backend: 'b', status, body: { detail: 'x' }, ...extra });
    assert.equal(code(401).code, 'backend_auth');
    assert.equal(code(403).code, 'backend_auth');
    assert.equal(code(403, { moderation: true }).code, 'content_policy_violation');
    assert.equal(code(402).code, 'backend_quota_exceeded');
    assert.equal(code(429).code, 'backend_unavailable');
    assert.equal(code(429).retryable, true);
    assert.equal(code(503).retryable, true);
    assert.equal(code(422).code, 'invalid_request');
    assert.equal(httpFailureError({ provider: 'P', backend: 'b', status: 404, body: { detail: 'model not found' } }).code, 'model_not_found');
    assert.match(code(400, { moderation: true }).message, /^P refused the request under its content policy \(backend "b"\)/);
  });

  test('nearest aspect ratios', () => {
    assert.deepEqual(nearestAspectRatio({ width: 1920, height: 1080 }, ['1:1', '16:9', '9:16']), { ratio: '16:9', exact: true });
    assert.deepEqual(nearestAspectRatio({ width: 2000, height: 1080 }, ['1:1', '16:9', '9:16']), { ratio: '16:9', exact: false });
    assert.deepEqual(nearestAspectRatio({ width: 1024, height: 1024 }, ['1:1', '16:9']), { ratio: '1:1', exact: true });
    assert.equal(nearestAspectRatio({ width: 500, height: 1000 }, ['1:1', '9:16', '16:9']).ratio, '9:16');
  });
});
