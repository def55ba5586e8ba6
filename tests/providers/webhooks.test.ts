import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { ProviderWaiters, signStandardWebhook, verifyStandardWebhook } from '../../src/backends/http/webhooks.ts';
import { FalJwks, verifyFalWebhook } from '../../src/backends/fal/webhook-signature.ts';
import { ProviderHttp } from '../../src/backends/http/client.ts';
import { startFalStandin } from '../support/fal-standin.ts';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

function headers(id: string, ts: number, sig: string) {
  return { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': sig };
}

describe('Standard Webhooks verification (Replicate)', () => {
  test('the spec’s test vector', () => {
    const body = Buffer.from('{"test": 2432232314}');
    assert.equal(signStandardWebhook(SECRET, 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, body), 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
    const ok = verifyStandardWebhook({
      secret: SECRET,
      headers: headers('msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE='),
      rawBody: body,
      nowSeconds: 1614265330 + 10,
    });
    assert.deepEqual(ok, { ok: true, id: 'msg_p5jXN8AQM9LWM0D4loKWxJek', timestamp: 1614265330 });
  });

  test('a signature made by the reference library verifies', () => {
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    const body = '{"id":"p1","status":"succeeded"}';
    const now = new Date();
    const sig = new Webhook(secret).sign('msg_1', now, body);
    const r = verifyStandardWebhook({ secret, headers: headers('msg_1', Math.floor(now.getTime() / 1000), sig), rawBody: Buffer.from(body) });
    assert.equal(r.ok, true);
  });

  test('wrong secret, altered body, re-serialised JSON are refused', () => {
    const now = Math.floor(Date.now() / 1000);
    const body = Buffer.from('{"id": "p1",  "status":"succeeded"}');
    const sig = signStandardWebhook(SECRET, 'msg_1', now, body);
    const other = `whsec_${randomBytes(24).toString('base64')}`;
    assert.deepEqual(verifyStandardWebhook({ secret: other, headers: headers('msg_1', now, sig), rawBody: body }), { ok: false, reason: 'no matching v1 signature' });
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: headers('msg_1', now, sig), rawBody: Buffer.from('{"id": "p2",  "status":"succeeded"}') }).ok, false);
    const reserialised = Buffer.from(JSON.stringify(JSON.parse(body.toString())));
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: headers('msg_1', now, sig), rawBody: reserialised }).ok, false, 'raw bytes only');
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: headers('msg_2', now, sig), rawBody: body }).ok, false, 'the id is signed');
  });

  test('stale and future timestamps are refused (±5 minutes), and the timestamp is signed', () => {
    const now = Math.floor(Date.now() / 1000);
    const body = Buffer.from('{}');
    const old = now - 301;
    assert.deepEqual(
      verifyStandardWebhook({ secret: SECRET, headers: headers('m', old, signStandardWebhook(SECRET, 'm', old, body)), rawBody: body }),
      { ok: false, reason: 'message timestamp too old' },
    );
    const future = now + 301;
    assert.deepEqual(
      verifyStandardWebhook({ secret: SECRET, headers: headers('m', future, signStandardWebhook(SECRET, 'm', future, body)), rawBody: body }),
      { ok: false, reason: 'message timestamp too new' },
    );
    const sig = signStandardWebhook(SECRET, 'm', now - 100, body);
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: headers('m', now, sig), rawBody: body }).ok, false, 'a replayed signature with a fresh timestamp');
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: headers('m', now * 1000, sig), rawBody: body }).ok, false, 'milliseconds are not seconds');
  });

  test('multiple signatures: any matching v1 entry verifies (key rotation); other versions are skipped', () => {
    const now = Math.floor(Date.now() / 1000);
    const body = Buffer.from('{"a":1}');
    const good = signStandardWebhook(SECRET, 'm', now, body);
    const stale = signStandardWebhook(`whsec_${randomBytes(24).toString('base64')}`, 'm', now, body);
    const list = `${stale} v1a,${randomBytes(64).toString('base64')} ${good}`;
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: headers('m', now, list), rawBody: body }).ok, true);
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: headers('m', now, `${stale} v2,${good.slice(3)}`), rawBody: body }).ok, false, 'a good MAC under another version does not count');
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: headers('m', now, 'v1,short'), rawBody: body }).ok, false);
  });

  test('missing headers are refused', () => {
    assert.equal(verifyStandardWebhook({ secret: SECRET, headers: {}, rawBody: Buffer.from('{}') }).ok, false);
  });
});

describe('fal webhook verification (Ed25519 over fal’s JWKS)', () => {
  test('valid, wrong key, stale timestamp, tampered body, wrong user', async () => {
    const standin = await startFalStandin();
    try {
      const http = new ProviderHttp({ provider: 'fal', backend: 'fal', timeoutMs: 5000 });
      const jwks = new FalJwks(http, standin.jwksUrl);
      const body = JSON.stringify({ request_id: 'req-1', status: 'OK', payload: { images: [] } });
      const req = (h: Record<string, string>, b = body) => ({ headers: h, rawBody: Buffer.from(b) });
      assert.deepEqual(
        { ...(await verifyFalWebhook({ req: req(standin.signWebhook('req-1', body)), jwks })), timestamp: 0 },
        { ok: true, id: 'req-1', timestamp: 0 },
      );
      const forger = generateKeyPairSync('ed25519').privateKey;
      const forged = await verifyFalWebhook({ req: req(standin.signWebhook('req-1', body, { key: forger })), jwks });
      assert.deepEqual(forged, { ok: false, reason: 'no fal key verifies the signature' });
      const stale = await verifyFalWebhook({ req: req(standin.signWebhook('req-1', body, { timestamp: Math.floor(Date.now() / 1000) - 400 })), jwks });
      assert.deepEqual(stale, { ok: false, reason: 'timestamp outside the tolerance' });
      const tampered = await verifyFalWebhook({ req: req(standin.signWebhook('req-1', body), body.replace('OK', 'ERROR')), jwks });
      assert.equal(tampered.ok, false);
      const other = await verifyFalWebhook({ req: req(standin.signWebhook('req-1', body, { userId: 'someone-else' })), jwks, userId: 'user_standin' });
      assert.deepEqual(other, { ok: false, reason: 'signed for another fal user' });
      assert.equal(standin.requests.filter((r) => r.path === '/.well-known/jwks.json').length <= 2, true, 'keys are cached');
    } finally {
      await standin.close();
    }
  });
});

describe('ProviderWaiters', () => {
  test('a webhook wakes the waiter at once; one that came first is kept; a timeout answers undefined', async () => {
    const w = new ProviderWaiters();
    const signal = new AbortController().signal;
    const started = Date.now();
    const p = w.wait('a', 10_000, signal);
    setTimeout(() => w.notify('a', { done: true }), 10);
    assert.deepEqual(await p, { done: true });
    assert.ok(Date.now() - started < 1000);
    w.notify('b', 1);
    assert.equal(await w.wait('b', 10_000, signal), 1);
    assert.equal(await w.wait('c', 5, signal), undefined);
    assert.equal(w.waiting, 0);
    const ac = new AbortController();
    const aborted = w.wait('d', 10_000, ac.signal);
    ac.abort(new Error('stop'));
    await assert.rejects(aborted, /stop/);
    assert.equal(w.waiting, 0);
  });
});
