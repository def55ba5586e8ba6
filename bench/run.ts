/**
 * `npm run bench`: what easel costs on top of its backend, with a zero-latency OpenAI stand-in that
 * returns a small PNG (tests/support/openai-standin.ts, 64×64 by default).
 *
 *   (a) sync latency added: the same POST /v1/images/generations (b64_json, n=1) at a constant open-loop
 *       arrival rate (default 200/s), sent straight to the stand-in and through easel in alternating
 *       segments after a warm-up; p50/p90/p99 of each and the difference of the percentiles. Latency is
 *       from sending to the last byte, on keep-alive connections. Requests sent in the first 250 ms of a
 *       segment (--ramp) are left out of the percentiles, for both targets: each one idles while the
 *       other is measured, and the first ~150 ms after that idleness run slow on this VM (a steady load
 *       never idles); the summary prints the figures with them too. Should easel fall more than 5 s of
 *       requests behind, sending stops and the run is marked SATURATED.
 *   (b) async throughput: N submissions with `Prefer: respond-async` (64 in flight; worker concurrency
 *       64, the README's 32 per vCPU for network-bound workers), from the first
 *       submit until the last of them is `succeeded` (easel's own finished_at, read from its database),
 *       on the embedded stack (SQLite, embedded queue, local disk) and on Redis + Postgres (BullMQ,
 *       Postgres, local disk; throwaway servers from tests/support). N is sized from the warm-up to
 *       take about 15 s, at most 5,000 (--jobs fixes it).
 *   (c) peak RSS (VmHWM) of the easel process of every run, and CPU per request/job: easel in total,
 *       its main (event-loop) thread alone, and the stand-in. The stand-in counts the image requests it
 *       answers, so a run where something else (a cache) answered instead shows up.
 *
 * Processes: each run starts a fresh `node bin/easel.js serve --config <tmp yaml>` (LOG_LEVEL=warn);
 * the stand-in runs in a process of its own for the whole benchmark; the load generator (node:http,
 * keep-alive, no dependencies) runs in this one. On a small machine the three share the cores, so
 * the figures include that contention, and other work on the machine skews them (the load average is
 * printed, with a CPU speed probe at start and end and the share of CPU time the hypervisor stole: on
 * this VM the same code has run three times slower from one session to the next). Run it more than
 * once (--repeat) before believing a difference.
 *
 *   npm run bench                       # everything (~3–5 min)
 *   npm run bench -- --quick            # smoke run (~1–2 min)
 *   npm run bench -- --only sync-embedded,async-embedded --concurrency 32 --cpu-prof
 *   node bench/profile-summary.ts bench/results/profiles/<run>/<file>.cpuprofile   (the event loop's is the largest)
 *
 * Options: --rate N, --duration S, --warmup S, --segment S, --ramp MS (not counted at each segment's start), --jobs N, --job-seconds S, --inflight N,
 * --concurrency N (worker), --image-size PX, --repeat N, --cpu-prof, --redis-stats (Redis calls per job by command), --config JSON (merged into easel's config), --node-flags="…" (for the easel
 * process), --fs-wait S (longest wait for file creation in TMPDIR to be fast, see settledFileCreation), --out FILE. Async runs also log CPU per job by thread (event loop, image-writer threads,
 * V8 helpers) and the load generator's own CPU, a yardstick for how fast the machine is right now.
 * Run folders (in TMPDIR) are removed when the benchmark exits; EASEL_BENCH_KEEP=1 keeps them.
 * Writes bench/results/latest.json (and a timestamped copy); bench/results/ is git-ignored.
 */
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { HttpClient, closedLoop, openLoop } from './lib/http.ts';
import type { HttpResult, OpenLoopResult } from './lib/http.ts';
import { median, round, summarize } from './lib/stats.ts';
import type { Summary } from './lib/stats.ts';
import { ADMIN_KEY, MODEL, startEaselProcess } from './lib/easel-process.ts';
import type { EaselProcess, StackOptions } from './lib/easel-process.ts';
import { cpuSpeedProbe, fileCreateProbe, machineCpu, procCpuSeconds, procCpuSecondsByName, procMemory, procThreadCpu, spawnNode, stealFraction } from './lib/proc.ts';
import { startRedis } from '../tests/support/redis.ts';
import { createTestDatabase, startPostgresServer } from '../tests/support/postgres.ts';

const PHASES = ['sync-embedded', 'async-embedded', 'async-redis-pg', 'sync-redis-pg'] as const;
type Phase = (typeof PHASES)[number];

