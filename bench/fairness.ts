/**
 * `npm run bench:fairness` (also the last part of `npm run bench`): how long a small user waits behind
 * a big one. Key A submits 300 jobs, then key B submits 10; two worker slots; every job takes a fixed
 * time on a backend stand-in (50 ms by default). The figure is B's wait, from submission to start (the
 * store's created_at and started_at), as a multiple of one job's run time (the median time a slot
 * spends on one of A's jobs): its first job and its p95 (of 10, i.e. the last), with fair sharing on
 * and with `fairness.enabled: false` (first come, first served within a priority, as easel was).
 *
 * Runs easel in this process (API and worker, `serve`): on the embedded stack (SQLite, embedded
 * queue), and on Redis (BullMQ behind the fair waiting room, SQLite metadata) when redis-server is
 * installed. With fair sharing, B's i-th job should start after about 2(i+1) of A's turns spread over
 * the slots, plus what the slots held when B arrived; without it, after all of A's 300.
 *
 *   node bench/fairness.ts [--job-ms 50] [--a 300] [--b 10] [--slots 2] [--only embedded|redis]
 */
import { parseArgs } from 'node:util';
import { createApiKey } from '../src/auth/api-keys.ts';
import { startEasel } from '../tests/support/easel.ts';
import { startRedis } from '../tests/support/redis.ts';
import { PacedControl, pacedFactories, submitMany } from '../tests/fairness/support.ts';
import { median, percentile, round } from './lib/stats.ts';

const { values: argv } = parseArgs({
  options: {
    'job-ms': { type: 'string', default: '50' },
    a: { type: 'string', default: '300' },
    b: { type: 'string', default: '10' },
    slots: { type: 'string', default: '2' },
    only: { type: 'string' },
  },
  strict: true,
});
const JOB_MS = Number(argv['job-ms']);
const A_JOBS = Number(argv.a);
const B_JOBS = Number(argv.b);
const SLOTS = Number(argv.slots);
const log = (msg: string) => process.stderr.write(`[bench:fairness] ${msg}\n`);

interface Result {
  stack: string;
  fair: boolean;
  jobMs: number;
  bFirst: number;
  bP95: number;
  seconds: number;
}

async function run(stack: 'embedded' | 'redis', fair: boolean, redisUrl?: string): Promise<Result> {
  const control = new PacedControl(JOB_MS);
  const easel = await startEasel({
    overrides: {
      worker: { concurrency: SLOTS },
      fairness: { enabled: fair },
      ...(redisUrl ? { redis: { url: redisUrl, prefix: `easel-bench-fair-${Date.now()}` } } : {}),
    },
    runtime: { backendFactories: pacedFactories(control) },
  });
  try {
    const a = (await createApiKey(easel.runtime.keys, { name: 'A' })).secret;
    const b = (await createApiKey(easel.runtime.keys, { name: 'B' })).secret;
    const t0 = Date.now();
    const aIds = await submitMany(easel.url, a, Array.from({ length: A_JOBS }, (_, i) => `A #${i}`));
    const bIds = await submitMany(easel.url, b, Array.from({ length: B_JOBS }, (_, i) => `B #${i}`), 1);
    const all = [...aIds, ...bIds];
    const read = () => easel.runtime.mdb.db.selectFrom('jobs').select(['id', 'status', 'created_at', 'started_at', 'finished_at']).where('id', 'in', all).execute();
    let rows = await read();
    while (rows.some((r) => r.status !== 'succeeded')) {
      if (rows.some((r) => r.status === 'failed' || r.status === 'canceled')) throw new Error('a job did not succeed');
      await new Promise((r) => setTimeout(r, 200));
      rows = await read();
    }
    const seconds = (Date.now() - t0) / 1000;
    const bSet = new Set(bIds);
    const jobMs = median(rows.filter((r) => !bSet.has(r.id)).map((r) => r.finished_at! - r.started_at!));
    const bRows = rows.filter((r) => bSet.has(r.id)).sort((x, y) => x.created_at - y.created_at);
    const waits = bRows.map((r) => (r.started_at! - r.created_at) / jobMs);
    return { stack, fair, jobMs, bFirst: waits[0]!, bP95: percentile(waits, 95), seconds };
  } finally {
    await easel.close();
  }
}

const results: Result[] = [];
const stacks = argv.only ? [argv.only] : ['embedded', 'redis'];
if (stacks.includes('embedded')) {
  for (const fair of [true, false]) {
    log(`embedded, fair sharing ${fair ? 'on' : 'off'}…`);
    results.push(await run('embedded', fair));
  }
}
if (stacks.includes('redis')) {
  const redis = await startRedis();
  if (!redis) log('redis-server not found: the Redis stack is left out');
  else {
    try {
      for (const fair of [true, false]) {
        log(`redis, fair sharing ${fair ? 'on' : 'off'}…`);
        results.push(await run('redis', fair, redis.url));
      }
    } finally {
      await redis.stop();
    }
  }
}

const pad = (s: string | number, n: number) => String(s).padStart(n);
console.log(`\nfairness: key A queues ${A_JOBS} jobs, then key B ${B_JOBS}; ${SLOTS} worker slots; backend ${JOB_MS} ms per job`);
console.log("B's wait from submission to start, in job run times (one job's median time on a slot)");
console.log(`${'stack'.padEnd(10)}${pad('fair sharing', 14)}${pad('job ms', 9)}${pad('B first', 10)}${pad('B p95', 9)}${pad('run s', 8)}`);
for (const r of results) {
  console.log(`${r.stack.padEnd(10)}${pad(r.fair ? 'on' : 'off', 14)}${pad(round(r.jobMs, 1), 9)}${pad(round(r.bFirst, 1), 10)}${pad(round(r.bP95, 1), 9)}${pad(round(r.seconds, 1), 8)}`);
}
for (const stack of new Set(results.map((r) => r.stack))) {
  const on = results.find((r) => r.stack === stack && r.fair);
  const off = results.find((r) => r.stack === stack && !r.fair);
  if (on && off) console.log(`${stack}: B's p95 wait ${round(on.bP95, 1)} job times with fair sharing, ${round(off.bP95, 1)} without (${round(off.bP95 / on.bP95, 1)}× shorter)`);
}
