/**
 * GPU scheduling benchmark: how much a pool of self-hosted GPUs gets through under saturation with
 * (a) one job at a time in arrival order (the design most tutorials ship: each free host takes the
 *     next job, one image per call, whatever checkpoint it needs), and
 * (b) easel's scheduling (batching of compatible jobs up to 4 images, model affinity, a starvation
 *     bound).
 *
 * Both drive the real backend code (`ComfyUIBackend`, and in the full run `A1111Backend`) against
 * two loopback stand-in hosts over HTTP and websocket; only the scheduling config differs. Jobs are
 * fed like the worker does: 32 generate() calls in flight, the next job submitted as one finishes.
 *
 * Workload: rows of bench/data/krea-open-prompts-sample.csv (krea-ai/open-prompts, data/1k.csv),
 * with their sizes and step counts; each prompt asks for its `generations` images (capped at 4) as
 * separate n=1 jobs (the way most UIs submit "4 variations"), interleaved with 5 other prompts in
 * flight at a time; each prompt uses one of three SD 1.5-family checkpoints (50/30/20 %).
 *
 * Latency model of a host (real-GPU figures, then all multiplied by `scale`, 0.05 by default, to
 * keep the run short): a call takes 300 ms + 40 ms per step of a 512×512 image × pixels/512² ×
 * (1 + 0.6·(batch−1)), so a batch of 4 costs 70 % of four single calls per image; loading another
 * checkpoint costs 3 s. Host busy time is what the stand-ins spent executing (loads included).
 *
 *   node bench/gpu-scheduling.ts            # full: ComfyUI and A1111, 320 jobs each mode
 *   node bench/gpu-scheduling.ts --quick    # ComfyUI only, 100 jobs
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ComfyUIBackend } from '../src/backends/comfyui/comfyui-backend.ts';
import { A1111Backend } from '../src/backends/a1111/a1111-backend.ts';
import type { BackendCallContext, BackendRequest, ImageBackend } from '../src/backends/image-backend.ts';
import type { HostPool } from '../src/backends/pool/host-pool.ts';
import { ComfyUIStandin } from '../tests/support/comfyui-standin.ts';
import type { LatencyModel } from '../tests/support/comfyui-standin.ts';
import { A1111Standin } from '../tests/support/a1111-standin.ts';

export interface GpuBenchOptions {
  quick?: boolean;
  /** Jobs per run (default 320, quick 100). */
  jobs?: number;
  /** Multiplies every duration of the latency model (default 0.05). */
  scale?: number;
  /** generate() calls in flight, as the worker's concurrency (default 32). */
  concurrency?: number;
  backends?: Array<'comfyui' | 'a1111'>;
  log?: (line: string) => void;
}

/** Per-call latency of a real GPU host (ms), before scaling. */
export const REAL_LATENCY: LatencyModel = { msPerStep: 40, overheadMs: 300, batchFactor: 0.6, switchMs: 3000 };
const CHECKPOINTS: Array<[string, number]> = [
  ['v1-5-pruned-emaonly.safetensors', 0.5],
  ['dreamshaper_8.safetensors', 0.3],
  ['realisticVisionV51.safetensors', 0.2],
];
const MAX_GENERATIONS = 4;
const ACTIVE_PROMPTS = 6;

interface Row {
  prompt: string;
  width: number;
  height: number;
  steps: number;
  cfg: number;
  generations: number;
}

export interface BenchJob {
  prompt: string;
  width: number;
  height: number;
  steps: number;
  cfg: number;
  checkpoint: string;
}