const { values: argv } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    rate: { type: 'string', default: '200' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    segment: { type: 'string', default: '5' },
    ramp: { type: 'string', default: '250' },
    jobs: { type: 'string' },
    'job-seconds': { type: 'string', default: '15' },
    inflight: { type: 'string', default: '64' },
    // The README's sizing for network-bound workers: 16–32 jobs at once per vCPU (2 vCPUs here).
    concurrency: { type: 'string', default: '64' },
    'image-size': { type: 'string', default: '64' },
    repeat: { type: 'string', default: '1' },
    'cpu-prof': { type: 'boolean', default: false },
    'node-flags': { type: 'string', default: '' },
    'fs-wait': { type: 'string', default: '360' },
    'redis-stats': { type: 'boolean', default: false },
    config: { type: 'string' },
    out: { type: 'string' },
  },
  strict: true,
});

const quick = argv.quick!;
const opts = {
  rate: Number(argv.rate),
  durationS: Number(argv.duration ?? (quick ? 6 : 20)),
  warmupS: Number(argv.warmup ?? (quick ? 2 : 5)),
  segmentS: Number(argv.segment),
  rampMs: Number(argv.ramp),
  /** Jobs per async run: fixed with --jobs, else sized from the warm-up to take about jobSeconds (≤ jobsMax). */
  jobs: argv.jobs === undefined ? undefined : Number(argv.jobs),
  jobsMax: quick ? 1000 : 5000,
  jobSeconds: Number(argv['job-seconds']),
  inflight: Number(argv.inflight),
  concurrency: Number(argv.concurrency),
  imageSize: Number(argv['image-size']),
  repeat: Math.max(1, Number(argv.repeat)),
  cpuProf: argv['cpu-prof']!,
  redisStats: argv['redis-stats']!,
  config: argv.config ? (JSON.parse(argv.config) as Record<string, unknown>) : undefined,
  fsWaitS: Number(argv['fs-wait']),
};
const phases: Phase[] = argv.only ? (argv.only.split(',').map((s) => s.trim()) as Phase[]) : [...PHASES];
for (const p of phases) if (!PHASES.includes(p)) throw new Error(`unknown phase "${p}" (known: ${PHASES.join(', ')})`);

const ROOT = resolve(import.meta.dirname, '..');
const RESULTS = join(ROOT, 'bench', 'results');
/** Requests sent back to back (4 in flight) before the timed warm-up of each target. */
const WARM_BURST = 300;
const TARGETS = { addedP50Ms: 5, addedP99Ms: 20, jobsPerSecond: 1000, rate: 200 };
/**
 * The throwaway Postgres (fsync off) and Redis keep their data in memory (/dev/shm) when there is one:
 * on this VM's root filesystem (ext4 without a journal) their file churn, and deleting their folders,
 * made each file easel itself then created (its images, which is what is measured) cost ~1 ms of
 * kernel time. easel's own run folders stay in TMPDIR.
 */
const SERVERS_DIR = existsSync('/dev/shm') ? '/dev/shm' : undefined;

/** Servers whose CPU per job the async runs log (all their processes, 10 ms ticks). */
const SERVER_PROCESSES = ['postgres', 'redis-server'] as const;
const BODY = JSON.stringify({ model: MODEL, prompt: 'a lighthouse on a cliff at dusk, oil painting', n: 1, response_format: 'b64_json' });

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
const mb = (bytes: number) => round(bytes / 1024 / 1024, 1);

/** A 200 with one base64 image, from either the stand-in or easel. */
function isImageAnswer(res: HttpResult): boolean {
  if (res.status !== 200) return false;
  try {
    const b64 = (JSON.parse(res.body.toString('utf8')) as { data?: { b64_json?: string }[] }).data?.[0]?.b64_json;
    return typeof b64 === 'string' && b64.length > 0;
  } catch {
    return false;
  }
}

interface LatencySide {
  /** Requests sent after each segment's ramp (see side()). */
  summary: Summary;
  /** Every request, the ramps included. */
  summaryAll: Summary;
  sent: number;
  errors: number;
  firstError?: string;
  achievedRate: number;
  sendLagP99Ms: number;
  /** The open loop stopped early because answers fell more than 5 s of requests behind. */
  saturated: boolean;
}

