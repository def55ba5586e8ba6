/**
 * Hardening: what an attacker or a careless client found on the way in, each as a test.
 * - keys: names unique among live keys, revocation everywhere at once, a configured admin key never printed;
 * - abuse: failed authentication limited per address, per-key limits checked before the address's;
 * - /files: a correctly signed link for a key outside storage is a 404, not a 500;
 * - tenants: internal addresses and raw connection errors only for admin keys (system, jobs, /ready).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { signFileKey } from '../../src/storage/local-storage.ts';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { ProcessGroup, writeConfig } from '../support/processes.ts';
import { startRedis } from '../support/redis.ts';
import type { RedisServer } from '../support/redis.ts';
import { startOpenAIStandin, DEFAULT_STANDIN_KEY } from '../support/openai-standin.ts';
import { until } from '../support/until.ts';

describe('API keys', () => {
  let easel: TestEasel;
  before(async () => {
    easel = await startEasel();
  });
  after(() => easel.close());

  test('names are unique among live keys (409), and free again once the key is revoked', async () => {
    const create = (name: string) => easel.api('/v1/keys', { method: 'POST', json: { name } });
    const first = await create('ci-bot');
    assert.equal(first.status, 201);
    const again = await create('ci-bot');
    const body = (await again.json()) as any;
    assert.equal(again.status, 409);
    assert.equal(body.error.code, 'key_name_taken');
    assert.equal(body.error.param, 'name');
    const id = ((await first.json()) as any).id;
    assert.equal((await easel.api(`/v1/keys/${id}/revoke`, { method: 'POST' })).status, 200);
    assert.equal((await create('ci-bot')).status, 201, 'a revoked key’s name can be used again');
  });

  test('a revoked key stops working at once and /v1/keys/current can no longer be read with it', async () => {
    const { key, secret } = await createApiKey(easel.runtime.keys, { name: 'short-lived' });
    assert.equal((await easel.api('/v1/keys/current', { key: secret })).status, 200);
    assert.equal((await easel.api(`/v1/keys/${key.id}/revoke`, { method: 'POST' })).status, 200);
    const res = await easel.api('/v1/keys/current', { key: secret });
    assert.equal(res.status, 401);
  });
});

describe('a configured admin key is never printed; a generated one once', () => {
  const group = new ProcessGroup();
  after(() => group.killAll());

  for (const configured of [true, false]) {
    test(configured ? 'EASEL_ADMIN_KEY set: not printed' : 'none set: printed once', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'easel-adminkey-'));
      try {
        const key = 'easel_sk_operator_chosen_0123456789abcdefghij';
        const proc = await group.spawn('serve', { dataDir: dir, port: 0, env: configured ? { EASEL_ADMIN_KEY: key } : {} });
        await proc.terminate();
        const logs = proc.logs();
        if (configured) {
          assert.ok(!logs.includes(key), 'the configured key does not appear in the output');
          assert.doesNotMatch(logs, /Admin API key/);
        } else {
          assert.equal(logs.match(/Admin API key \(shown once/g)?.length, 1);
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

describe('revocation reaches every API process through the event bus, not the key cache running out (two `easel api` on Redis)', () => {
  const group = new ProcessGroup();
  let redis: RedisServer | undefined;
  let dir: string;
  before(async () => {
    redis = await startRedis();
    dir = mkdtempSync(join(tmpdir(), 'easel-revoke-'));
  });
  after(async () => {
    await group.killAll();
    await redis?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('revoked through one, refused by the other', async (t) => {
    if (!redis) return t.skip('redis-server is not installed');
    const standin = await startOpenAIStandin({ strict: false });
    try {
      const admin = 'easel_sk_test_admin_key_0123456789abcdef';
      const configFile = writeConfig(join(dir, 'easel.yaml'), {
        dataDir: dir,
        redis: { url: redis.url },
        // Keys stay trusted for a minute: only the revocation event can make b refuse within the wait.
        auth: { adminKey: admin, keyCacheSeconds: 60 },
        backends: [{ type: 'openai', name: 'standin', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY }],
        models: [{ name: 'test-model', backend: 'standin', model: 'gpt-image-1', default: true }],
      });
      const a = await group.spawn('api', { configFile, port: 0, name: 'api-a' });
      const b = await group.spawn('api', { configFile, port: 0, name: 'api-b' });
      const call = (url: string, path: string, key: string, init: RequestInit = {}) => fetch(`${url}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, ...(init.headers ?? {}) } });
      const created = (await (await call(a.url!, '/v1/keys', admin, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'leaked' }) })).json()) as any;
      // Both processes have it cached as valid.
      assert.equal((await call(a.url!, '/v1/keys/current', created.key)).status, 200);
      assert.equal((await call(b.url!, '/v1/keys/current', created.key)).status, 200);
      const revokedAt = Date.now();
      assert.equal((await call(a.url!, `/v1/keys/${created.id}/revoke`, admin, { method: 'POST' })).status, 200);
      await until('process b to refuse the revoked key', async () => (await call(b.url!, '/v1/keys/current', created.key)).status === 401, 5000, 20);
      const took = Date.now() - revokedAt;
      assert.ok(took < 5000, `refused by the other process ${took} ms after the revoke`);
    } finally {
      await standin.close();
    }
  });
});

describe('abuse limits', () => {
  let easel: TestEasel;
  before(async () => {
    easel = await startEasel({
      overrides: {
        server: { trustProxy: true },
        rateLimits: {
          enabled: true,
          exemptAdmin: false,
          failedAuth: { perAddress: 5, windowSeconds: 60 },
          generations: { perKey: 1, perAddress: 3, windowSeconds: 60 },
          reads: { perKey: 0, perAddress: 0 },
        },
      },
    });
  });
  after(() => easel.close());

  const from = (ip: string, key: string, path = '/v1/models', init: RequestInit = {}) => fetch(`${easel.url}${path}`, { ...init, headers: { authorization: `Bearer ${key}`, 'x-forwarded-for': ip, ...(init.headers ?? {}) } });

  test('wrong keys from one address are limited (429 with Retry-After); other addresses are not slowed', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 8; i++) statuses.push((await from('203.0.113.7', `easel_sk_wrong_${i}`)).status);
    assert.deepEqual(statuses.slice(0, 5), [401, 401, 401, 401, 401]);
    assert.ok(statuses.slice(5).every((s) => s === 429), JSON.stringify(statuses));
    const limited = await from('203.0.113.7', easel.adminKey);
    assert.equal(limited.status, 429, 'the address is refused whatever key it now sends');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal(((await limited.json()) as any).error.code, 'rate_limit_exceeded');
    assert.equal((await from('198.51.100.9', easel.adminKey)).status, 200, 'another address with a valid key is served');
  });

  test('a request its key’s limit refuses does not use up its address’s quota', async () => {
    const a = (await createApiKey(easel.runtime.keys, { name: 'key-a' })).secret;
    const b = (await createApiKey(easel.runtime.keys, { name: 'key-b' })).secret;
    const gen = (key: string) => from('192.0.2.44', key, '/v1/images/generations', { method: 'POST', headers: { 'content-type': 'application/json', prefer: 'respond-async' }, body: JSON.stringify({ prompt: 'a quota test' }) });
    const aStatuses = [];
    for (let i = 0; i < 5; i++) aStatuses.push((await gen(a)).status);
    assert.deepEqual(aStatuses, [202, 429, 429, 429, 429]);
    // The address allows 3; key a used one. Key b's request is the address's second.
    assert.equal((await gen(b)).status, 202, 'key b is not refused for key a’s refused requests');
  });
});

describe('signed /files links for keys outside storage', () => {
  let easel: TestEasel;
  before(async () => {
    easel = await startEasel();
  });
  after(() => easel.close());

  test('`..` and absolute keys, correctly signed, are 404 image_not_found, never a 500', async () => {
    const secret = Buffer.from((await import('node:fs')).readFileSync(join(easel.dataDir, 'secrets', 'file-signing.key'), 'utf8').trim(), 'base64');
    for (const key of ['../secrets/file-signing.key', 'a/../../easel.db', '/etc/passwd', 'images/../../x']) {
      const expires = Math.floor(Date.now() / 1000) + 600;
      // Encoded so the URL parser leaves the dots and slashes for the server to decode.
      const path = key.split('/').map((seg) => (seg === '..' ? '%2E%2E' : encodeURIComponent(seg))).join('/').replace(/^\//, '%2F');
      const res = await fetch(`${easel.url}/files/${path}?expires=${expires}&signature=${signFileKey(secret, key, expires)}`);
      assert.ok(res.status === 404 || res.status === 403, `${key}: ${res.status}`);
      const body = (await res.json()) as any;
      assert.ok(body.error?.message, 'OpenAI’s error shape');
    }
  });
});

describe('tenants see no internal detail', () => {
  let easel: TestEasel;
  let tenant: string;
  before(async () => {
    const standin = await startOpenAIStandin({ strict: false });
    easel = await startEasel({
      existingStandin: standin,
      overrides: {
        backends: [
          { type: 'openai', name: 'standin', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY, listPrices: true },
          { type: 'openai', name: 'gone', baseUrl: 'http://127.0.0.1:9/v1', apiKey: 'x', maxRetries: 0, timeoutSeconds: 2 },
        ],
        models: [
          { name: 'test-model', backend: 'standin', model: 'gpt-image-1', default: true },
          { name: 'gone-model', backend: 'gone', model: 'gpt-image-1' },
        ],
        queue: { maxAttempts: 1 },
      },
    });
    tenant = (await createApiKey(easel.runtime.keys, { name: 'tenant' })).secret;
  });
  after(async () => {
    const standin = easel.standin;
    await easel.close();
    await standin.close();
  });

  const internal = /127\.0\.0\.1|:9\/|ECONNREFUSED|http:\/\//;

  test('a job that failed on an unreachable backend: the full error for admins, a plain one for its key', async () => {
    const res = await easel.api('/v1/images/generations', { method: 'POST', key: tenant, json: { prompt: 'x', model: 'gone-model', async: true } });
    const id = ((await res.json()) as any).id;
    const mine = await waitForJob(easel, id, { key: tenant });
    assert.equal(mine.status, 'failed');
    assert.doesNotMatch(JSON.stringify(mine.error), internal);
    assert.match(mine.error.message, new RegExp(id));
    const adminJob = ((await (await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'x', model: 'gone-model', async: true } })).json()) as any).id;
    const adminView = await waitForJob(easel, adminJob);
    assert.match(adminView.error.message, internal, 'an admin key sees the full error of its own job');
    const sync = await easel.api('/v1/images/generations', { method: 'POST', key: tenant, json: { prompt: 'y', model: 'gone-model' } });
    const body = (await sync.json()) as any;
    assert.ok(sync.status >= 500);
    assert.doesNotMatch(JSON.stringify(body), internal);
  });

  test('/v1/system: addresses and raw errors for admins only; job counts are the caller’s own', async () => {
    await easel.runtime.router.refreshHealth();
    const t = (await (await easel.api('/v1/system', { key: tenant })).json()) as any;
    assert.doesNotMatch(JSON.stringify(t), internal);
    const totalMine = Object.values(t.jobs as Record<string, number>).reduce((a, b) => a + b, 0);
    const listed = ((await (await easel.api('/v1/images/jobs?limit=100', { key: tenant })).json()) as any).data.length;
    const all = (await (await easel.api('/v1/system')).json()) as any;
    const totalAll = Object.values(all.jobs as Record<string, number>).reduce((a, b) => a + b, 0);
    assert.equal(totalMine, listed, 'the tenant’s own jobs');
    assert.ok(totalAll > totalMine, 'the admin key sees every key’s');
    const admin = (await (await easel.api('/v1/system')).json()) as any;
    assert.match(JSON.stringify(admin.backends), /127\.0\.0\.1|ECONNREFUSED|unreachable/, 'the admin key sees why a backend is down');
  });

  test('/ready (no key) says which check fails, not why', async () => {
    const res = await fetch(`${easel.url}/ready`);
    assert.doesNotMatch(await res.text(), internal);
  });
});

describe('deeply nested JSON is a 400 naming the field, never a 5xx', () => {
  let easel: TestEasel;
  before(async () => {
    easel = await startEasel();
  });
  after(() => easel.close());

  const deepObject = (n: number) => `${'{"a":'.repeat(n)}1${'}'.repeat(n)}`;
  const deepArray = (n: number) => `${'['.repeat(n)}${']'.repeat(n)}`;
  const raw = (path: string, body: string) => easel.api(path, { method: 'POST', headers: { 'content-type': 'application/json' }, body });

  for (const [what, nested] of [
    ['5,000 nested objects', deepObject(5000)],
    ['100,000 nested arrays', deepArray(100_000)],
  ] as const) {
    test(`${what} in provider_options, metadata, a batch request`, async () => {
      const cases: [string, string, RegExp][] = [
        ['/v1/images/generations', `{"prompt":"deep","provider_options":{"x":${nested}}}`, /provider_options|^$/],
        ['/v1/images/generations', `{"prompt":"deep","metadata":{"x":${nested}}}`, /metadata|^$/],
        ['/v1/images/batches', `{"requests":[{"prompt":"deep","provider_options":{"x":${nested}}}]}`, /requests\[0\]\.provider_options|^$/],
        ['/v1/images/drafts', `{"prompt":"deep","provider_options":${nested}}`, /provider_options|^$/],
      ];
      for (const [path, body, param] of cases) {
        const res = await raw(path, body);
        const answer = (await res.json()) as any;
        assert.equal(res.status, 400, `${path}: ${res.status} ${JSON.stringify(answer).slice(0, 200)}`);
        assert.match(answer.error.param ?? '', param);
      }
      assert.equal((await easel.api('/health')).status, 200);
    });
  }
});

test('invalid calendar dates in /v1/usage are 400 naming the parameter', async () => {
  const easel = await startEasel();
  try {
    for (const [q, param] of [['from=2026-02-31', 'from'], ['to=2026-13-01', 'to'], ['from=2026-00-10', 'from']]) {
      const res = await easel.api(`/v1/usage?${q}`);
      const body = (await res.json()) as any;
      assert.equal(res.status, 400, q);
      assert.equal(body.error.param, param);
    }
    assert.equal((await easel.api('/v1/usage?from=2024-02-29')).status, 200, 'a leap day is a date');
  } finally {
    await easel.close();
  }
});
