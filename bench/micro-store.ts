/**
 * Micro-benchmark of the metadata store's per-job statements on SQLite (no HTTP, no queue consumer):
 * what one job costs in database work on the main thread.
 *
 *   node bench/micro-store.ts [jobs]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openDatabase, migrate } from '../src/store/database.ts';
import { SqlJobStore } from '../src/store/sql-job-store.ts';
import { EmbeddedQueue } from '../src/queue/embedded-queue.ts';
import { newImageId, newJobId } from '../src/core/ids.ts';

const N = Number(process.argv[2] ?? 3000);
const dir = mkdtempSync(join(tmpdir(), 'easel-micro-'));
const mdb = openDatabase(join(dir, 'easel.db'));
await migrate(mdb);
const store = new SqlJobStore(mdb);
const queue = new EmbeddedQueue({ db: mdb });
const t: Record<string, number> = {};
const time = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
  const t0 = performance.now();
  const r = await f();
  t[name] = (t[name] ?? 0) + performance.now() - t0;
  return r;
};
const request = { prompt: 'a lighthouse on a cliff at dusk, oil painting', n: 1, responseFormat: 'b64_json' as const, outputFormat: 'png' as const };
for (let round = 0; round < 2; round++) {
  for (const k of Object.keys(t)) delete t[k];
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const id = newJobId();
    await time('createJob', () => store.createJob({ id, keyId: 'key_1', kind: 'generation', priority: 'normal', model: 'm', request, metadata: null, webhookUrl: null, idempotencyKey: null }));
    await time('enqueue', () => queue.enqueue({ jobId: id, priority: 'normal' }));
    await time('getJob', () => store.getJob(id));
    const job = await time('startAttempt', () => store.startAttempt(id, 'standin'));
    await time('completeJob', () =>
      store.completeJob(id, job!.attempt, {
        result: { images: [{ imageId: 'img_x' }] },
        images: [{ id: newImageId(), jobId: id, keyId: 'key_1', index: 0, storageKey: `images/${id}/0.png`, mediaType: 'image/png', width: 64, height: 64, bytes: 7872, sha256: 'x'.repeat(64), revisedPrompt: null, createdAt: new Date() }],
        costUsd: null,
      }),
    );
    await time('getJob (waiter)', () => store.getJob(id));
    await time('listImagesForJob', () => store.listImagesForJob(id));
    await time('ack (delete)', () => mdb.db.deleteFrom('queue_messages').where('job_id', '=', id).execute());
  }
  const total = performance.now() - t0;
  if (round === 1) {
    for (const [k, v] of Object.entries(t)) console.log(`${k.padEnd(20)} ${((v * 1000) / N).toFixed(1).padStart(7)} µs`);
    console.log(`${'total per job'.padEnd(20)} ${((total * 1000) / N).toFixed(1).padStart(7)} µs`);
  }
}
await queue.close();
await mdb.close();
rmSync(dir, { recursive: true, force: true });