interface SyncResult {
  phase: Phase;
  rate: number;
  durationS: number;
  direct: LatencySide;
  easel: LatencySide;
  addedMs: { p50: number; p90: number; p99: number };
  /** The same with each segment's ramp counted. */
  addedAllMs: { p50: number; p99: number };
  easelPeakRssMb: number;
  easelCpuPerRequestMs: number;
  easelMainThreadCpuPerRequestMs: number;
  standinCpuPerRequestMs: number;
  /** Stand-in calls per request through easel: 1 unless something (a cache) answered instead. */
  backendCallsPerRequest: number;
}

interface AsyncResult {
  phase: Phase;
  jobs: number;
  inflight: number;
  concurrency: number;
  jobsPerSecond: number;
  submitPerSecond: number;
  submitLatencyMs: Summary;
  elapsedMs: number;
  succeeded: number;
  notSucceeded: number;
  submitErrors: number;
  firstError?: string;
  attemptsPerJob: number;
  imagesPerJob: number;
  easelPeakRssMb: number;
  easelCpuPerJobMs: number;
  easelMainThreadCpuPerJobMs: number;
  standinCpuPerJobMs: number;
  /** Stand-in calls per job: 1 unless something (a cache) answered instead. */
  backendCallsPerJob: number;
}

/**
 * Latencies of requests sent after the segment's first `rampMs`: each target sits idle while the other
 * is measured, and on this VM the first ~150 ms after seconds of idleness run slow (20–50 ms a
 * request, both targets alike), which no steady load sees. `summaryAll` keeps every request.
 */
function side(r: OpenLoopResult[], durationS: number, rampMs: number): LatencySide {
  const latencies = r.flatMap((x) => x.latencies.filter((_, i) => x.sentAtMs[i]! >= rampMs));
  const lag = summarize(r.flatMap((x) => x.sendLag));
  const sent = r.reduce((a, x) => a + x.sent, 0);
  return {
    summary: summarize(latencies),
    summaryAll: summarize(r.flatMap((x) => x.latencies)),
    sent,
    errors: r.reduce((a, x) => a + x.errors, 0),
    firstError: r.find((x) => x.firstError)?.firstError,
    achievedRate: sent / durationS,
    sendLagP99Ms: lag.p99,
    saturated: r.some((x) => x.saturated),
  };
}

interface Standin {
  url: string;
  pid: number;
  /** Image requests the stand-in has answered so far. */
  count(): Promise<number>;
}

