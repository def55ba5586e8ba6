/**
 * A self-hosted job's GPU time (JobCosts.recordGpuTime) on both databases: several jobs recorded in
 * one turn each get their own row (on Postgres they go as one multi-row upsert per turn), and a row
 * that already held the admission's columns keeps them. The job's end then reads the row a rowless job just got without a query.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { migrate, openDatabase } from '../../src/store/database.ts';
import type { MetadataDb } from '../../src/store/database.ts';
import { JobCosts } from '../../src/jobs/job-costs.ts';
import type { Job } from '../../src/core/job.ts';
import { startPostgres } from '../support/postgres.ts';

const job = (id: string): Job => ({ id, keyId: 'key_1', createdAt: new Date(1_700_000_000_000) }) as unknown as Job;
const gpu = (seconds: number) => ({ backend: 'pool', backendModel: 'sd-turbo', images: 1, megapixels: 0.25, gpuSeconds: seconds });

function defineSuite(name: string, target: () => Promise<{ url: string; cleanup(): Promise<void> }>): void {
  describe(name, () => {
    let mdb: MetadataDb;
    let cleanup: () => Promise<void>;
    before(async () => {
      const t = await target();
      cleanup = t.cleanup;
      mdb = openDatabase(t.url);
      await migrate(mdb);
    });
    after(async () => {
      await mdb?.close();
      await cleanup?.();
    });

    test('jobs recorded in one turn each get their own row', async () => {
      const costs = new JobCosts(mdb);
      await Promise.all([
        costs.recordGpuTime(job('job_a'), gpu(1.5)),
        costs.recordGpuTime(job('job_b'), gpu(2.5)),
        costs.recordGpuTime(job('job_c'), gpu(3.5)),
      ]);
      const rows = await mdb.db.selectFrom('job_costs').select(['job_id', 'gpu_seconds', 'self_hosted', 'backend', 'images']).where('job_id', 'in', ['job_a', 'job_b', 'job_c']).orderBy('job_id').execute();
      assert.deepEqual(
        rows.map((r) => [r.job_id, Number(r.gpu_seconds), Number(r.self_hosted), r.backend, Number(r.images)]),
        [['job_a', 1.5, 1, 'pool', 1], ['job_b', 2.5, 1, 'pool', 1], ['job_c', 3.5, 1, 'pool', 1]],
      );
    });

    test('an admission row keeps its columns when the GPU time joins it', async () => {
      const costs = new JobCosts(mdb);
      const j = job('job_d');
      await costs.recordAdmission(j, { requestedModel: 'fast', routing: null, estimateUsd: 0.01, reserved: true, cachePolicy: 'auto', embedding: null, hit: null, parent: null, batchId: null });
      await costs.recordGpuTime(j, gpu(0.75));
      const row = await costs.get('job_d');
      assert.equal(row?.requested_model, 'fast');
      assert.equal(Number(row?.reserved), 1);
      assert.equal(Number(row?.gpu_seconds), 0.75);
    });

    test("a rowless job's end reads the row it just got from memory, the same as the database holds", async () => {
      const costs = new JobCosts(mdb);
      const j = job('job_e');
      await costs.recordAdmission(j, { requestedModel: null, routing: null, estimateUsd: 0, reserved: false, cachePolicy: 'auto', embedding: null, hit: null, parent: null, batchId: null });
      assert.equal(costs.knownRowless('job_e'), true);
      await costs.recordGpuTime(j, gpu(0.5));
      const remembered = await costs.get('job_e');
      costs.forget('job_e');
      const stored = await costs.get('job_e');
      const numbers = (r: Record<string, unknown> | undefined) => Object.fromEntries(Object.entries(r ?? {}).map(([k, v]) => [k, typeof v === 'string' && /^\d+(\.\d+)?$/.test(v) ? Number(v) : v]));
      assert.deepEqual(numbers(remembered), numbers(stored));
    });
  });
}

defineSuite('GPU time on SQLite', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-gpu-time-'));
  return { url: join(dir, 'easel.db'), cleanup: async () => rmSync(dir, { recursive: true, force: true }) };
});

const postgres = await startPostgres();
if (postgres) {
  defineSuite('GPU time on Postgres', async () => ({ url: postgres.url, cleanup: () => postgres.stop() }));
} else {
  describe('GPU time on Postgres', { skip: 'Postgres binaries (initdb, pg_ctl) not found; set CI to make this an error' }, () => {
    test('skipped', () => {});
  });
}
