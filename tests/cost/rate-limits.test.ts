/**
 * Rate limits per key and per client address, per endpoint, shared by two API instances through a
 * real Redis: 429 with Retry-After and the IETF RateLimit / RateLimit-Policy headers.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { startRedis } from '../support/redis.ts';
import type { RedisServer } from '../support/redis.ts';

const redis = await startRedis();

describe('rate limits across two API instances sharing Redis', { skip: redis ? false : 'redis-server not found; set CI to make this an error' }, () => {
  let standin: OpenAIStandin;
  let a: TestEasel;
  let b: TestEasel;
  let dataDir: string;
  let key: string;
  let vip: string;

  before(async () => {
    standin = await startOpenAIStandin({ strict: false });
    dataDir = mkdtempSync(join(tmpdir(), 'easel-ratelimit-'));
    const overrides = {
      redis: { url: (redis as RedisServer).url, prefix: `rl${Date.now()}` },
      rateLimits: {
        enabled: true,
        generations: { perKey: 5, perAddress: 12, windowSeconds: 60 },
        batches: { perKey: 1, perAddress: 10, windowSeconds: 60 },
        reads: { perKey: 1000, perAddress: 1000, windowSeconds: 60 },
        keys: { vip: { generations: 100 } },
      },
    };
    a = await startEasel({ existingStandin: standin, dataDir, roles: { api: true, worker: false }, overrides });
    b = await startEasel({ existingStandin: standin, dataDir, roles: { api: true, worker: false }, overrides });
    key = (await createApiKey(a.runtime.keys, { name: 'limited' })).secret;
    vip = (await createApiKey(a.runtime.keys, { name: 'vip' })).secret;
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await standin?.close();
    await redis?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const gen = (e: TestEasel, k: string, prompt: string) =>
    e.api('/v1/images/generations', { method: 'POST', key: k, json: { prompt, async: true } });

  test('one key: the limit counts requests to both instances together', async () => {
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 7; i++) {
      last = await gen(i % 2 ? b : a, key, `limited ${i}`);
      statuses.push(last.status);
      if (last.status === 202) {
        assert.equal(last.headers.get('ratelimit-policy'), '"per-key";q=5;w=60, "per-address";q=12;w=60');
        assert.match(last.headers.get('ratelimit') ?? '', new RegExp(`^"per-key";r=${4 - i};t=\\d+$`));
      }
    }
    assert.deepEqual(statuses, [202, 202, 202, 202, 202, 429, 429]);
    const body = (await last!.json()) as any;
    assert.equal(body.error.type, 'rate_limit_error');
    assert.equal(body.error.code, 'rate_limit_exceeded');
    assert.match(body.error.message, /5 requests per 60s for this API key/);
    const retryAfter = Number(last!.headers.get('retry-after'));
    assert.ok(retryAfter > 0 && retryAfter <= 60, `retry-after ${retryAfter}`);
    assert.match(last!.headers.get('ratelimit') ?? '', /^"per-key";r=0;t=\d+$/);
    assert.equal(last!.headers.get('x-ratelimit-remaining-requests'), '0');
    // Other endpoints have their own limits.
    assert.equal((await a.api('/v1/images/jobs', { key })).status, 200);
    const first = (await (await b.api('/v1/images/batches', { method: 'POST', key, json: { requests: [{ prompt: 'p' }] } })).json()) as any;
    assert.match(first.id, /^batch_/);
    assert.equal((await a.api('/v1/images/batches', { method: 'POST', key, json: { requests: [{ prompt: 'p' }] } })).status, 429);
  });

  test('a per-key override raises one key’s limit; the address limit still binds across keys', async () => {
    // 5 requests from this address count so far on generations: the 2 its key's limit refused do not
    // use up the address's quota (a key's refusals must not lock out its neighbours).
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await gen(i % 2 ? a : b, vip, `vip ${i}`)).status);
    assert.deepEqual(statuses, [202, 202, 202, 202, 202, 202, 202, 429], 'the address limit of 12 applies to every key');
    const res = await gen(a, vip, 'vip again');
    const body = (await res.json()) as any;
    assert.match(body.error.message, /12 requests per 60s for your address/);
    assert.match(res.headers.get('ratelimit') ?? '', /^"per-address";r=0;t=\d+$/);
  });

  test('the admin key is exempt', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await gen(i % 2 ? a : b, a.adminKey, `admin ${i}`)).status, 202);
    const res = await gen(a, a.adminKey, 'admin more');
    assert.equal(res.headers.get('ratelimit'), null);
  });

  test('refusals are counted in the metrics', async () => {
    const text = await (await fetch(`${a.url}/metrics`)).text();
    assert.match(text, /easel_rate_limited_total\{endpoint="generations",scope="per-key"\} \d+/);
  });
});