async function syncPhase(phase: Phase, stack: StackOptions, standin: Standin): Promise<SyncResult> {
  const easel = await startEasel(phase, stack, standin.url);
  const direct = new HttpClient(standin.url, { headers: { authorization: 'Bearer sk-standin' } });
  const via = new HttpClient(`${easel.url}/v1`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
  const toDirect = () => direct.request('POST', '/images/generations', BODY);
  const toEasel = () => via.request('POST', '/images/generations', BODY);
  try {
    log(`${phase}: warm-up: ${WARM_BURST} requests 4 at a time, then ${opts.warmupS}s at ${opts.rate}/s, each target`);
    for (const send of [toDirect, toEasel]) {
      // A burst first, so even a low --rate measures optimised code rather than V8's first tiers.
      let burstErrors = 0;
      await closedLoop(WARM_BURST, 4, async () => {
        if (!isImageAnswer(await send())) burstErrors++;
      });
      const w = await openLoop({ rate: opts.rate, durationMs: opts.warmupS * 1000, send, check: isImageAnswer });
      if (w.errors || burstErrors) throw new Error(`${phase}: warm-up failed: ${w.firstError ?? `${burstErrors} bad answers`}`);
    }
    const segments = Math.max(1, Math.round(opts.durationS / opts.segmentS));
    const segMs = (opts.durationS * 1000) / segments;
    const runs: { direct: OpenLoopResult[]; easel: OpenLoopResult[] } = { direct: [], easel: [] };
    let easelCpu = 0;
    let easelMainCpu = 0;
    let backendCalls = 0;
    let standinCpuDirect = 0;
    log(`${phase}: measuring ${opts.durationS}s each at ${opts.rate}/s, alternating ${segments} segments of ${round(segMs / 1000, 1)}s`);
    for (let s = 0; s < segments; s++) {
      const c0 = procCpuSeconds(standin.pid);
      runs.direct.push(await openLoop({ rate: opts.rate, durationMs: segMs, send: toDirect, check: isImageAnswer }));
      standinCpuDirect += procCpuSeconds(standin.pid) - c0;
      const e0 = easel.cpuSeconds();
      const m0 = easel.mainThreadCpuSeconds();
      const n0 = await standin.count();
      runs.easel.push(await openLoop({ rate: opts.rate, durationMs: segMs, send: toEasel, check: isImageAnswer }));
      backendCalls += (await standin.count()) - n0;
      easelCpu += easel.cpuSeconds() - e0;
      easelMainCpu += easel.mainThreadCpuSeconds() - m0;
    }
    const d = side(runs.direct, opts.durationS, opts.rampMs);
    const e = side(runs.easel, opts.durationS, opts.rampMs);
    const mem = easel.memory();
    return {
      phase,
      rate: opts.rate,
      durationS: opts.durationS,
      direct: d,
      easel: e,
      addedMs: { p50: e.summary.p50 - d.summary.p50, p90: e.summary.p90 - d.summary.p90, p99: e.summary.p99 - d.summary.p99 },
      addedAllMs: { p50: e.summaryAll.p50 - d.summaryAll.p50, p99: e.summaryAll.p99 - d.summaryAll.p99 },
      easelPeakRssMb: mb(mem.peakRssBytes),
      easelCpuPerRequestMs: (easelCpu * 1000) / Math.max(1, e.sent),
      easelMainThreadCpuPerRequestMs: (easelMainCpu * 1000) / Math.max(1, e.sent),
      backendCallsPerRequest: backendCalls / Math.max(1, e.sent),
      standinCpuPerRequestMs: (standinCpuDirect * 1000) / Math.max(1, d.sent),
    };
  } finally {
    direct.close();
    via.close();
    await easel.stop();
  }
}

async function asyncPhase(phase: Phase, stack: StackOptions, standin: Standin): Promise<AsyncResult> {
  const easel = await startEasel(phase, stack, standin.url);
  const client = new HttpClient(`${easel.url}/v1`, { headers: { authorization: `Bearer ${ADMIN_KEY}`, prefer: 'respond-async' } });
  let submitErrors = 0;
  let firstError: string | undefined;
  const submit = async () => {
    try {
      const res = await client.request('POST', '/images/generations', BODY);
      if (res.status !== 202) {
        submitErrors++;
        firstError ??= `HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`;
      }
    } catch (err) {
      submitErrors++;
      firstError ??= (err as Error).message;
    }
  };
  const waitFor = async (total: number, timeoutMs: number) => {
    let last = -1;
    let lastChange = Date.now();
    for (;;) {
      const c = await easel.db.terminalCounts();
      if (c.total >= total) return c;
      if (c.total !== last) {
        last = c.total;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > timeoutMs) {
        throw new Error(`${phase}: stuck at ${c.total}/${total} finished jobs for ${timeoutMs} ms`);
      }
      await sleep(100);
    }
  };
  try {
    const warm = Math.min(500, Math.ceil((opts.jobs ?? opts.jobsMax) / 5));
    log(`${phase}: warm-up ${warm} jobs`);
    const w0 = Date.now();
    await closedLoop(warm, opts.inflight, submit);
    if (submitErrors) throw new Error(`${phase}: warm-up submissions failed: ${firstError}`);
    await waitFor(warm, 30_000);
    const warmRate = (warm * 1000) / (Date.now() - w0);
    await sleep(200);
    // A slow stack gets fewer jobs so the whole benchmark stays within a few minutes.
    const jobs = opts.jobs ?? Math.min(opts.jobsMax, Math.max(1000, Math.round((warmRate * opts.jobSeconds) / 100) * 100));

    log(`${phase}: ${jobs} jobs (warm-up ran ${Math.round(warmRate)} jobs/s), ${opts.inflight} submissions in flight, worker concurrency ${opts.concurrency}`);
    const cpu0 = easel.cpuSeconds();
    const main0 = easel.mainThreadCpuSeconds();
    const scpu0 = procCpuSeconds(standin.pid);
    const threads0 = procThreadCpu(easel.pid);
    const self0 = process.cpuUsage();
    const servers0 = procCpuSecondsByName(SERVER_PROCESSES);
    const pgTx0 = await easel.db.transactions?.();
    const redisCmds0 = stack.redisUrl ? await redisCommands(stack.redisUrl) : undefined;
    const redisStats0 = stack.redisUrl && opts.redisStats ? await redisCommandStats(stack.redisUrl) : undefined;
    const calls0 = await standin.count();
    const t0 = Date.now();
    const submitLat = await closedLoop(jobs, opts.inflight, submit);
    const tSubmitted = Date.now();
    const counts = await waitFor(warm + jobs - submitErrors, 30_000);
    const cpu = easel.cpuSeconds() - cpu0;
    const mainCpu = easel.mainThreadCpuSeconds() - main0;
    const scpu = procCpuSeconds(standin.pid) - scpu0;
    const self = process.cpuUsage(self0);
    const servers = procCpuSecondsByName(SERVER_PROCESSES);
    // Round trips easel made per job (each also costs the server a wake-up and the client a write).
    const perJob = (n: number | undefined, n0: number | undefined, what: string) => (n === undefined || n0 === undefined ? '' : `, ${fmt((n - n0) / jobs)} ${what}`);
    const roundTrips = perJob(await easel.db.transactions?.(), pgTx0, 'Postgres transactions') + perJob(stack.redisUrl ? await redisCommands(stack.redisUrl) : undefined, redisCmds0, 'Redis commands');
    if (roundTrips) log(`${phase}: per job${roundTrips.slice(1)} (the counting adds a few)`);
    if (redisStats0 && stack.redisUrl) {
      const after = await redisCommandStats(stack.redisUrl);
      const rows = [...after].map(([cmd, n]) => [cmd, (n - (redisStats0.get(cmd) ?? 0)) / jobs] as const).filter(([, n]) => n >= 0.01).sort((a, b) => b[1] - a[1]);
      log(`${phase}: Redis commands per job (scripts' inner calls included): ${rows.map(([cmd, n]) => `${cmd} ${fmt(n)}`).join(', ')}`);
    }
    const serverCpu = SERVER_PROCESSES.filter((n) => servers[n]! - servers0[n]! > 0)
      .map((n) => `, ${n} ${fmt(((servers[n]! - servers0[n]!) * 1000) / jobs)}`)
      .join('');
    log(`${phase}: CPU ms per job by thread (user+sys): ${threadBreakdown(threads0, procThreadCpu(easel.pid), jobs)}; load generator ${fmt(((self.user + self.system) / 1000) / jobs)}${serverCpu}`);
    const calls = (await standin.count()) - calls0;
    const s = await easel.db.summary(t0);
    const elapsedMs = s.maxFinishedAt - t0;
    const mem = easel.memory();
    return {
      phase,
      jobs,
      inflight: opts.inflight,
      concurrency: opts.concurrency,
      jobsPerSecond: (s.succeeded * 1000) / elapsedMs,
      submitPerSecond: (jobs * 1000) / (tSubmitted - t0),
      submitLatencyMs: summarize(submitLat),
      elapsedMs,
      succeeded: s.succeeded,
      notSucceeded: counts.failed + counts.canceled,
      submitErrors,
      firstError,
      attemptsPerJob: s.attempts / Math.max(1, s.jobs),
      imagesPerJob: s.images / Math.max(1, s.jobs),
      easelPeakRssMb: mb(mem.peakRssBytes),
      easelCpuPerJobMs: (cpu * 1000) / jobs,
      easelMainThreadCpuPerJobMs: (mainCpu * 1000) / jobs,
      standinCpuPerJobMs: (scpu * 1000) / jobs,
      backendCallsPerJob: calls / jobs,
    };
  } finally {
    client.close();
    await easel.stop();
  }
}

/** Calls per Redis command so far (INFO commandstats; scripts' inner calls count under their own names). */
async function redisCommandStats(url: string): Promise<Map<string, number>> {
  const { Redis } = await import('ioredis');
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const info = await client.info('commandstats');
    return new Map([...info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
  } finally {
    client.disconnect();
  }
}

let runSeq = 0;
/** Commands the Redis server has processed so far (Lua scripts count their inner calls). */
async function redisCommands(url: string): Promise<number> {
  const { Redis } = await import('ioredis');
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const info = await client.info('stats');
    return Number(/total_commands_processed:(\d+)/.exec(info)?.[1] ?? Number.NaN);
  } finally {
    client.disconnect();
  }
}

async function startEasel(phase: Phase, stack: StackOptions, standinUrl: string): Promise<EaselProcess> {
  const n = ++runSeq;
  // One folder per run: every thread (the event loop, image writers, engine threads) writes its own profile.
  const nodeFlags = argv['node-flags']!.split(/\s+/).filter(Boolean);
  if (opts.cpuProf) nodeFlags.push('--cpu-prof', `--cpu-prof-dir=${join(RESULTS, 'profiles', `${phase}-${Date.now()}-${n}`)}`);
  return startEaselProcess({ ...stack, prefix: `bench${n}`, standinUrl, concurrency: opts.concurrency, nodeFlags, config: opts.config });
}

/** `name user+sys` per thread group, in ms per job, largest first. */
function threadBreakdown(before: ReturnType<typeof procThreadCpu>, after: ReturnType<typeof procThreadCpu>, jobs: number): string {
  const rows: [string, number, number][] = [];
  for (const [name, a] of after) {
    const b = before.get(name) ?? { user: 0, sys: 0 };
    rows.push([name, ((a.user - b.user) * 1000) / jobs, ((a.sys - b.sys) * 1000) / jobs]);
  }
  return rows
    .filter(([, u, s]) => u + s > 0.005)
    .sort((x, y) => y[1] + y[2] - (x[1] + x[2]))
    .map(([n, u, s]) => `${n} ${fmt(u)}+${fmt(s)}`)
    .join(', ');
}

function fmt(v: number, digits = 2): string {
  return Number.isFinite(v) ? v.toFixed(digits) : '—';
}

function pad(cells: string[], widths: number[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => pad(r, widths)).join('\n');
}

/** Above this many ms per created file the filesystem is still paying for recent deletions. */
const FS_SETTLED_MS = 0.2;

/**
 * Waits (up to --fs-wait seconds) until creating a file in TMPDIR is fast again. This VM's root
 * filesystem (ext4 without a journal) scans past every inode deleted in the last few minutes when it
 * allocates one, so for some minutes after thousands of files were removed (an earlier benchmark's run
 * folders, the test suite) each file easel creates costs ~1 ms of kernel CPU instead of ~0.04 ms.
 * Measuring then would charge that to easel; the probe is printed with the results either way.
 */
async function settledFileCreation(): Promise<number> {
  const deadline = Date.now() + opts.fsWaitS * 1000;
  let ms = fileCreateProbe(tmpdir());
  if (ms <= FS_SETTLED_MS || opts.fsWaitS <= 0) return ms;
  log(`creating a file in ${tmpdir()} takes ${ms.toFixed(3)} ms (recently deleted files on this filesystem); waiting up to ${opts.fsWaitS}s for it to settle (--fs-wait 0 skips)`);
  while (ms > FS_SETTLED_MS && Date.now() < deadline) {
    await sleep(15_000);
    ms = fileCreateProbe(tmpdir());
  }
  log(ms > FS_SETTLED_MS ? `still ${ms.toFixed(3)} ms per file; measuring anyway` : `settled: ${ms.toFixed(3)} ms per file`);
  return ms;
}

async function main() {
  mkdirSync(RESULTS, { recursive: true });
  const started = Date.now();
  const load0 = loadavg();
  const speed0 = cpuSpeedProbe();
  const cpu0 = machineCpu();
  log(`node ${process.version}, ${cpus().length} CPUs, load average ${load0.map((l) => l.toFixed(2)).join(' ')}, CPU speed probe ${speed0.toFixed(2)} ns/iteration`);
  const fsCreate0 = await settledFileCreation();
  const { child: standinChild, match } = await spawnNode([join(ROOT, 'bench', 'standin-process.ts')], {
    ready: /^(\{.*\})$/m,
    env: { ...process.env, BENCH_IMAGE_SIZE: String(opts.imageSize) },
  });
  const standinInfo = JSON.parse(match[1]!) as { url: string; pngBytes: number };
  const counts: ((n: number) => void)[] = [];
  createInterface({ input: standinChild.proc.stdout! }).on('line', (line) => {
    const m = /^\{"count":(\d+)\}$/.exec(line.trim());
    if (m) counts.shift()?.(Number(m[1]));
  });
  const standin: Standin = {
    url: standinInfo.url,
    pid: standinChild.pid,
    count: () =>
      new Promise<number>((resolve) => {
        counts.push(resolve);
        standinChild.proc.stdin!.write('count\n');
      }),
  };
  log(`stand-in on ${standin.url} (PNG ${standinInfo.pngBytes} bytes)`);

  const syncResults: SyncResult[] = [];
  const asyncResults: AsyncResult[] = [];
  const skipped: string[] = [];
  let redis: Awaited<ReturnType<typeof startRedis>>;
  let postgres: Awaited<ReturnType<typeof startPostgresServer>>;
  try {
    for (let rep = 0; rep < opts.repeat; rep++) for (const phase of phases) {
      let stack: StackOptions = {};
      let dropDatabase: (() => Promise<void>) | undefined;
      if (phase.endsWith('redis-pg')) {
        if (!redis) redis = await startRedis({ parentDir: SERVERS_DIR });
        if (!postgres) postgres = await startPostgresServer({ parentDir: SERVERS_DIR });
        if (!redis || !postgres) {
          skipped.push(`${phase}: ${!redis ? 'redis-server' : 'Postgres (initdb/pg_ctl)'} not found`);
          log(`skipping ${phase}: ${skipped.at(-1)}`);
          continue;
        }
        // A fresh database per run (each easel migrates its own) on one throwaway server.
        const dbase = await createTestDatabase(postgres.adminUrl);
        stack = { databaseUrl: dbase.url, redisUrl: redis.url };
        dropDatabase = () => dbase.stop();
      }
      if (phase.startsWith('sync')) syncResults.push(await syncPhase(phase, stack, standin));
      else asyncResults.push(await asyncPhase(phase, stack, standin));
      // Dropped once its run is over, so autovacuum does not clean up after it during the next run.
      await dropDatabase?.().catch(() => {});
    }
  } finally {
    await standinChild.stop();
    await redis?.stop().catch(() => {});
    await postgres?.stop().catch(() => {});
  }

  const lines: string[] = [];
  lines.push('');
  lines.push(`easel benchmark — node ${process.version}, ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), ${quick ? 'quick' : 'full'} run, ${round((Date.now() - started) / 1000, 0)} s`);
  if (syncResults.length) {
    lines.push('');
    lines.push(`(a) sync latency (${opts.imageSize}×${opts.imageSize} PNG, ${standinInfo.pngBytes} bytes), open loop at ${opts.rate} req/s, ${opts.durationS} s measured per target (ms)`);
    const rows = [['run', 'target', 'p50', 'p90', 'p99', 'max', 'errors', 'req/s']];
    for (const r of syncResults) {
      for (const [name, s] of [['stand-in direct', r.direct], ['through easel', r.easel]] as const) {
        rows.push([r.phase, name, fmt(s.summary.p50), fmt(s.summary.p90), fmt(s.summary.p99), fmt(s.summary.max), String(s.errors), `${fmt(s.achievedRate, 0)}${s.saturated ? ' SATURATED' : ''}`]);
      }
      const ok50 = r.addedMs.p50 <= TARGETS.addedP50Ms ? 'ok' : 'MISS';
      const ok99 = r.addedMs.p99 <= TARGETS.addedP99Ms ? 'ok' : 'MISS';
      rows.push([r.phase, 'added by easel', `${fmt(r.addedMs.p50)} ${ok50}`, fmt(r.addedMs.p90), `${fmt(r.addedMs.p99)} ${ok99}`, '', '', '']);
    }
    lines.push(table(rows));
    if (opts.rampMs > 0) {
      lines.push(`The first ${opts.rampMs} ms of each ${round(opts.durationS / Math.max(1, Math.round(opts.durationS / opts.segmentS)), 1)} s segment are not counted (each target idles while the other is measured; --ramp 0 counts them). Counting them, added p50/p99:`);
      lines.push(`  ${syncResults.map((r) => `${r.phase} ${fmt(r.addedAllMs.p50)} / ${fmt(r.addedAllMs.p99)} ms`).join('; ')}`);
    }
    if (opts.repeat > 1) {
      for (const phase of new Set(syncResults.map((r) => r.phase))) {
        const rs = syncResults.filter((r) => r.phase === phase);
        const range = (f: (r: SyncResult) => number) => `median ${fmt(median(rs.map(f)))} (range ${fmt(Math.min(...rs.map(f)))}–${fmt(Math.max(...rs.map(f)))})`;
        lines.push(`${phase}, ${rs.length} runs: added p50 ${range((r) => r.addedMs.p50)}, added p99 ${range((r) => r.addedMs.p99)} ms`);
      }
    }
    if (syncResults.some((r) => r.easel.saturated)) lines.push('SATURATED: easel fell more than 5 s of requests behind, so sending stopped early; its latencies are queueing delay.');
    lines.push(`targets: added p50 ≤ ${TARGETS.addedP50Ms} ms, p99 ≤ ${TARGETS.addedP99Ms} ms at ${TARGETS.rate} req/s`);
  }
  if (asyncResults.length) {
    lines.push('');
    lines.push(`(b) async throughput (${opts.imageSize}×${opts.imageSize} PNG), ${opts.inflight} submissions in flight, worker concurrency ${opts.concurrency}`);
    const rows = [['run', 'jobs', 'jobs/s', 'submit/s', 'submit p50', 'submit p99', 'elapsed s', 'succeeded', 'failed', 'attempts/job']];
    for (const r of asyncResults) {
      rows.push([
        r.phase,
        String(r.jobs),
        `${fmt(r.jobsPerSecond, 0)} ${r.jobsPerSecond >= TARGETS.jobsPerSecond ? 'ok' : 'MISS'}`,
        fmt(r.submitPerSecond, 0),
        fmt(r.submitLatencyMs.p50),
        fmt(r.submitLatencyMs.p99),
        fmt(r.elapsedMs / 1000),
        String(r.succeeded),
        String(r.notSucceeded + r.submitErrors),
        fmt(r.attemptsPerJob, 3),
      ]);
    }
    lines.push(table(rows));
    if (opts.repeat > 1) {
      for (const phase of new Set(asyncResults.map((r) => r.phase))) {
        const v = asyncResults.filter((r) => r.phase === phase).map((r) => r.jobsPerSecond);
        lines.push(`${phase}, ${v.length} runs: median ${fmt(median(v), 0)} jobs/s (range ${fmt(Math.min(...v), 0)}–${fmt(Math.max(...v), 0)})`);
      }
    }
    lines.push(`target: ≥ ${TARGETS.jobsPerSecond} jobs/s`);
  }
  lines.push('');
  lines.push('(c) easel process peak RSS (VmHWM); CPU per request (sync) or per job (async); stand-in calls per request or job');
  lines.push(
    table([
      ['run', 'peak RSS MB', 'easel CPU ms', 'main thread ms', 'stand-in CPU ms', 'backend calls'],
      ...syncResults.map((r) => [r.phase, fmt(r.easelPeakRssMb, 1), fmt(r.easelCpuPerRequestMs), fmt(r.easelMainThreadCpuPerRequestMs), fmt(r.standinCpuPerRequestMs), fmt(r.backendCallsPerRequest, 3)]),
      ...asyncResults.map((r) => [r.phase, fmt(r.easelPeakRssMb, 1), fmt(r.easelCpuPerJobMs), fmt(r.easelMainThreadCpuPerJobMs), fmt(r.standinCpuPerJobMs), fmt(r.backendCallsPerJob, 3)]),
    ]),
  );
  const steal = stealFraction(cpu0, machineCpu());
  const speed1 = cpuSpeedProbe();
  const fsCreate1 = fileCreateProbe(tmpdir());
  lines.push(`load average at start ${load0.map((l) => l.toFixed(2)).join(' ')}, at end ${loadavg().map((l) => l.toFixed(2)).join(' ')} (other work on the machine skews every figure)`);
  lines.push(
    `CPU speed probe (a fixed integer loop; lower is faster) ${speed0.toFixed(2)} ns/iteration at start, ${speed1.toFixed(2)} at end; ` +
      `${(steal * 100).toFixed(1)}% of CPU time stolen by the hypervisor during the run. Compare figures only between runs whose probes agree.`,
  );
  lines.push(`file creation probe (${tmpdir()}, where easel writes its images) ${fmt(fsCreate0, 3)} ms per file at start, ${fmt(fsCreate1, 3)} at end (settled: under ${FS_SETTLED_MS} ms).`);
  for (const s of skipped) lines.push(`skipped ${s}`);
  const firstErrors = [...syncResults.flatMap((r) => [r.direct.firstError, r.easel.firstError]), ...asyncResults.map((r) => r.firstError)].filter(Boolean);
  if (firstErrors.length) lines.push(`first errors: ${firstErrors.join(' | ')}`);
  process.stdout.write(`${lines.join('\n')}\n`);

  const result = {
    at: new Date(started).toISOString(),
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model,
    totalMemMb: mb(totalmem()),
    loadAverageAtStart: load0,
    loadAverageAtEnd: loadavg(),
    cpuSpeedProbeNs: { start: speed0, end: speed1 },
    cpuStealFraction: steal,
    fileCreateProbeMs: { start: fsCreate0, end: fsCreate1 },
    quick,
    options: opts,
    targets: TARGETS,
    standin: { pngBytes: standinInfo.pngBytes, separateProcess: true, benchPeakRssMb: mb(procMemory(process.pid).peakRssBytes) },
    sync: syncResults,
    async: asyncResults,
    skipped,
    durationS: (Date.now() - started) / 1000,
  };
  const json = JSON.stringify(result, (_k, v) => (typeof v === 'number' ? (Number.isFinite(v) ? round(v, 3) : null) : v), 2);
  const out = argv.out ?? join(RESULTS, 'latest.json');
  writeFileSync(out, json);
  writeFileSync(join(RESULTS, `run-${new Date(started).toISOString().replace(/[:.]/g, '-')}.json`), json);
  log(`wrote ${out}`);
}

await main();
