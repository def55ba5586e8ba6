/**
 * Budgets that cannot be overspent, on SQLite and on Postgres: 100 concurrent requests against a
 * budget that fits 10 admit exactly 10, the ledger never goes above the limit, failed jobs release
 * what they held, and group budgets bind every key of the group.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { BudgetLedger, dayPeriod, toMicros } from '../../src/budgets/ledger.ts';
import type { LedgerRow } from '../../src/budgets/ledger.ts';
import { migrate, openDatabase } from '../../src/store/database.ts';
import { SqlJobStore } from '../../src/store/sql-job-store.ts';
import { newJobId } from '../../src/core/ids.ts';
import type { MetadataDb } from '../../src/store/database.ts';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { startPostgres } from '../support/postgres.ts';
import { until } from '../support/until.ts';

const PRICE = 0.016; // dall-e-2 at 256x256 in the default price table
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const moderationBlocked = { error: { message: 'Your request was rejected by the safety system.', type: 'image_generation_user_error', param: null, code: 'moderation_blocked' } };

function suite(name: string, databaseUrl: () => Promise<{ url: string | undefined; stop(): Promise<void> }>) {
  describe(name, () => {
    let db: { url: string | undefined; stop(): Promise<void> };

    before(async () => {
      db = await databaseUrl();
    });
    after(() => db.stop());

    test('the ledger itself: 100 concurrent reservations against room for 10 → exactly 10', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'easel-ledger-'));
      const mdb: MetadataDb = openDatabase(db.url ?? join(dir, 'easel.db'));
      try {
        await migrate(mdb);
        const ledger = new BudgetLedger(mdb);
        const scope = `key:ledger_${Date.now()}`;
        const row: LedgerRow = { scope, period: dayPeriod(new Date()).period, limitMicros: toMicros(1), label: 'test budget', resetsAt: new Date(Date.now() + 86_400_000) };
        const second: LedgerRow = { ...row, scope: `group:g_${Date.now()}`, limitMicros: toMicros(5) };
        const results = await Promise.all(Array.from({ length: 100 }, (_, i) => ledger.reserve(`job_l${i}`, 'k', [row, second], toMicros(0.1))));
        assert.equal(results.filter((r) => r.ok).length, 10);
        const refused = results.find((r) => !r.ok);
        assert.ok(refused && !refused.ok && refused.row.scope === scope);
        const [state, groupState] = await ledger.state([row, second]);
        assert.equal(state!.reservedMicros, toMicros(1));
        assert.equal(groupState!.reservedMicros, toMicros(1), 'a refused reservation holds nothing on any row');
        // Settle half (one above its estimate: charged at most the reservation), release the rest, concurrently and twice.
        const held = results.map((r, i) => (r.ok ? `job_l${i}` : null)).filter((x): x is string => !!x);
        const ends = await Promise.all([
          ...held.slice(0, 5).map((id, i) => ledger.settle(id, i === 0 ? toMicros(0.3) : toMicros(0.08))),
          ...held.slice(0, 5).map((id, i) => ledger.settle(id, i === 0 ? toMicros(0.3) : toMicros(0.08))),
          ...held.slice(5).map((id) => ledger.release(id)),
          ...held.slice(5).map((id) => ledger.release(id)),
        ]);
        assert.equal(ends.filter(Boolean).length, 10, 'each reservation ends exactly once');
        const [after1] = await ledger.state([row]);
        assert.equal(after1!.reservedMicros, 0);
        assert.ok(after1!.spentMicros <= row.limitMicros);
        assert.equal(after1!.spentMicros, toMicros(0.1) + 4 * toMicros(0.08));
        const over = await ledger.reservation(held[0]!);
        assert.equal(over?.chargedUsd, 0.1);
        assert.equal(over?.actualUsd, 0.3, 'the real cost is kept on the reservation');
      } finally {
        await mdb.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    test('the sweep settles reservations of jobs that ended without a worker settling them', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'easel-sweep-'));
      const mdb: MetadataDb = openDatabase(db.url ?? join(dir, 'easel.db'));
      try {
        await migrate(mdb);
        const ledger = new BudgetLedger(mdb);
        const store = new SqlJobStore(mdb);
        const row: LedgerRow = { scope: `key:sweep_${Date.now()}`, period: dayPeriod(new Date()).period, limitMicros: toMicros(1), label: 'sweep budget', resetsAt: new Date(Date.now() + 86_400_000) };
        const job = (id: string) => store.createJob({ id, keyId: 'k', kind: 'generation', priority: 'normal', model: 'm', request: { prompt: 'p', n: 1, responseFormat: 'url', outputFormat: 'png' }, metadata: null, webhookUrl: null, idempotencyKey: null });
        const [canceled, done, live, orphan] = [newJobId(), newJobId(), newJobId(), newJobId()];
        for (const id of [canceled, done, live, orphan]) assert.ok((await ledger.reserve(id, 'k', [row], toMicros(0.1))).ok);
        await job(canceled);
        await store.cancelJob(canceled);
        await job(done);
        const started = await store.startAttempt(done, 'b');
        await store.completeJob(done, started!.attempt, { result: { images: [] }, images: [], costUsd: 0.07 });
        await job(live);
        assert.equal(await ledger.sweep(60_000), 2, 'the canceled and the finished job; the orphan is too young');
        assert.equal(await ledger.sweep(0), 1, 'the orphan (no job ever came) once old enough');
        assert.equal((await ledger.reservation(canceled))?.status, 'released');
        assert.equal((await ledger.reservation(done))?.chargedUsd, 0.07);
        assert.equal((await ledger.reservation(live))?.status, 'held');
        const [s] = await ledger.state([row]);
        assert.equal(s!.spentMicros, toMicros(0.07));
        assert.equal(s!.reservedMicros, toMicros(0.1));
      } finally {
        await mdb.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    describe('through the API', () => {
      let easel: TestEasel;
      before(async () => {
        easel = await startEasel({
          overrides: {
            ...(db.url ? { database: { url: db.url } } : {}),
            budgets: {
              keys: { budgeted: { dailyUsd: 10 * PRICE }, flaky: { dailyUsd: 10 * PRICE, monthlyUsd: 100 }, 'budgeted-cancel': { dailyUsd: PRICE } },
              groups: { team: { keys: ['alice', 'bob'], dailyUsd: 3 * PRICE } },
            },
            worker: { concurrency: 16 },
          },
          standin: { latencyMs: 100 },
        });
      });
      after(() => easel.close());

      const submit = (key: string, prompt: string) =>
        easel.api('/v1/images/generations', { method: 'POST', key, json: { prompt, model: 'dall-e-2', size: '256x256', async: true } });

      test('100 concurrent requests against a budget that fits 10: exactly 10 admitted, ledger never above the limit', async () => {
        const { secret, key } = await createApiKey(easel.runtime.keys, { name: 'budgeted' });
        const rows = easel.runtime.budgets.rows(key);
        assert.equal(rows.length, 1);
        const limit = rows[0]!.limitMicros;
        let samples = 0;
        let worst = 0;
        let sampling = true;
        const sampler = (async () => {
          while (sampling) {
            const [s] = await easel.runtime.budgets.ledger.state(rows);
            worst = Math.max(worst, s!.spentMicros + s!.reservedMicros);
            samples++;
            await sleep(2);
          }
        })();
        const responses = await Promise.all(Array.from({ length: 100 }, (_, i) => submit(secret, `budget burst ${i}`)));
        const bodies = await Promise.all(responses.map((r) => r.json() as Promise<any>));
        const admitted = responses.map((r, i) => (r.status === 202 ? bodies[i].id : null)).filter(Boolean) as string[];
        const refused = responses.filter((r) => r.status === 429);
        assert.equal(admitted.length, 10);
        assert.equal(refused.length, 90);
        const refusal = bodies[responses.findIndex((r) => r.status === 429)];
        assert.equal(refusal.error.code, 'insufficient_quota');
        assert.equal(refusal.error.type, 'insufficient_quota');
        assert.match(refusal.error.message, /key 'budgeted' daily budget of \$0\.16 has \$0\.\d+ left/);
        assert.match(refusal.error.message, /needs an estimated \$0\.016/);
        assert.equal(refused[0]!.headers.get('x-should-retry'), 'false');
        assert.ok(refused[0]!.headers.get('x-easel-budget-remaining-usd'));

        const jobs = await Promise.all(admitted.map((id) => waitForJob(easel, id, { key: secret })));
        assert.ok(jobs.every((j) => j.status === 'succeeded'));
        await until('the reservation to be released', async () => (await easel.runtime.budgets.ledger.state(rows))[0]!.reservedMicros === 0);
        sampling = false;
        await sampler;
        assert.ok(samples > 5);
        assert.ok(worst <= limit, `ledger reached ${worst} > limit ${limit}`);
        const [end] = await easel.runtime.budgets.ledger.state(rows);
        assert.equal(end!.reservedMicros, 0, 'every reservation was settled');
        assert.equal(end!.spentMicros, limit);
        // The job shows what it cost and what its budget did (settled just after the job ends).
        jobs[0] = await waitForJob(easel, jobs[0].id, { key: secret });
        assert.equal(jobs[0].cost.usd, PRICE);
        assert.equal(jobs[0].cost.estimate_usd, PRICE);
        assert.deepEqual(jobs[0].cost.budget, { status: 'settled', reserved_usd: PRICE, charged_usd: PRICE });
        // Usage shows the same money and the budget's state.
        const usage = (await (await easel.api('/v1/usage', { key: secret })).json()) as any;
        assert.equal(usage.totals.images, 10);
        assert.equal(usage.totals.cost_usd, 0.16);
        assert.equal(usage.budgets[0].remaining_usd, 0);
        assert.equal(usage.budgets[0].spent_usd, 0.16);
      });

      test('failed jobs release their reservations; the freed budget admits new work', async () => {
        const { secret, key } = await createApiKey(easel.runtime.keys, { name: 'flaky' });
        const rows = easel.runtime.budgets.rows(key);
        assert.equal(rows.length, 2, 'daily and monthly');
        easel.standin.failNext(10, 400, moderationBlocked);
        const first = await Promise.all(Array.from({ length: 10 }, (_, i) => submit(secret, `flaky ${i}`)));
        assert.ok(first.every((r) => r.status === 202));
        const failed = await Promise.all(first.map(async (r) => waitForJob(easel, ((await r.json()) as any).id, { key: secret })));
        assert.ok(failed.every((j) => j.status === 'failed'));
        await until('every reservation to be released', async () => (await easel.runtime.budgets.ledger.state(rows)).every((s) => s.reservedMicros === 0));
        assert.equal((await waitForJob(easel, failed[0].id, { key: secret })).cost.budget.status, 'released');
        for (const s of await easel.runtime.budgets.ledger.state(rows)) {
          assert.equal(s.reservedMicros, 0);
          assert.equal(s.spentMicros, 0);
        }
        const second = await Promise.all(Array.from({ length: 10 }, (_, i) => submit(secret, `flaky again ${i}`)));
        assert.ok(second.every((r) => r.status === 202));
        assert.equal((await submit(secret, 'still one too many')).status, 429);
      });

      test('a job canceled while queued gives its reservation back', async () => {
        // A key with no budget configured has no ledger rows at all.
        const { key: free } = await createApiKey(easel.runtime.keys, { name: 'unbudgeted' });
        assert.equal(easel.runtime.budgets.rows(free).length, 0);
        const { secret: bs, key: bk } = await createApiKey(easel.runtime.keys, { name: 'budgeted-cancel' });
        try {
          easel.standin.setLatency(1500);
          const a = (await (await submit(bs, 'slow one')).json()) as any;
          assert.equal((await submit(bs, 'no room')).status, 429);
          await easel.api(`/v1/images/jobs/${a.id}/cancel`, { method: 'POST', key: bs });
          const done = await waitForJob(easel, a.id, { key: bs });
          assert.equal(done.status, 'canceled');
          const rows = easel.runtime.budgets.rows(bk);
          await until('the reservation to be released', async () => (await easel.runtime.budgets.ledger.state(rows))[0]!.reservedMicros === 0);
          const [s] = await easel.runtime.budgets.ledger.state(rows);
          assert.equal(s!.reservedMicros, 0);
          assert.equal(s!.spentMicros, 0);
          assert.equal((await submit(bs, 'room again')).status, 202);
        } finally {
          easel.standin.setLatency(100);
        }
      });

      test('a group budget binds all its keys together', async () => {
        const alice = (await createApiKey(easel.runtime.keys, { name: 'alice' })).secret;
        const bob = (await createApiKey(easel.runtime.keys, { name: 'bob' })).secret;
        const res = await Promise.all([submit(alice, 'a1'), submit(bob, 'b1'), submit(alice, 'a2'), submit(bob, 'b2'), submit(alice, 'a3')]);
        assert.equal(res.filter((r) => r.status === 202).length, 3);
        const refusal = (await res.find((r) => r.status === 429)!.json()) as any;
        assert.match(refusal.error.message, /group 'team' daily budget/);
      });
    });
  });
}

suite('budgets on SQLite', async () => ({ url: undefined, stop: async () => {} }));

const postgres = await startPostgres();
if (postgres) {
  suite('budgets on Postgres', async () => ({ url: postgres.url, stop: () => postgres.stop() }));
} else {
  describe('budgets on Postgres', { skip: 'Postgres binaries (initdb, pg_ctl) not found; set CI to make this an error' }, () => {
    test('skipped', () => {});
  });
}
