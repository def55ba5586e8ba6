import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Webhook } from 'standardwebhooks';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { openDatabase, migrate } from '../../src/store/database.ts';
import { SqlJobStore } from '../../src/store/sql-job-store.ts';
import { newJobId } from '../../src/core/ids.ts';
import { DomainError } from '../../src/core/errors.ts';
import { generateWebhookSecret, loadOrCreateWebhookSecret, signWebhook } from '../../src/webhooks/signing.ts';
import { decideOutcome } from '../../src/webhooks/dispatcher.ts';
import { postWebhook, parseRetryAfter } from '../../src/webhooks/http.ts';
import { WebhookService } from '../../src/webhooks/service.ts';
import { LocalEventBus } from '../../src/events/job-events.ts';
import { loadConfig } from '../../src/config/load.ts';
import { LocalStorage } from '../../src/storage/local-storage.ts';
import type { Resolver } from '../../src/net/ssrf.ts';
import { startReceiver, sleep, until } from './receiver.ts';
import type { Receiver } from './receiver.ts';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const OVERRIDES = { outbound: { allowNetworks: ['127.0.0.0/8', '::1/128'] }, webhooks: { initialBackoffSeconds: 0.2, secret: SECRET } };

async function submit(easel: TestEasel, body: Record<string, unknown>): Promise<any> {
  const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a webhook test', async: true, ...body } });
  assert.equal(res.status, 202, await res.clone().text());
  return res.json();
}

async function getJob(easel: TestEasel, id: string): Promise<any> {
  return (await easel.api(`/v1/images/jobs/${id}`)).json();
}

/** Waits until the job's webhook has settled (delivered or failed) as the API shows it. */
async function settledWebhook(easel: TestEasel, id: string, timeoutMs = 15_000): Promise<any> {
  return until(`webhook of ${id} to settle`, async () => {
    const job = await getJob(easel, id);
    return job.webhook && job.webhook.status !== 'pending' ? job : undefined;
  }, timeoutMs);
}

