/**
 * One behaviour suite for the metadata store, run against SQLite (a temp file) and Postgres (a
 * throwaway server; skipped with a message when Postgres is not installed, unless CI is set).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { newImageId, newJobId, newKeyId } from '../../src/core/ids.ts';
import type { NewJob, StoredImage } from '../../src/core/job.ts';
import { migrate, openDatabase } from '../../src/store/database.ts';
import type { MetadataDb } from '../../src/store/database.ts';
import { SqlJobStore, isUniqueViolation } from '../../src/store/sql-job-store.ts';
import { SqlKeyStore } from '../../src/store/sql-key-store.ts';
import { sqliteDrivers } from '../../src/store/sqlite-driver.ts';
import type { SqliteDriverName } from '../../src/store/sqlite-driver.ts';
import { startPostgres } from '../support/postgres.ts';

interface Target {
  url: string;
  sqliteDriver?: SqliteDriverName;
  cleanup(): Promise<void>;
}

function makeJob(keyId: string, over: Partial<NewJob> = {}): NewJob {
  return {
    id: newJobId(),
    keyId,
    kind: 'generation',
    priority: 'normal',
    model: 'test-model',
    request: { prompt: 'a red fox', n: 2, size: { width: 512, height: 512 }, responseFormat: 'url', outputFormat: 'png' },
    metadata: null,
    webhookUrl: null,
    idempotencyKey: null,
    ...over,
  };
}

function makeImage(jobId: string, keyId: string, index: number): StoredImage {
  return {
    id: newImageId(),
    jobId,
    keyId,
    index,
    storageKey: `images/${jobId}/${index}.png`,
    mediaType: 'image/png',
    width: 512,
    height: 512,
    bytes: 12345,
    sha256: 'ab'.repeat(32),
    revisedPrompt: index === 0 ? 'a red fox, revised' : null,
    createdAt: new Date(1_700_000_000_000 + index),
  };
}

/** ULIDs are only ordered across milliseconds; a tick between creations keeps listing order exact. */
const tick = () => new Promise((r) => setTimeout(r, 2));

