/**
 * The durable delivery table on SQLite and Postgres: idempotent creation (fast path and sweep racing),
 * disjoint claims by concurrent processes, lease-fenced recording, and the sweep's partial-index query.
 * Plus an end-to-end delivery with retries on Postgres.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { newJobId, newKeyId } from '../../src/core/ids.ts';
import type { NewJob } from '../../src/core/job.ts';
import { migrate, openDatabase } from '../../src/store/database.ts';
import type { MetadataDb } from '../../src/store/database.ts';
import { SqlJobStore } from '../../src/store/sql-job-store.ts';
import { WebhookDeliveryStore } from '../../src/webhooks/delivery-store.ts';
import { newMessageId } from '../../src/webhooks/service.ts';
import { startEasel } from '../support/easel.ts';
import { startPostgres } from '../support/postgres.ts';
import { startReceiver, until } from './receiver.ts';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

interface Target {
  url: string;
  cleanup(): Promise<void>;
}

function makeJob(webhookUrl: string | null): NewJob {
  return {
    id: newJobId(),
    keyId: newKeyId(),
    kind: 'generation',
    priority: 'normal',
    model: 'test-model',
    request: { prompt: 'x', n: 1, size: { width: 64, height: 64 }, responseFormat: 'url', outputFormat: 'png' },
    metadata: null,
    webhookUrl,
    idempotencyKey: null,
  };
}

function defineSuite(name: string, target: () => Promise<Target>): void {
  describe(name, () => {
    let t: Target;
    let a: MetadataDb;
    let b: MetadataDb;
    let jobs: SqlJobStore;
    let storeA: WebhookDeliveryStore;
    let storeB: WebhookDeliveryStore;

    before(async () => {
      t = await target();
      a = openDatabase(t.url);
      await migrate(a);
      // A second handle stands in for a second process on Postgres. SQLite's driver is synchronous, so two
      // handles in one process would deadlock on the write lock; there one handle serialises them anyway.
      b = a.dialect === 'postgres' ? openDatabase(t.url) : a;
      jobs = new SqlJobStore(a);
      storeA = new WebhookDeliveryStore(a);
      storeB = new WebhookDeliveryStore(b);
    });
    after(async () => {
      await a.close();
      if (b !== a) await b.close();
      await t.cleanup();
    });

    const finishedJob = async (webhookUrl: string | null) => {
      const job = await jobs.createJob(makeJob(webhookUrl));
      await jobs.cancelJob(job.id);
      return job.id;
    };

    test('the sweep sees finished, unswept jobs with a webhook only', async () => {
      const withHook = await finishedJob('https://hooks.example.com/a');
      await finishedJob(null);
      const running = await jobs.createJob(makeJob('https://hooks.example.com/b'));
      const ids = await storeA.unsweptJobs(100);
      assert.deepEqual(ids, [withHook]);
      assert.ok(!ids.includes(running.id));
      await storeA.createDeliveries([{ id: newMessageId(), jobId: withHook, eventType: 'image.job.canceled', url: 'https://hooks.example.com/a', payload: '{}' }]);
      assert.deepEqual(await storeA.unsweptJobs(100), []);
    });

    test('creating the same (job, event) twice, from two processes at once, keeps one delivery', async () => {
      const jobId = await finishedJob('https://hooks.example.com/c');
      const mk = () => ({ id: newMessageId(), jobId, eventType: 'image.job.canceled', url: 'https://hooks.example.com/c', payload: '{"n":1}' });
      await Promise.all([storeA.createDeliveries([mk()]), storeB.createDeliveries([mk()]), storeA.createDeliveries([mk()])]);
      const { deliveries } = await storeA.deliveriesForJob(jobId);
      assert.equal(deliveries.length, 1);
    });

    test('concurrent claims are disjoint, and only the lease holder records an attempt', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 10; i++) {
        const jobId = await finishedJob(`https://hooks.example.com/${i}`);
        const id = newMessageId();
        ids.push(id);
        await storeA.createDeliveries([{ id, jobId, eventType: 'image.job.canceled', url: 'https://hooks.example.com/x', payload: '{}' }]);
      }
      const [ra, rb] = await Promise.all([storeA.claimDue('A', 50, 60_000), storeB.claimDue('B', 50, 60_000)]);
      const claimed = [...ra.map((r) => r.id), ...rb.map((r) => r.id)];
      assert.equal(new Set(claimed).size, claimed.length, 'no delivery claimed twice');
      for (const id of ids) assert.ok(claimed.includes(id), `${id} claimed`);
      // Leased: nothing more to claim.
      assert.equal((await storeA.claimDue('C', 50, 60_000)).length, 0);

      const row = ra[0] ?? rb[0]!;
      const holder = ra[0] ? 'A' : 'B';
      const outcome = { at: Date.now(), statusCode: 500, error: null, durationMs: 12, status: 'pending' as const, nextAttemptAt: Date.now() + 60_000 };
      assert.equal(await storeA.recordAttempt(row, 'someone-else', outcome), false);
      assert.equal(await storeA.recordAttempt(row, holder, outcome), true);
      // A stale second write of the same attempt is fenced out too.
      assert.equal(await storeA.recordAttempt(row, holder, outcome), false);
      const { deliveries, attempts } = await storeA.deliveriesForJob(row.job_id);
      assert.equal(deliveries[0]!.attempts, 1);
      assert.equal(deliveries[0]!.status, 'pending');
      assert.equal(deliveries[0]!.lease_owner, null);
      assert.equal(deliveries[0]!.first_attempt_at, outcome.at);
      assert.equal(attempts.length, 1);
      assert.equal(attempts[0]!.status_code, 500);
      assert.equal(attempts[0]!.duration_ms, 12);
      // Not due yet.
      assert.ok(!(await storeA.claimDue('C', 50, 60_000)).some((r) => r.id === row.id));
    });

    test('an expired lease (a crashed process) can be claimed again; a handed-back one at once', async () => {
      const jobId = await finishedJob('https://hooks.example.com/lease');
      const id = newMessageId();
      await storeA.createDeliveries([{ id, jobId, eventType: 'image.job.canceled', url: 'https://hooks.example.com/lease', payload: '{}' }]);
      const first = await storeA.claimDue('A', 100, 50);
      assert.ok(first.some((r) => r.id === id));
      await new Promise((r) => setTimeout(r, 80));
      const again = await storeB.claimDue('B', 100, 60_000);
      assert.ok(again.some((r) => r.id === id));
      await storeB.releaseLeases('B', [id]);
      const third = await storeA.claimDue('A', 100, 60_000);
      assert.ok(third.some((r) => r.id === id));
    });
  });
}

defineSuite('webhook deliveries on SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-wh-store-'));
  return { url: join(dir, 'easel.db'), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

const postgres = await startPostgres();
if (postgres) {
  const pg2 = await startPostgres();
  defineSuite('webhook deliveries on Postgres', async () => ({ url: postgres.url, cleanup: () => postgres.stop() }));

  describe('end to end on Postgres', () => {
    test('500 then 200, verified, attempts on the job', async () => {
      const receiver = await startReceiver(SECRET);
      const easel = await startEasel({
        overrides: { database: { url: pg2!.url }, outbound: { allowNetworks: ['127.0.0.0/8'] }, webhooks: { initialBackoffSeconds: 0.2, secret: SECRET } },
      });
      try {
        let n = 0;
        receiver.respond(() => (++n === 1 ? 500 : 200));
        const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'pg', async: true, webhook_url: `${receiver.url}/pg` } });
        const job = (await res.json()) as any;
        const seen = await until('delivery on Postgres', async () => {
          const j = (await (await easel.api(`/v1/images/jobs/${job.id}`)).json()) as any;
          return j.webhook?.status === 'delivered' ? j : undefined;
        });
        assert.deepEqual(seen.webhook.deliveries[0].attempts.map((x: any) => x.status_code), [500, 200]);
        assert.ok(receiver.forJob(job.id).every((h) => h.verified));
      } finally {
        await easel.close();
        await receiver.close();
        await pg2!.stop();
      }
    });
  });
} else {
  describe('webhook deliveries on Postgres', { skip: 'Postgres binaries (initdb, pg_ctl) not found' }, () => {
    test('skipped', () => {});
  });
}