describe('signing', () => {
  test('signWebhook matches the Standard Webhooks test vector', () => {
    assert.equal(signWebhook(SECRET, 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}'), 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
    assert.equal(signWebhook(SECRET, 'msg_p5jXN8AQM9LWM0D4loKWxJek', '1614265330', Buffer.from('{"test": 2432232314}')), 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
  });

  test('a generated secret signs what standardwebhooks verifies', () => {
    const secret = generateWebhookSecret();
    assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
    const body = JSON.stringify({ type: 'image.job.succeeded', data: { id: 'job_x' } });
    const ts = Math.floor(Date.now() / 1000);
    const headers = { 'webhook-id': 'msg_1', 'webhook-timestamp': String(ts), 'webhook-signature': signWebhook(secret, 'msg_1', ts, body) };
    assert.deepEqual(new Webhook(secret).verify(body, headers), JSON.parse(body));
    assert.throws(() => new Webhook(generateWebhookSecret()).verify(body, headers));
  });

  test('the secret is generated once into the data folder, mode 0600', () => {
    const dir = mkdtempSync(join(tmpdir(), 'easel-whsec-'));
    try {
      const first = loadOrCreateWebhookSecret(dir);
      assert.equal(first.created, true);
      assert.match(first.secret, /^whsec_/);
      assert.equal(first.path, join(dir, 'secrets', 'webhook-secret'));
      assert.equal(statSync(first.path).mode & 0o777, 0o600);
      const again = loadOrCreateWebhookSecret(dir);
      assert.equal(again.created, false);
      assert.equal(again.secret, first.secret);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('retry policy', () => {
  const policy = { retryForMs: 60_000, initialBackoffMs: 1000, random: () => 0.5 };
  const row = (attempts: number, first: number | null) => ({ attempts, first_attempt_at: first });

  test('2xx delivers; 410 and a refused destination stop at once', () => {
    assert.equal(decideOutcome(row(0, null), { statusCode: 204, durationMs: 5 }, 1000, 1005, policy).status, 'delivered');
    assert.equal(decideOutcome(row(0, null), { statusCode: 410, durationMs: 5 }, 1000, 1005, policy).status, 'failed');
    assert.equal(decideOutcome(row(0, null), { error: 'refused: …', refused: true, durationMs: 1 }, 1000, 1001, policy).status, 'failed');
  });

  test('other failures back off exponentially (with jitter) until retryFor after the first attempt', () => {
    const t0 = 1_000_000;
    const a1 = decideOutcome(row(0, null), { statusCode: 500, durationMs: 5 }, t0, t0, policy);
    assert.equal(a1.status, 'pending');
    assert.equal(a1.nextAttemptAt, t0 + 1000);
    const a3 = decideOutcome(row(2, t0), { error: 'ECONNREFUSED', durationMs: 5 }, t0 + 5000, t0 + 5000, policy);
    assert.equal(a3.nextAttemptAt, t0 + 5000 + 4000);
    const jittered = decideOutcome(row(2, t0), { statusCode: 302, durationMs: 5 }, t0, t0, { ...policy, random: () => 0 });
    assert.equal(jittered.nextAttemptAt, t0 + 3200);
    // The last retry is pulled in to the deadline; an attempt at or after it fails the delivery.
    const late = decideOutcome(row(5, t0), { statusCode: 500, durationMs: 5 }, t0 + 59_000, t0 + 59_000, policy);
    assert.equal(late.nextAttemptAt, t0 + 60_000);
    assert.equal(decideOutcome(row(6, t0), { statusCode: 500, durationMs: 5 }, t0 + 60_000, t0 + 60_000, policy).status, 'failed');
  });

  test('retry-after on 429/503 is honoured', () => {
    const t0 = 1_000_000;
    const out = decideOutcome(row(0, null), { statusCode: 429, retryAfterMs: 30_000, durationMs: 5 }, t0, t0, policy);
    assert.equal(out.nextAttemptAt, t0 + 30_000);
    assert.equal(parseRetryAfter('7'), 7000);
    assert.equal(parseRetryAfter(new Date(Date.now() + 10_000).toUTCString())! > 8000, true);
    assert.equal(parseRetryAfter('soon'), undefined);
  });
});

describe('webhook deliveries (loopback receiver)', () => {
  let easel: TestEasel;
  let receiver: Receiver;

  before(async () => {
    receiver = await startReceiver(SECRET);
    easel = await startEasel({ overrides: OVERRIDES });
  });
  after(async () => {
    await easel.close();
    await receiver.close();
  });

  test('a finished job is POSTed, signed, with the job object and image URLs', async () => {
    receiver.respond(() => 200);
    const job = await submit(easel, { webhook_url: `${receiver.url}/hooks/easel`, n: 2, response_format: 'b64_json', metadata: { order: '42' } });
    const [hit] = await until('the delivery', () => (receiver.forJob(job.id).length ? receiver.forJob(job.id) : undefined));
    assert.equal(hit!.verified, true, hit!.verifyError);
    assert.equal(hit!.method, 'POST');
    assert.equal(hit!.path, '/hooks/easel');
    assert.equal(hit!.headers['content-type'], 'application/json');
    assert.match(String(hit!.headers['webhook-id']), /^msg_[0-9A-Z]{26}$/);
    assert.ok(Math.abs(Number(hit!.headers['webhook-timestamp']) - Date.now() / 1000) < 30);
    const payload = hit!.payload;
    assert.equal(payload.type, 'image.job.succeeded');
    assert.ok(!Number.isNaN(Date.parse(payload.timestamp)));
    assert.equal(payload.data.id, job.id);
    assert.equal(payload.data.object, 'image.job');
    assert.equal(payload.data.status, 'succeeded');
    assert.deepEqual(payload.data.metadata, { order: '42' });
    assert.equal(payload.data.webhook_url, `${receiver.url}/hooks/easel`);
    // Images always go by URL in the payload, even when the request asked for b64_json.
    assert.equal(payload.data.request.response_format, 'b64_json');
    assert.equal(payload.data.result.data.length, 2);
    for (const item of payload.data.result.data) {
      assert.equal(item.b64_json, undefined);
      const img = await fetch(item.url);
      assert.equal(img.status, 200);
      assert.equal(img.headers.get('content-type'), 'image/png');
    }

    const seen = await settledWebhook(easel, job.id);
    assert.equal(seen.webhook.url, `${receiver.url}/hooks/easel`);
    assert.equal(seen.webhook.status, 'delivered');
    assert.equal(seen.webhook.deliveries.length, 1);
    const d = seen.webhook.deliveries[0];
    assert.equal(d.id, hit!.headers['webhook-id']);
    assert.equal(d.type, 'image.job.succeeded');
    assert.equal(d.status, 'delivered');
    assert.equal(d.attempts.length, 1);
    assert.equal(d.attempts[0].status_code, 200);
    assert.equal(typeof d.attempts[0].duration_ms, 'number');
    assert.equal(typeof d.attempts[0].at, 'number');
    await sleep(300);
    assert.equal(receiver.forJob(job.id).length, 1, 'delivered exactly once');
  });

  test('a failed job is delivered as image.job.failed with its error', async () => {
    receiver.respond(() => 204);
    easel.standin.failNext(1, 400, { error: { message: 'Your request was rejected by the safety system.', type: 'image_generation_user_error', param: null, code: 'moderation_blocked' } });
    const job = await submit(easel, { webhook_url: `${receiver.url}/failed` });
    const [hit] = await until('the failure delivery', () => (receiver.forJob(job.id).length ? receiver.forJob(job.id) : undefined));
    assert.equal(hit!.verified, true, hit!.verifyError);
    assert.equal(hit!.payload.type, 'image.job.failed');
    assert.equal(hit!.payload.data.status, 'failed');
    assert.equal(hit!.payload.data.error.code, 'content_policy_violation');
    assert.equal(hit!.payload.data.result, null);
    const seen = await settledWebhook(easel, job.id);
    assert.equal(seen.webhook.status, 'delivered');
    assert.equal(seen.webhook.deliveries[0].attempts[0].status_code, 204);
  });

  test('a canceled job is delivered as image.job.canceled', async () => {
    receiver.respond(() => 200);
    easel.standin.setLatency(5000);
    try {
      const job = await submit(easel, { webhook_url: `${receiver.url}/canceled` });
      const res = await easel.api(`/v1/images/jobs/${job.id}/cancel`, { method: 'POST' });
      assert.equal(res.status, 200);
      const [hit] = await until('the cancel delivery', () => (receiver.forJob(job.id).length ? receiver.forJob(job.id) : undefined));
      assert.equal(hit!.verified, true, hit!.verifyError);
      assert.equal(hit!.payload.type, 'image.job.canceled');
      assert.equal(hit!.payload.data.status, 'canceled');
    } finally {
      easel.standin.setLatency(0);
    }
  });

  test('a 500 is retried with backoff: 500, 500, 200 → delivered, three attempts on the job', async () => {
    const calls = new Map<string, number>();
    receiver.respond((r) => {
      const id = String(r.headers['webhook-id']);
      const n = (calls.get(id) ?? 0) + 1;
      calls.set(id, n);
      return n <= 2 ? { status: 500, body: 'try later' } : 200;
    });
    const job = await submit(easel, { webhook_url: `${receiver.url}/flaky` });
    const seen = await settledWebhook(easel, job.id);
    const hits = receiver.forJob(job.id);
    assert.equal(hits.length, 3);
    assert.ok(hits.every((h) => h.verified), hits.map((h) => h.verifyError).join());
    // Same webhook-id on every attempt; each attempt is signed afresh.
    assert.equal(new Set(hits.map((h) => h.headers['webhook-id'])).size, 1);
    // Backoff: 0.2 s then 0.4 s, ±20%.
    assert.ok(hits[1]!.at - hits[0]!.at >= 150, `first retry after ${hits[1]!.at - hits[0]!.at} ms`);
    assert.ok(hits[2]!.at - hits[1]!.at >= 300, `second retry after ${hits[2]!.at - hits[1]!.at} ms`);
    assert.equal(seen.webhook.status, 'delivered');
    const d = seen.webhook.deliveries[0];
    assert.equal(d.status, 'delivered');
    assert.equal(d.id, hits[0]!.headers['webhook-id']);
    assert.deepEqual(d.attempts.map((a: any) => a.attempt), [1, 2, 3]);
    assert.deepEqual(d.attempts.map((a: any) => a.status_code), [500, 500, 200]);
    // The job list shows the same.
    const list = (await (await easel.api('/v1/images/jobs?limit=10')).json()) as any;
    const listed = list.data.find((j: any) => j.id === job.id);
    assert.equal(listed.webhook.deliveries[0].attempts.length, 3);
  });

  test('410 Gone stops at once', async () => {
    receiver.respond(() => 410);
    const job = await submit(easel, { webhook_url: `${receiver.url}/gone` });
    const seen = await settledWebhook(easel, job.id);
    assert.equal(seen.webhook.status, 'failed');
    assert.deepEqual(seen.webhook.deliveries[0].attempts.map((a: any) => a.status_code), [410]);
    await sleep(600);
    assert.equal(receiver.forJob(job.id).length, 1);
  });

  test('redirects are not followed (a 3xx is a failed attempt)', async () => {
    let first = true;
    receiver.respond((r) => {
      if (r.path === '/moved' && first) {
        first = false;
        return { status: 307, headers: { location: `${receiver.url}/elsewhere` } };
      }
      return 200;
    });
    const job = await submit(easel, { webhook_url: `${receiver.url}/moved` });
    const seen = await settledWebhook(easel, job.id);
    assert.deepEqual(seen.webhook.deliveries[0].attempts.map((a: any) => a.status_code), [307, 200]);
    assert.deepEqual(receiver.forJob(job.id).map((h) => h.path), ['/moved', '/moved']);
  });

  test('retry-after on a 503 is honoured', async () => {
    let first = true;
    receiver.respond(() => {
      if (first) {
        first = false;
        return { status: 503, headers: { 'retry-after': '1' } };
      }
      return 200;
    });
    const job = await submit(easel, { webhook_url: `${receiver.url}/busy` });
    await settledWebhook(easel, job.id);
    const hits = receiver.forJob(job.id);
    assert.equal(hits.length, 2);
    assert.ok(hits[1]!.at - hits[0]!.at >= 950, `retried after ${hits[1]!.at - hits[0]!.at} ms`);
  });

  test('an unreachable receiver is retried too (connection errors are recorded)', async () => {
    const gone = await startReceiver(SECRET);
    const url = `${gone.url}/down`;
    await gone.close();
    const job = await submit(easel, { webhook_url: url });
    await until('two failed attempts', async () => {
      const seen = await getJob(easel, job.id);
      return (seen.webhook?.deliveries[0]?.attempts.length ?? 0) >= 2 ? seen : undefined;
    });
    const seen = await getJob(easel, job.id);
    const a = seen.webhook.deliveries[0].attempts[0];
    assert.equal(a.status_code, undefined);
    assert.match(a.error, /ECONNREFUSED/);
    assert.equal(seen.webhook.deliveries[0].status, 'pending');
    assert.equal(typeof seen.webhook.deliveries[0].next_attempt_at, 'number');
  });

  test('a job without webhook_url has no webhook field and no delivery', async () => {
    const job = await submit(easel, {});
    const res = await easel.api(`/v1/images/jobs/${job.id}`);
    const seen = (await res.json()) as any;
    assert.equal(seen.webhook, undefined);
    assert.equal(seen.webhook_url, null);
  });
});

describe('the sweep that creates deliveries', () => {
  test('a job that ends with a webhook wakes it at once; one without (or many without) costs no database probe', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'easel-wh-sweep-'));
    const mdb = openDatabase(join(dir, 'easel.db'));
    const events = new LocalEventBus();
    const config = loadConfig({ env: {}, overrides: OVERRIDES });
    // The recovery sweep is far away: only terminal events can wake the sweep during this test.
    const service = new WebhookService({
      config, mdb, store: new SqlJobStore(mdb), storage: new LocalStorage({ dir: join(dir, 'images'), publicBaseUrl: 'http://127.0.0.1:1', signingSecret: 'test' }), events,
      log: pino({ level: 'silent' }), dataDir: dir, deliver: true, sweepIntervalMs: 3_600_000,
    });
    try {
      await migrate(mdb);
      let probes = 0;
      const unswept = service.deliveries.unsweptJobs.bind(service.deliveries);
      service.deliveries.unsweptJobs = (limit: number) => (probes++, unswept(limit));
      await service.start();
      await until('the start-up sweep', () => probes === 1);
      const end = (webhook: boolean | undefined, status: 'succeeded' | 'failed' | 'canceled' = 'succeeded') =>
        events.publish({ type: 'status', jobId: newJobId(), status, at: Date.now(), ...(webhook === undefined ? {} : { webhook }) });
      for (let i = 0; i < 20; i++) end(false, i % 2 ? 'failed' : 'canceled');
      events.publish({ type: 'status', jobId: newJobId(), status: 'running', at: Date.now(), webhook: true });
      await sleep(200);
      assert.equal(probes, 1, 'jobs without a webhook and non-terminal statuses do not probe');
      end(true);
      await until('a sweep for the job with a webhook', () => probes === 2);
      await sleep(100);
      end(undefined, 'canceled');
      await until('a sweep when the publisher could not tell', () => probes === 3);
    } finally {
      await service.stop(0);
      await events.close();
      await mdb.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deliveries survive a restart', () => {
  let standin: OpenAIStandin;
  let receiver: Receiver;
  const dirs: string[] = [];
  const easels: TestEasel[] = [];

  before(async () => {
    standin = await startOpenAIStandin({ strict: false });
    receiver = await startReceiver(SECRET);
  });
  after(async () => {
    for (const e of easels) await e.close().catch(() => {});
    await receiver.close();
    await standin.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  const start = async (dataDir: string) => {
    const e = await startEasel({ overrides: OVERRIDES, existingStandin: standin, dataDir });
    easels.push(e);
    return e;
  };
  const newDir = () => {
    const d = mkdtempSync(join(tmpdir(), 'easel-wh-restart-'));
    dirs.push(d);
    return d;
  };

  test('stopped while the receiver is down, delivered by the next process; same webhook-id', async () => {
    const dataDir = newDir();
    receiver.respond(() => 503);
    const first = await start(dataDir);
    const job = await submit(first, { webhook_url: `${receiver.url}/restart` });
    await until('a failed attempt', () => receiver.forJob(job.id).length >= 1);
    await first.close();
    const failedBefore = receiver.forJob(job.id).length;

    receiver.respond(() => 200);
    await sleep(300);
    assert.equal(receiver.forJob(job.id).length, failedBefore, 'nothing is sent while no easel runs');
    const second = await start(dataDir);
    const seen = await settledWebhook(second, job.id);
    const hits = receiver.forJob(job.id);
    assert.equal(hits.length, failedBefore + 1);
    assert.ok(hits.every((h) => h.verified));
    assert.equal(new Set(hits.map((h) => h.headers['webhook-id'])).size, 1, 'one webhook-id across processes');
    assert.equal(seen.webhook.status, 'delivered');
    const codes = seen.webhook.deliveries[0].attempts.map((a: any) => a.status_code);
    assert.deepEqual(codes, [...new Array(failedBefore).fill(503), 200]);
  });

  test('a job that ended while no worker could create its delivery is found by the recovery sweep', async () => {
    const dataDir = newDir();
    receiver.respond(() => 200);
    // A first start creates and migrates the database; then stop it.
    const first = await start(dataDir);
    await first.close();
    // The job ends with no event and no delivery row, as if its process died right after the job ended.
    const mdb = openDatabase(join(dataDir, 'easel.db'));
    const store = new SqlJobStore(mdb);
    const id = newJobId();
    const keys = await mdb.db.selectFrom('api_keys').select('id').execute();
    await store.createJob({
      id,
      keyId: keys[0]!.id as string,
      kind: 'generation',
      priority: 'normal',
      model: 'test-model',
      request: { prompt: 'orphan', n: 1, size: { width: 64, height: 64 }, responseFormat: 'url', outputFormat: 'png' } as any,
      metadata: null,
      webhookUrl: `${receiver.url}/orphan`,
      idempotencyKey: null,
    });
    await store.startAttempt(id, 'standin');
    await store.failJob(id, null, { code: 'worker_lost', message: 'the process died' });
    await mdb.close();

    const second = await start(dataDir);
    const seen = await settledWebhook(second, id);
    assert.equal(seen.webhook.status, 'delivered');
    const hits = receiver.forJob(id);
    assert.equal(hits.length, 1);
    assert.equal(hits[0]!.verified, true);
    assert.equal(hits[0]!.payload.type, 'image.job.failed');
    assert.equal(hits[0]!.payload.data.error.code, 'worker_lost');
  });
});

describe('SSRF refusals (private addresses not allowed)', () => {
  let easel: TestEasel;
  before(async () => {
    // API only: nothing here should ever run or be delivered.
    easel = await startEasel({ overrides: { webhooks: { secret: SECRET } }, roles: { api: true, worker: false } });
  });
  after(() => easel.close());

  const refusals: [string, string, RegExp][] = [
    ['loopback IPv4', 'http://127.0.0.1:9/hook', /127\.0\.0\.1 is a loopback address/],
    ['private 10/8', 'http://10.0.0.1/hook', /10\.0\.0\.1 is a private address/],
    ['link-local metadata', 'http://169.254.169.254/latest/meta-data/', /169\.254\.169\.254 is a cloud metadata endpoint/],
    ['IPv6 loopback', 'http://[::1]/hook', /::1 is a loopback address/],
    ['IPv4-mapped IPv6 loopback', 'http://[::ffff:127.0.0.1]/hook', /loopback/],
    ['a name resolving to loopback', 'http://localhost:9/hook', /localhost resolves to .*loopback/],
  ];
  for (const [name, url, pattern] of refusals) {
    test(`${name}: 400 naming webhook_url`, async () => {
      const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'x', async: true, webhook_url: url } });
      assert.equal(res.status, 400);
      const body = (await res.json()) as any;
      assert.equal(body.error.param, 'webhook_url');
      assert.equal(body.error.code, 'invalid_webhook_url');
      assert.equal(body.error.type, 'invalid_request_error');
      assert.match(body.error.message, /webhook_url/);
      assert.match(body.error.message, pattern);
    });
  }

  test('nothing was accepted', async () => {
    const list = (await (await easel.api('/v1/images/jobs')).json()) as any;
    assert.equal(list.data.length, 0);
  });

  test('a host name resolving to 10.x is refused (injected resolver)', async () => {
    const resolver: Resolver = async (host) => (host === 'hooks.internal.example' ? [{ address: '10.20.30.40', family: 4 }] : [{ address: '93.184.216.34', family: 4 }]);
    const rt = easel.runtime;
    const service = new WebhookService({ config: rt.config, mdb: rt.mdb, store: rt.store, storage: rt.storage, events: rt.events, log: rt.log, dataDir: easel.dataDir, deliver: false, resolver });
    await assert.rejects(service.checkWebhookUrl('https://hooks.internal.example/easel'), (err: unknown) => {
      assert.ok(err instanceof DomainError);
      assert.equal(err.kind, 'invalid');
      assert.equal(err.param, 'webhook_url');
      assert.equal(err.code, 'invalid_webhook_url');
      assert.match(err.message, /hooks\.internal\.example resolves to 10\.20\.30\.40, a private address/);
      return true;
    });
    await service.checkWebhookUrl('https://hooks.example.com/easel');
  });

  test('at delivery time, a name that now resolves to a private address is refused and nothing is sent', async () => {
    const receiver = await startReceiver(SECRET);
    let answer = '93.184.216.34';
    const resolver: Resolver = async () => [{ address: answer, family: 4 }];
    const rt = easel.runtime;
    const service = new WebhookService({ config: rt.config, mdb: rt.mdb, store: rt.store, storage: rt.storage, events: rt.events, log: pino({ level: 'silent' }), dataDir: easel.dataDir, deliver: true, resolver });
    try {
      const url = `http://rebind.example:${receiver.port}/hook`;
      await service.checkWebhookUrl(url); // public at submission…
      answer = '127.0.0.1'; // …loopback at delivery (DNS rebinding)
      const id = newJobId();
      const key = (await rt.mdb.db.selectFrom('api_keys').select('id').executeTakeFirstOrThrow()).id as string;
      await rt.store.createJob({ id, keyId: key, kind: 'generation', priority: 'normal', model: 'test-model', request: { prompt: 'x', n: 1, size: { width: 64, height: 64 }, responseFormat: 'url', outputFormat: 'png' } as any, metadata: null, webhookUrl: url, idempotencyKey: null });
      await rt.store.cancelJob(id);
      await service.start();
      const info = await until('the refused delivery', async () => {
        const i = await service.webhookInfo(id);
        return i.status === 'failed' ? i : undefined;
      });
      assert.equal(info.deliveries[0]!.attempts.length, 1);
      assert.match(info.deliveries[0]!.attempts[0]!.error!, /refused: rebind\.example resolves to 127\.0\.0\.1, a loopback address/);
      assert.equal(receiver.received.length, 0);
    } finally {
      await service.stop(1000);
      await receiver.close();
    }
  });

  test('postWebhook refuses private IP literals before connecting', async () => {
    const res = await postWebhook('http://169.254.169.254/latest', '{}', {}, { timeoutMs: 1000 });
    assert.equal(res.refused, true);
    assert.match(res.error!, /metadata endpoint/);
    const linkLocal = await postWebhook('http://169.254.1.1/latest', '{}', {}, { timeoutMs: 1000 });
    assert.equal(linkLocal.refused, true);
    assert.match(linkLocal.error!, /link-local/);
  });
});