function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else if (ch !== '\r') field += ch;
  }
  if (field || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

function loadRows(): Row[] {
  const here = dirname(fileURLToPath(import.meta.url));
  const [header, ...rows] = parseCsv(readFileSync(join(here, 'data', 'krea-open-prompts-sample.csv'), 'utf8'));
  const col = (name: string) => header!.indexOf(name);
  return rows
    .filter((r) => r.length === header!.length)
    .map((r) => ({
      prompt: r[col('prompt')]!,
      width: Number(r[col('width')]),
      height: Number(r[col('height')]),
      steps: Number(r[col('steps')]),
      cfg: Number(r[col('cfg_scale')]),
      generations: Math.max(1, Number(r[col('generations')]) || 1),
    }));
}

/** A small seeded PRNG (mulberry32), so every run sees the same workload. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` jobs in arrival order. */
export function buildWorkload(count: number, seed = 42): BenchJob[] {
  const rows = loadRows();
  const rand = rng(seed);
  const pickCheckpoint = () => {
    let x = rand();
    for (const [name, w] of CHECKPOINTS) {
      if ((x -= w) < 0) return name;
    }
    return CHECKPOINTS[0]![0];
  };
  const jobs: BenchJob[] = [];
  let next = 0;
  const active: Array<{ job: BenchJob; left: number }> = [];
  const refill = () => {
    while (active.length < ACTIVE_PROMPTS && next < rows.length) {
      const r = rows[next++]!;
      active.push({ job: { prompt: r.prompt, width: r.width, height: r.height, steps: r.steps, cfg: r.cfg, checkpoint: pickCheckpoint() }, left: Math.min(MAX_GENERATIONS, r.generations) });
    }
  };
  refill();
  while (jobs.length < count && active.length) {
    const i = Math.floor(rand() * active.length);
    const a = active[i]!;
    jobs.push({ ...a.job });
    if (--a.left === 0) {
      active.splice(i, 1);
      refill();
    }
  }
  return jobs;
}

type Mode = 'arrival-order' | 'easel' | 'easel-no-queue-ahead';

interface Host {
  url: string;
  busyMs: number;
  executions: Array<{ startedAt: number; endedAt: number; batch: number; switched: boolean }>;
  close(): Promise<void>;
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : 0;
};
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

async function runOnce(
  kind: 'comfyui' | 'a1111',
  mode: Mode,
  jobs: BenchJob[],
  opts: { scale: number; concurrency: number },
): Promise<Record<string, unknown>> {
  const latency: LatencyModel = {
    msPerStep: REAL_LATENCY.msPerStep * opts.scale,
    overheadMs: REAL_LATENCY.overheadMs * opts.scale,
    batchFactor: REAL_LATENCY.batchFactor,
    switchMs: REAL_LATENCY.switchMs * opts.scale,
  };
  const checkpoints = CHECKPOINTS.map(([n]) => n);
  const hosts: Host[] = [];
  for (let i = 0; i < 2; i++) {
    const h = kind === 'comfyui' ? new ComfyUIStandin({ latency, checkpoints, outputSize: 8, historyDelayMs: 1 }) : new A1111Standin({ latency, checkpoints, outputSize: 8 });
    await h.start();
    hosts.push(h);
  }
  // easel: the defaults (batches of up to 4, affinity, one prompt queued ahead on ComfyUI hosts) with
  // the starvation bound scaled like every other duration. Arrival order: one image per call, no
  // affinity, nothing queued ahead.
  const scheduling =
    mode === 'easel'
      ? { affinityMaxWaitSeconds: 30 * opts.scale }
      : mode === 'easel-no-queue-ahead'
        ? { affinityMaxWaitSeconds: 30 * opts.scale, queueAheadPerHost: 0 }
        : { maxBatchSize: 1, affinity: false, queueAheadPerHost: 0 };
  const { queueAheadPerHost, ...pooling } = { queueAheadPerHost: undefined as number | undefined, ...scheduling };
  const common = { name: 'bench', hosts: hosts.map((h) => h.url), maxQueueDepth: 1000, healthIntervalSeconds: 5, ...pooling };
  // (A1111 has no queue-ahead: its webui runs one generation at a time and reports progress per host.)
  const backend: ImageBackend & { pool: HostPool } =
    kind === 'comfyui'
      ? new ComfyUIBackend({ type: 'comfyui', ...common, ...(queueAheadPerHost !== undefined ? { queueAheadPerHost } : {}) })
      : new A1111Backend({ type: 'a1111', progressPollMs: 1000, ...common });
  await backend.pool.probeAll();

  const latencies: number[] = [];
  let images = 0;
  let failures = 0;
  let submitted = 0;
  const t0 = Date.now();
  const runJob = async (job: BenchJob) => {
    const req: BackendRequest = {
      kind: 'generation', model: job.checkpoint, prompt: job.prompt, n: 1, size: { width: job.width, height: job.height },
      steps: job.steps, guidanceScale: job.cfg, outputFormat: 'png', inputImages: [], providerOptions: {},
    };
    const ctx: BackendCallContext = { jobId: `j${submitted}`, signal: new AbortController().signal, reportProgress() {}, savedState: undefined, saveState: async () => {} };
    const started = Date.now();
    try {
      const res = await backend.generate(req, ctx);
      images += res.images.length;
      latencies.push(Date.now() - started);
    } catch {
      failures++;
    }
  };
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (submitted < jobs.length) await runJob(jobs[submitted++]!);
    }),
  );
  const wallMs = Date.now() - t0;
  await backend.close?.();
  for (const h of hosts) await h.close();

  // Saturation: from the start until the last call started (work was waiting all that time).
  const all = hosts.flatMap((h) => h.executions);
  const satEnd = Math.max(...all.map((e) => e.startedAt));
  const busyIn = (from: number, to: number) =>
    hosts.map((h) => h.executions.reduce((a, e) => a + Math.max(0, Math.min(e.endedAt || to, to) - Math.max(e.startedAt, from)), 0) / (to - from));
  const busyTotal = hosts.map((h) => h.busyMs / wallMs);
  const busySat = busyIn(t0, satEnd);
  const batchSizes: Record<number, number> = {};
  for (const e of all) batchSizes[e.batch] = (batchSizes[e.batch] ?? 0) + 1;
  const ips = images / (wallMs / 1000);
  return {
    backend: kind,
    mode,
    jobs: jobs.length,
    images,
    failures,
    wallSeconds: round(wallMs / 1000),
    imagesPerSecond: round(ips, 3),
    /** What the same run does on real GPUs of the modelled speed (everything was scaled by `scale`). */
    imagesPerSecondRealTime: round(ips * opts.scale, 3),
    busyPercent: round((100 * busyTotal.reduce((a, b) => a + b, 0)) / hosts.length, 1),
    busyPercentSaturated: round((100 * busySat.reduce((a, b) => a + b, 0)) / hosts.length, 1),
    busyPercentPerHost: busyTotal.map((b) => round(100 * b, 1)),
    hostCalls: all.length,
    checkpointSwitches: all.filter((e) => e.switched).length,
    meanBatch: round(images / Math.max(1, all.length)),
    batchSizes,
    latencyP50Seconds: round(percentile(latencies, 50) / 1000),
    latencyP95Seconds: round(percentile(latencies, 95) / 1000),
  };
}