function defineSuite(name: string, target: () => Promise<Target>): void {
  describe(name, () => {
    let t: Target;
    let mdb: MetadataDb;
    let jobs: SqlJobStore;
    let keys: SqlKeyStore;

    before(async () => {
      t = await target();
      mdb = openDatabase(t.url, { sqliteDriver: t.sqliteDriver });
      const applied = await migrate(mdb);
      assert.ok(applied.includes('001-core'));
      jobs = new SqlJobStore(mdb);
      keys = new SqlKeyStore(mdb);
    });

    after(async () => {
      await mdb?.close();
      await t?.cleanup();
    });

    test('writes issued together each get their own outcome (Postgres sends them as one statement)', async () => {
      const keyId = newKeyId();
      const many = Array.from({ length: 12 }, () => makeJob(keyId));
      const twins = [makeJob(keyId, { idempotencyKey: 'same-turn' }), makeJob(keyId, { idempotencyKey: 'same-turn' })];
      const created = await Promise.allSettled([...many, ...twins].map((j) => jobs.createJob(j)));
      assert.ok(created.slice(0, 12).every((r) => r.status === 'fulfilled'));
      const twinOutcomes = created.slice(12);
      assert.equal(twinOutcomes.filter((r) => r.status === 'fulfilled').length, 1, 'one of two jobs with the same idempotency key is stored');
      const refused = twinOutcomes.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      assert.ok(isUniqueViolation(refused.reason));
      for (const j of many) assert.equal((await jobs.getJob(j.id))?.status, 'queued');

      // Two starts of one job in the same turn (a duplicate delivery) are two attempts, as one after the other would be.
      const starts = await Promise.all([...many.map((j) => jobs.startAttempt(j.id, 'b1')), jobs.startAttempt(many[0]!.id, 'b2')]);
      assert.ok(starts.every((j) => j?.status === 'running'));
      assert.deepEqual(starts.filter((j) => j!.id === many[0]!.id).map((j) => j!.attempt).sort(), [1, 2]);
      assert.deepEqual(starts.slice(1, 12).map((j) => j!.attempt), Array(11).fill(1));

      // Completions together, each as attempt 1: job 0 is on attempt 2, so it loses and stores no images; a canceled job loses; the rest win with theirs.
      await jobs.cancelJob(many[1]!.id);
      const done = (j: NewJob, n: number) => ({ result: { images: [] }, images: Array.from({ length: n }, (_, i) => makeImage(j.id, keyId, i)), costUsd: 0.01, finishedAt: Date.now() });
      const outcomes = await Promise.all(many.map((j, i) => jobs.completeJob(j.id, 1, done(j, i % 3))));
      assert.deepEqual(outcomes, many.map((_, i) => i > 1));
      assert.deepEqual(await jobs.listImagesForJob(many[0]!.id), []);
      assert.deepEqual(await jobs.listImagesForJob(many[1]!.id), []);
      for (const [i, j] of many.entries()) {
        if (i < 2) continue;
        const got = await jobs.getJob(j.id);
        assert.equal(got?.status, 'succeeded');
        assert.equal(got?.costUsd, 0.01);
        assert.equal((await jobs.listImagesForJob(j.id)).length, i % 3);
      }
    });

    test('migrate is idempotent', async () => {
      assert.deepEqual(await migrate(mdb), []);
    });

    test('create/get round-trips dates, JSON and nulls', async () => {
      const keyId = newKeyId();
      const before = Date.now();
      const input = makeJob(keyId, {
        kind: 'edit',
        priority: 'high',
        metadata: { user: 'u1', note: 'ünïcode ✓' },
        webhookUrl: 'https://example.com/hook',
        idempotencyKey: 'idem-1',
        request: {
          prompt: 'p',
          n: 1,
          responseFormat: 'b64_json',
          outputFormat: 'webp',
          inputImages: ['uploads/a.png'],
          providerOptions: { nested: { x: [1, 2, 3] } },
        },
      });
      const created = await jobs.createJob(input);
      const got = await jobs.getJob(input.id);
      assert.ok(got);
      assert.deepEqual(got, created);
      assert.equal(got.status, 'queued');
      assert.equal(got.kind, 'edit');
      assert.equal(got.priority, 'high');
      assert.equal(got.attempt, 0);
      assert.equal(got.progress, 0);
      assert.equal(got.backend, null);
      assert.equal(got.error, null);
      assert.equal(got.result, null);
      assert.equal(got.backendState, null);
      assert.equal(got.costUsd, null);
      assert.equal(got.cancelRequested, false);
      assert.equal(got.startedAt, null);
      assert.equal(got.finishedAt, null);
      assert.deepEqual(got.request, input.request);
      assert.deepEqual(got.metadata, input.metadata);
      assert.equal(got.webhookUrl, 'https://example.com/hook');
      assert.equal(got.idempotencyKey, 'idem-1');
      assert.ok(got.createdAt instanceof Date);
      assert.ok(got.createdAt.getTime() >= before && got.createdAt.getTime() <= Date.now());
      assert.equal(got.updatedAt.getTime(), got.createdAt.getTime());

      const plain = makeJob(keyId);
      await jobs.createJob(plain);
      const gotPlain = await jobs.getJob(plain.id);
      assert.equal(gotPlain?.metadata, null);
      assert.equal(gotPlain?.webhookUrl, null);
      assert.equal(gotPlain?.idempotencyKey, null);

      assert.equal(await jobs.getJob('job_missing'), undefined);
    });

    test('startAttempt increments attempt, keeps startedAt and refuses terminal jobs', async () => {
      const keyId = newKeyId();
      const j = await jobs.createJob(makeJob(keyId));
      const a1 = await jobs.startAttempt(j.id, 'mock');
      assert.ok(a1);
      assert.equal(a1.status, 'running');
      assert.equal(a1.attempt, 1);
      assert.equal(a1.backend, 'mock');
      assert.ok(a1.startedAt instanceof Date);
      await tick();
      const a2 = await jobs.startAttempt(j.id, 'other');
      assert.equal(a2?.attempt, 2);
      assert.equal(a2?.backend, 'other');
      assert.equal(a2?.startedAt?.getTime(), a1.startedAt.getTime(), 'startedAt is the first start');
      assert.ok(a2!.updatedAt.getTime() >= a1.updatedAt.getTime());

      assert.equal(await jobs.failJob(j.id, 2, { message: 'boom', code: 'backend_error' }), true);
      assert.equal(await jobs.startAttempt(j.id, 'mock'), undefined);
      assert.equal(await jobs.startAttempt('job_missing', 'mock'), undefined);
    });

    test('setProgress and saveBackendState only for the owning attempt of a running job', async () => {
      const keyId = newKeyId();
      const j = await jobs.createJob(makeJob(keyId));
      assert.equal(await jobs.setProgress(j.id, 0, 0.5), false, 'queued job');
      await jobs.startAttempt(j.id, 'mock');
      await jobs.startAttempt(j.id, 'mock');
      assert.equal(await jobs.setProgress(j.id, 1, 0.3), false, 'stale attempt');
      assert.equal(await jobs.setProgress(j.id, 2, 0.25), true);
      assert.equal(await jobs.saveBackendState(j.id, 1, { prediction: 'old' }), false);
      assert.equal(await jobs.saveBackendState(j.id, 2, { prediction: 'p-123', polls: [1, 2] }), true);
      const got = await jobs.getJob(j.id);
      assert.equal(got?.progress, 0.25);
      assert.deepEqual(got?.backendState, { prediction: 'p-123', polls: [1, 2] });
      assert.equal(await jobs.saveBackendState(j.id, 2, null), true);
      assert.equal((await jobs.getJob(j.id))?.backendState, null);
    });

    test('completeJob succeeds once, only for the latest attempt, with its images', async () => {
      const keyId = newKeyId();
      const j = await jobs.createJob(makeJob(keyId));
      await jobs.startAttempt(j.id, 'mock'); // attempt 1: a worker that will turn out stale
      await jobs.startAttempt(j.id, 'mock'); // attempt 2: the redelivery that owns the job

      const staleImages = [makeImage(j.id, keyId, 0)];
      const staleDone = { result: { images: staleImages.map((i) => ({ imageId: i.id })) }, images: staleImages, costUsd: 0.5 };
      assert.equal(await jobs.completeJob(j.id, 1, staleDone), false);

      const images = [makeImage(j.id, keyId, 0), makeImage(j.id, keyId, 1)];
      const done = {
        result: { images: images.map((i) => ({ imageId: i.id, revisedPrompt: i.revisedPrompt ?? undefined })), warnings: [{ type: 'other' as const, detail: 'w' }] },
        images,
        costUsd: 0.04,
      };
      assert.equal(await jobs.completeJob(j.id, 2, done), true);
      assert.equal(await jobs.completeJob(j.id, 2, { ...done, images: [makeImage(j.id, keyId, 2)] }), false);

      const got = await jobs.getJob(j.id);
      assert.equal(got?.status, 'succeeded');
      assert.equal(got?.progress, 1);
      assert.equal(got?.costUsd, 0.04);
      assert.deepEqual(got?.result, JSON.parse(JSON.stringify(done.result)));
      assert.ok(got?.finishedAt instanceof Date);

      const stored = await jobs.listImagesForJob(j.id);
      assert.deepEqual(stored, images);
      assert.deepEqual(await jobs.getImage(images[1].id), images[1]);
      assert.equal(await jobs.getImage(staleImages[0].id), undefined);
      assert.equal(await jobs.getImage('img_missing'), undefined);

      // terminal: nothing else may change it
      assert.equal(await jobs.failJob(j.id, null, { message: 'late', code: 'timeout' }), false);
      assert.equal(await jobs.setProgress(j.id, 2, 0.1), false);
    });

    test('two workers completing the same attempt at once: exactly one wins, no duplicate images', async () => {
      const keyId = newKeyId();
      const j = await jobs.createJob(makeJob(keyId));
      const { attempt } = (await jobs.startAttempt(j.id, 'mock'))!;
      const setA = [makeImage(j.id, keyId, 0), makeImage(j.id, keyId, 1)];
      const setB = [makeImage(j.id, keyId, 0), makeImage(j.id, keyId, 1)];
      const results = await Promise.all([
        jobs.completeJob(j.id, attempt, { result: { images: setA.map((i) => ({ imageId: i.id })) }, images: setA, costUsd: null }),
        jobs.completeJob(j.id, attempt, { result: { images: setB.map((i) => ({ imageId: i.id })) }, images: setB, costUsd: null }),
      ]);
      assert.deepEqual(results.filter(Boolean).length, 1);
      const winner = results[0] ? setA : setB;
      assert.deepEqual(await jobs.listImagesForJob(j.id), winner);
      assert.equal((await jobs.getJob(j.id))?.costUsd, null);
    });

    test('completeJob without images is a plain conditional update', async () => {
      const keyId = newKeyId();
      const j = await jobs.createJob(makeJob(keyId));
      assert.equal(await jobs.completeJob(j.id, 0, { result: { images: [] }, images: [], costUsd: 0 }), false, 'queued');
      await jobs.startAttempt(j.id, null);
      assert.equal(await jobs.completeJob(j.id, 1, { result: { images: [] }, images: [], costUsd: 0 }), true);
      assert.equal((await jobs.getJob(j.id))?.costUsd, 0);
      assert.deepEqual(await jobs.listImagesForJob(j.id), []);
    });

    test('failJob: with or without an attempt, never from a terminal state', async () => {
      const keyId = newKeyId();
      const queued = await jobs.createJob(makeJob(keyId));
      assert.equal(await jobs.failJob(queued.id, null, { message: 'rejected', code: 'content_policy_violation' }), true);
      const gotQueued = await jobs.getJob(queued.id);
      assert.equal(gotQueued?.status, 'failed');
      assert.deepEqual(gotQueued?.error, { message: 'rejected', code: 'content_policy_violation' });
      assert.ok(gotQueued?.finishedAt instanceof Date);

      const running = await jobs.createJob(makeJob(keyId));
      await jobs.startAttempt(running.id, 'mock');
      await jobs.startAttempt(running.id, 'mock');
      assert.equal(await jobs.failJob(running.id, 1, { message: 'stale', code: 'backend_error' }), false);
      assert.equal((await jobs.getJob(running.id))?.status, 'running');
      assert.equal(await jobs.failJob(running.id, 2, { message: 'x', code: 'backend_error' }), true);
      assert.equal(await jobs.failJob(running.id, null, { message: 'y', code: 'worker_lost' }), false);
      assert.deepEqual((await jobs.getJob(running.id))?.error, { message: 'x', code: 'backend_error' });
      assert.equal(await jobs.failJob('job_missing', null, { message: 'x', code: 'x' }), false);
    });

    test('cancelJob: queued, running, terminal, missing', async () => {
      const keyId = newKeyId();
      const queued = await jobs.createJob(makeJob(keyId));
      const c1 = await jobs.cancelJob(queued.id);
      assert.equal(c1.outcome, 'canceled');
      assert.ok(c1.outcome === 'canceled');
      assert.equal(c1.job.status, 'canceled');
      assert.ok(c1.job.finishedAt instanceof Date);
      assert.equal(c1.job.cancelRequested, false);
      assert.equal(await jobs.startAttempt(queued.id, 'mock'), undefined, 'a canceled job is never started');

      const again = await jobs.cancelJob(queued.id);
      assert.equal(again.outcome, 'already_terminal');
      assert.ok(again.outcome === 'already_terminal');
      assert.equal(again.job.status, 'canceled');

      const running = await jobs.createJob(makeJob(keyId));
      await jobs.startAttempt(running.id, 'mock');
      const c2 = await jobs.cancelJob(running.id);
      assert.equal(c2.outcome, 'cancel_requested');
      assert.ok(c2.outcome === 'cancel_requested');
      assert.equal(c2.job.status, 'running');
      assert.equal(c2.job.cancelRequested, true);
      assert.equal(c2.job.finishedAt, null);
      assert.equal((await jobs.cancelJob(running.id)).outcome, 'cancel_requested', 'repeatable');

      const done = await jobs.createJob(makeJob(keyId));
      await jobs.startAttempt(done.id, 'mock');
      await jobs.completeJob(done.id, 1, { result: { images: [] }, images: [], costUsd: null });
      const c3 = await jobs.cancelJob(done.id);
      assert.equal(c3.outcome, 'already_terminal');
      assert.ok(c3.outcome === 'already_terminal');
      assert.equal(c3.job.status, 'succeeded');

      assert.deepEqual(await jobs.cancelJob('job_missing'), { outcome: 'not_found' });
    });

    test('a cancel-requested job cannot complete; finishCanceled ends it for the owning attempt', async () => {
      const keyId = newKeyId();
      const j = await jobs.createJob(makeJob(keyId));
      await jobs.startAttempt(j.id, 'mock');
      assert.equal(await jobs.finishCanceled(j.id, 1), false, 'no cancel requested yet');
      await jobs.cancelJob(j.id);
      const images = [makeImage(j.id, keyId, 0)];
      assert.equal(await jobs.completeJob(j.id, 1, { result: { images: [{ imageId: images[0].id }] }, images, costUsd: 1 }), false);
      assert.deepEqual(await jobs.listImagesForJob(j.id), []);
      assert.equal(await jobs.finishCanceled(j.id, 0), false, 'wrong attempt');
      assert.equal(await jobs.finishCanceled(j.id, 1), true);
      const got = await jobs.getJob(j.id);
      assert.equal(got?.status, 'canceled');
      assert.ok(got?.finishedAt instanceof Date);
      assert.equal(await jobs.finishCanceled(j.id, 1), false, 'already canceled');
    });

    test('listJobs: newest first, keyset cursor, status filter, scoped per key', async () => {
      const keyA = newKeyId();
      const keyB = newKeyId();
      const aIds: string[] = [];
      for (let i = 0; i < 7; i++) {
        aIds.push((await jobs.createJob(makeJob(keyA))).id);
        await jobs.createJob(makeJob(keyB));
        await tick();
      }
      // jobs 1, 3, 5 of key A run
      for (const i of [1, 3, 5]) await jobs.startAttempt(aIds[i], 'mock');
      const newestFirst = [...aIds].reverse();

      const seen: string[] = [];
      let after: string | undefined;
      let pages = 0;
      for (;;) {
        const page = await jobs.listJobs({ keyId: keyA, limit: 3, after });
        pages++;
        for (const job of page.jobs) assert.equal(job.keyId, keyA);
        seen.push(...page.jobs.map((j) => j.id));
        if (!page.hasMore) break;
        after = page.jobs.at(-1)!.id;
      }
      assert.deepEqual(seen, newestFirst);
      assert.equal(pages, 3);

      const exact = await jobs.listJobs({ keyId: keyA, limit: 7 });
      assert.equal(exact.jobs.length, 7);
      assert.equal(exact.hasMore, false);

      const running = await jobs.listJobs({ keyId: keyA, status: 'running', limit: 2 });
      assert.deepEqual(running.jobs.map((j) => j.id), [aIds[5], aIds[3]]);
      assert.equal(running.hasMore, true);
      const rest = await jobs.listJobs({ keyId: keyA, status: 'running', limit: 2, after: aIds[3] });
      assert.deepEqual(rest.jobs.map((j) => j.id), [aIds[1]]);
      assert.equal(rest.hasMore, false);

      const bRunning = await jobs.listJobs({ keyId: keyB, status: 'running', limit: 10 });
      assert.deepEqual(bRunning, { jobs: [], hasMore: false });
      const bAll = await jobs.listJobs({ keyId: keyB, limit: 100 });
      assert.equal(bAll.jobs.length, 7);
      assert.ok(bAll.jobs.every((j) => j.keyId === keyB));
      assert.deepEqual(await jobs.listJobs({ keyId: newKeyId(), limit: 5 }), { jobs: [], hasMore: false });
    });

    test('idempotency keys are unique and looked up per API key', async () => {
      const keyA = newKeyId();
      const keyB = newKeyId();
      const a = await jobs.createJob(makeJob(keyA, { idempotencyKey: 'same' }));
      const b = await jobs.createJob(makeJob(keyB, { idempotencyKey: 'same' }));
      assert.equal((await jobs.findByIdempotencyKey(keyA, 'same'))?.id, a.id);
      assert.equal((await jobs.findByIdempotencyKey(keyB, 'same'))?.id, b.id);
      assert.equal(await jobs.findByIdempotencyKey(keyA, 'other'), undefined);
      assert.equal(await jobs.findByIdempotencyKey(newKeyId(), 'same'), undefined);

      await assert.rejects(jobs.createJob(makeJob(keyA, { idempotencyKey: 'same' })), (err) => isUniqueViolation(err));
      // jobs without an idempotency key never collide
      await jobs.createJob(makeJob(keyA));
      await jobs.createJob(makeJob(keyA));
    });

    test('countByStatus reports all five statuses', async () => {
      const baseline = await jobs.countByStatus();
      assert.deepEqual(Object.keys(baseline).sort(), ['canceled', 'failed', 'queued', 'running', 'succeeded']);
      for (const v of Object.values(baseline)) assert.equal(typeof v, 'number');

      const keyId = newKeyId();
      await jobs.createJob(makeJob(keyId));
      const r = await jobs.createJob(makeJob(keyId));
      await jobs.startAttempt(r.id, 'mock');
      const s = await jobs.createJob(makeJob(keyId));
      await jobs.startAttempt(s.id, 'mock');
      await jobs.completeJob(s.id, 1, { result: { images: [] }, images: [], costUsd: null });
      const f = await jobs.createJob(makeJob(keyId));
      await jobs.failJob(f.id, null, { message: 'x', code: 'x' });
      const c = await jobs.createJob(makeJob(keyId));
      await jobs.cancelJob(c.id);

      const now = await jobs.countByStatus();
      assert.deepEqual(now, {
        queued: baseline.queued + 1,
        running: baseline.running + 1,
        succeeded: baseline.succeeded + 1,
        failed: baseline.failed + 1,
        canceled: baseline.canceled + 1,
      });
    });

    test('concurrent startAttempt calls get distinct attempt numbers', async () => {
      const j = await jobs.createJob(makeJob(newKeyId()));
      const started = await Promise.all(Array.from({ length: 10 }, () => jobs.startAttempt(j.id, 'mock')));
      const attempts = started.map((s) => s?.attempt).sort((x, y) => x! - y!);
      assert.deepEqual(attempts, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
      assert.equal((await jobs.getJob(j.id))?.attempt, 10);
    });

    test('keys: create, find by hash, list, revoke by id or name, count', async () => {
      const base = await keys.countKeys();
      const id1 = newKeyId();
      const id2 = newKeyId();
      const hash1 = `h1-${id1}`;
      const hash2 = `h2-${id2}`;
      const k1 = await keys.createKey({ id: id1, name: `admin-${id1}`, prefix: 'easel_sk_AbC1', hash: hash1, admin: true });
      await tick(); // listKeys is oldest first
      const k2 = await keys.createKey({ id: id2, name: `ci-${id2}`, prefix: 'easel_sk_XyZ9', hash: hash2, admin: false });
      assert.equal(k1.admin, true);
      assert.equal(k1.revokedAt, null);
      assert.ok(k1.createdAt instanceof Date);
      assert.deepEqual(await keys.findByHash(hash1), k1);
      assert.deepEqual(await keys.findByHash(hash2), k2);
      assert.equal(await keys.findByHash('nope'), undefined);
      assert.equal(await keys.countKeys(), base + 2);

      const listed = await keys.listKeys();
      assert.deepEqual(listed.filter((k) => k.id === id1 || k.id === id2), [k1, k2]);
      for (const k of listed) assert.equal((k as unknown as Record<string, unknown>).hash, undefined, 'hash never leaves the store');

      assert.equal(await keys.revokeKey(id1), true);
      assert.equal(await keys.findByHash(hash1), undefined);
      assert.equal(await keys.revokeKey(id1), false, 'already revoked');
      assert.equal(await keys.revokeKey(`ci-${id2}`), true, 'by name');
      assert.equal(await keys.findByHash(hash2), undefined);
      assert.equal(await keys.revokeKey('no-such-key'), false);
      assert.equal(await keys.countKeys(), base);

      const revoked = (await keys.listKeys()).find((k) => k.id === id1);
      assert.ok(revoked?.revokedAt instanceof Date);

      await assert.rejects(
        keys.createKey({ id: newKeyId(), name: `dup-hash-${id1}`, prefix: 'p', hash: hash1, admin: false }),
        (err) => isUniqueViolation(err),
      );
      // Names are unique among live keys; a revoked key's name is free again.
      const named = { prefix: 'p', admin: false, name: `named-${id1}` };
      await keys.createKey({ ...named, id: newKeyId(), hash: `n1-${id1}` });
      await assert.rejects(keys.createKey({ ...named, id: newKeyId(), hash: `n2-${id1}` }), (err: any) => err.code === 'key_name_taken' && err.kind === 'conflict');
      assert.equal(await keys.revokeKey(named.name), true);
      await keys.createKey({ ...named, id: newKeyId(), hash: `n3-${id1}` });
    });
  });
}

// Both SQLite libraries easel may run on (node:sqlite on Node 24+, libsql before).
for (const driver of sqliteDrivers()) {
  defineSuite(`SqlJobStore on SQLite (${driver})`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'easel-store-'));
    return {
      url: join(dir, 'easel.db'),
      sqliteDriver: driver,
      async cleanup() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  });
}

// Started before the suites are defined so the Postgres suite can be skipped when there is none.
const postgres = await startPostgres();
if (postgres) {
  defineSuite('SqlJobStore on Postgres', async () => ({ url: postgres.url, cleanup: () => postgres.stop() }));
} else {
  describe('SqlJobStore on Postgres', { skip: 'Postgres binaries (initdb, pg_ctl) not found; set CI to make this an error' }, () => {
    test('skipped', () => {});
  });
}