export async function runGpuSchedulingBench(opts: GpuBenchOptions = {}): Promise<Record<string, unknown>> {
  const quick = opts.quick ?? false;
  const scale = opts.scale ?? 0.05;
  const concurrency = opts.concurrency ?? 32;
  const count = opts.jobs ?? (quick ? 100 : 320);
  const kinds = opts.backends ?? (quick ? ['comfyui'] : ['comfyui', 'a1111']);
  const log = opts.log ?? (() => {});
  const jobs = buildWorkload(count);
  const runs: Array<Record<string, unknown>> = [];
  const comparisons: Record<string, unknown> = {};
  for (const kind of kinds) {
    const pair: Record<string, Record<string, unknown>> = {};
    // The full run also shows what batching and affinity alone give on ComfyUI (no queue-ahead).
    const modes: Mode[] = kind === 'comfyui' && !quick ? ['arrival-order', 'easel', 'easel-no-queue-ahead'] : ['arrival-order', 'easel'];
    for (const mode of modes) {
      log(`gpu-scheduling: ${kind} ${mode} (${jobs.length} jobs)…`);
      const r = await runOnce(kind, mode, jobs, { scale, concurrency });
      runs.push(r);
      pair[mode] = r;
    }
    comparisons[kind] = {
      throughputRatio: round((pair.easel!.imagesPerSecond as number) / (pair['arrival-order']!.imagesPerSecond as number), 2),
      busyPercentSaturated: pair.easel!.busyPercentSaturated,
      meetsThroughputTarget: (pair.easel!.imagesPerSecond as number) >= 1.5 * (pair['arrival-order']!.imagesPerSecond as number),
      meetsBusyTarget: (pair.easel!.busyPercentSaturated as number) >= 95,
    };
  }
  return {
    hosts: 2,
    scale,
    latencyModel: { ...REAL_LATENCY, note: 'real-GPU milliseconds; every duration multiplied by scale in the run' },
    workload: {
      source: 'krea-ai/open-prompts data/1k.csv (sample in bench/data)',
      jobs: jobs.length,
      prompts: new Set(jobs.map((j) => j.prompt)).size,
      checkpoints: Object.fromEntries(CHECKPOINTS.map(([n]) => [n, jobs.filter((j) => j.checkpoint === n).length])),
      concurrency,
    },
    runs,
    comparisons,
  };
}

function printTable(result: Record<string, unknown>): void {
  const runs = result.runs as Array<Record<string, any>>;
  const cols: Array<[string, (r: Record<string, any>) => string]> = [
    ['backend', (r) => r.backend],
    ['mode', (r) => r.mode],
    ['images', (r) => String(r.images)],
    ['wall s', (r) => String(r.wallSeconds)],
    ['img/s', (r) => String(r.imagesPerSecond)],
    ['img/s real', (r) => String(r.imagesPerSecondRealTime)],
    ['busy %', (r) => String(r.busyPercent)],
    ['busy % sat.', (r) => String(r.busyPercentSaturated)],
    ['calls', (r) => String(r.hostCalls)],
    ['switches', (r) => String(r.checkpointSwitches)],
    ['mean batch', (r) => String(r.meanBatch)],
    ['p50 s', (r) => String(r.latencyP50Seconds)],
    ['p95 s', (r) => String(r.latencyP95Seconds)],
  ];
  const widths = cols.map(([h, f]) => Math.max(h.length, ...runs.map((r) => f(r).length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  console.log(line(cols.map(([h]) => h)));
  for (const r of runs) console.log(line(cols.map(([, f]) => f(r))));
  console.log();
  for (const [kind, c] of Object.entries(result.comparisons as Record<string, any>)) {
    console.log(`${kind}: easel ${c.throughputRatio}× the throughput of arrival order; hosts ${c.busyPercentSaturated}% busy under saturation`);
  }
  console.log(`(durations scaled by ${result.scale}; "img/s real" is the same run on GPUs of the modelled speed)`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const quick = process.argv.includes('--quick');
  const result = await runGpuSchedulingBench({ quick, log: (l) => console.error(l) });
  printTable(result);
  if (process.argv.includes('--json')) console.log(JSON.stringify(result, null, 2));
}
