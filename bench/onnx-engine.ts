/**
 * Benchmark of easel's built-in engine on random-weight replicas of SD-Turbo (tests/onnx/support/
 * sd-architecture.ts: the real layer shapes; the real weights cannot be downloaded here):
 *
 *   (a) engine overhead: the same text encoder, UNet and decoder fed the same tensors as bare
 *       `session.run` calls, then through the engine (tokenizer, noise, sampler, decode to RGB);
 *       overhead = extra time over the bare runs (best of n, wall and CPU), and the engine's own wall
 *       time outside session.run. Also end to end through the backend (worker thread, PNG encoding).
 *   (b) seconds per UNet step, per VAE decode and per TAESD decode, at 512² (full) or 256² (quick).
 *   (c) peak memory (VmHWM) per phase, reset between phases where the kernel allows it.
 *   plus a check that a UNet row is bit-identical alone and inside a batch of 2 (what lets queued
 *   jobs share a batch without changing their bytes).
 *
 *   node bench/onnx-engine.ts            # SD-Turbo shapes, 512² (~5 min; builds ~4.6 GB of weights once)
 *   node bench/onnx-engine.ts --quick    # the same topology at quarter width, 256² (~1 min)
 *
 * Models are cached under $TMPDIR/easel-onnx-bench/<scale>/ (EASEL_ONNX_BENCH_DIR to move them).
 */
import { availableParallelism, tmpdir, cpus, loadavg, totalmem } from 'node:os';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { Engine } from '../src/backends/onnx/engine.ts';
import { OnnxBackend } from '../src/backends/onnx/onnx-backend.ts';
import { ClipTokenizer } from '../src/backends/onnx/clip-tokenizer.ts';
import { SeededRandom } from '../src/backends/onnx/random.ts';
import { DEFAULT_NOISE_SCHEDULE, sigmaTable } from '../src/backends/onnx/schedulers.ts';
import { SD_TURBO, SD_TURBO_QUARTER, buildSdFolders } from '../tests/onnx/support/sd-architecture.ts';
import { TOKENIZER_FIXTURE } from '../tests/onnx/support/tiny-models.ts';

export interface OnnxBenchOptions {
  quick?: boolean;
  /** Intra-op threads (default: all cores). */
  threads?: number;
  /** Where the replica models are cached. */
  dir?: string;
  /** Progress lines (default: stderr). */
  log?: (line: string) => void;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
/** Best of n: on a shared host the fastest run is the one least disturbed by other load. */
const best = (xs: number[]) => Math.min(...xs);
const r3 = (v: number) => Math.round(v * 1000) / 1000;
const mib = (kb: number) => Math.round(kb / 1024);

/** Peak and current RSS in KiB from /proc (VmHWM covers native ORT memory and worker threads). */
function memory(): { peakKb: number; rssKb: number } {
  try {
    const s = readFileSync('/proc/self/status', 'utf8');
    const field = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0);
    return { peakKb: field('VmHWM'), rssKb: field('VmRSS') };
  } catch {
    const kb = process.resourceUsage().maxRSS;
    return { peakKb: kb, rssKb: Math.round(process.memoryUsage().rss / 1024) };
  }
}

/** Resets VmHWM to the current RSS (Linux ≥ 4.0); false where not allowed. */
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

async function time<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await fn();
  return [(performance.now() - t0) / 1000, v];
}

/** Wall and CPU seconds (all threads of this process: ORT's pool and worker threads included). */
async function timeCpu<T>(fn: () => Promise<T>): Promise<{ wall: number; cpu: number; value: T }> {
  const c0 = process.cpuUsage();
  const [wall, value] = await time(fn);
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1e6, value };
}

export async function runOnnxBench(opts: OnnxBenchOptions = {}): Promise<Record<string, unknown>> {
  const log = opts.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const quick = opts.quick ?? false;
  const arch = quick ? SD_TURBO_QUARTER : SD_TURBO;
  const size = quick ? 256 : 512;
  const threads = opts.threads ?? availableParallelism();
  const reps = quick ? 5 : 3;
  const root = opts.dir ?? join(process.env.EASEL_ONNX_BENCH_DIR ?? join(tmpdir(), 'easel-onnx-bench'), quick ? 'sd-turbo-quarter' : 'sd-turbo');
  const canReset = resetPeak();
  const phases: Record<string, { peakMiB: number; rssMiB: number }> = {};
  const phaseEnd = (name: string) => {
    const m = memory();
    phases[name] = { peakMiB: mib(m.peakKb), rssMiB: mib(m.rssKb) };
    if (canReset) resetPeak();
  };

  log(`onnx bench: ${quick ? 'quarter-width SD-Turbo replica, 256²' : 'SD-Turbo-shaped replica, 512²'}, ${threads} threads, models in ${root}`);
  if (!existsSync(join(root, 'params.json'))) log('building random-weight models (once)…');
  const folders = buildSdFolders(root, arch, TOKENIZER_FIXTURE);
  phaseEnd('build');

  // (a, b) The engine and bare session.run on the very same sessions, alternating, so other load on
  // the host hits both alike. The bare runs get the tensors the engine feeds for seed 1: x_T =
  // noise·σmax, UNet input x_T/√(σ²+1), then x0 = x_T − σ·ε to the decoders (÷0.18215 for the VAE).
  log('engine and bare session.run, alternating…');
  const engine = new Engine({ executionProvider: 'cpu', deviceId: 0, intraOpThreads: threads, keepLoaded: 1, warn: log });
  const item = [{ prompt: 'An astronaut riding a horse', seed: 1 }];
  const gen = (taesdDir?: string) => engine.generate({ modelDir: folders.model, taesdDir, width: size, height: size, items: item });
  const [engineFirstS, first] = await time(() => gen(folders.taesd));
  const sessions = await engine.sessionsFor(folders.model, folders.taesd);
  const tok = ClipTokenizer.fromDir(join(folders.model, 'tokenizer'), { padToken: '!' });
  const ids = new ort.Tensor('int32', Int32Array.from(tok.encodePadded(item[0]!.prompt)), [1, 77]);
  const lat = size / 8;
  const sigma = sigmaTable(DEFAULT_NOISE_SCHEDULE)[999]!;
  const t999 = new ort.Tensor('int64', BigInt64Array.of(999n), [1]);
  const hidden = (await sessions.text.run({ input_ids: ids }, ['last_hidden_state'])).last_hidden_state!;
  const xT = new SeededRandom(1).fillNormal(new Float32Array(4 * lat * lat)).map((v) => v * sigma);
  const unetIn = new ort.Tensor('float32', xT.map((v) => v / Math.sqrt(sigma * sigma + 1)), [1, 4, lat, lat]);
  const unetFeeds = { sample: unetIn, timestep: t999, encoder_hidden_states: hidden };
  const eps = (await sessions.unet.run(unetFeeds, ['out_sample'])).out_sample!.data as Float32Array;
  const x0 = xT.map((v, j) => v - sigma * eps[j]!);
  const vaeIn = new ort.Tensor('float32', x0.map((v) => v / 0.18215), [1, 4, lat, lat]);
  const taesdIn = new ort.Tensor('float32', x0, [1, 4, lat, lat]);
  type Sample = { wall: number; cpu: number };
  const bare: Record<'text' | 'unet' | 'vae' | 'taesd', Sample[]> = { text: [], unet: [], vae: [], taesd: [] };
  const eng: Record<'vae' | 'taesd', (Sample & { total: number; run: number })[]> = { vae: [], taesd: [] };
  for (let i = 0; i < reps; i++) {
    bare.text.push(await timeCpu(() => sessions.text.run({ input_ids: ids }, ['last_hidden_state'])));
    bare.unet.push(await timeCpu(() => sessions.unet.run(unetFeeds, ['out_sample'])));
    bare.taesd.push(await timeCpu(() => sessions.taesd!.run({ latent_sample: taesdIn }, ['sample'])));
    for (const [dir, into] of [[folders.taesd, eng.taesd], [undefined, eng.vae]] as const) {
      const { wall, cpu, value: r } = await timeCpu(() => gen(dir));
      into.push({ wall, cpu, total: r.timings.totalMs / 1000, run: r.timings.runMs / 1000 });
    }
    bare.vae.push(await timeCpu(() => sessions.vaeDecoder!.run({ latent_sample: vaeIn }, ['sample'])));
  }

  // A UNet row alone and inside a batch of 2 must be bit-identical (jobs share batches safely).
  const pair = new Float32Array(2 * xT.length);
  pair.set(new SeededRandom(8).fillNormal(new Float32Array(xT.length)));
  pair.set(unetIn.data as Float32Array, xT.length);
  const hd = hidden.data as Float32Array;
  const h2 = new Float32Array(2 * hd.length);
  h2.set(hd);
  h2.set(hd, hd.length);
  const batch2 = await timeCpu(() =>
    sessions.unet.run({ sample: new ort.Tensor('float32', pair, [2, 4, lat, lat]), timestep: t999, encoder_hidden_states: new ort.Tensor('float32', h2, [2, 77, arch.textWidth]) }, ['out_sample']),
  );
  const row = (batch2.value.out_sample!.data as Float32Array).subarray(xT.length);
  const batchInvariant = Buffer.from(eps.buffer, eps.byteOffset, eps.byteLength).equals(Buffer.from(row.buffer, row.byteOffset, row.byteLength));
  await engine.close();
  phaseEnd('engine (in-process)');

  const bestOf = (xs: Sample[]) => ({ wall: best(xs.map((x) => x.wall)), cpu: best(xs.map((x) => x.cpu)) });
  const textR = bestOf(bare.text);
  const unetR = bestOf(bare.unet);
  const vaeR = bestOf(bare.vae);
  const taesdR = bestOf(bare.taesd);
  const bareVae = textR.wall + unetR.wall + vaeR.wall;
  const bareTaesd = textR.wall + unetR.wall + taesdR.wall;
  const bareVaeCpu = textR.cpu + unetR.cpu + vaeR.cpu;
  const bareTaesdCpu = textR.cpu + unetR.cpu + taesdR.cpu;
  const eVae = bestOf(eng.vae);
  const eTaesd = bestOf(eng.taesd);
  const inner = (rs: (typeof eng)['vae']) => median(rs.map((r) => (r.total - r.run) / r.run));

  // End to end through the backend: worker thread, model load on first use, PNG encoding.
  log('backend (worker thread + PNG) timings…');
  const backend = new OnnxBackend({ type: 'onnx', name: 'bench', modelsDir: root, taesd: folders.taesd, intraOpThreads: threads, decoder: 'taesd', maxPixels: 2048 * 2048 });
  const ctx = { jobId: 'bench', signal: new AbortController().signal, reportProgress: () => {}, savedState: undefined, saveState: async () => {} };
  const request = { kind: 'generation' as const, model: 'model', prompt: 'An astronaut riding a horse', n: 1, size: { width: size, height: size }, outputFormat: 'png' as const, seed: 1, inputImages: [], providerOptions: {} };
  const [backendFirstS] = await time(() => backend.generate(request, ctx));
  const backendRuns: Sample[] = [];
  for (let i = 0; i < reps; i++) backendRuns.push(await timeCpu(() => backend.generate({ ...request, seed: 2 + i }, ctx)));
  await backend.close();
  phaseEnd('backend (worker thread)');

  const result = {
    scale: quick ? 'quarter-width SD-Turbo replica' : 'SD-Turbo shapes (random weights)',
    image: `${size}x${size}`,
    threads,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: availableParallelism(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    params: folders.params,
    buildSeconds: r3(folders.buildSeconds),
    bareRunSeconds: { text_encoder: r3(textR.wall), unet_step: r3(unetR.wall), unet_step_batch2: r3(batch2.wall), vae_decode: r3(vaeR.wall), taesd_decode: r3(taesdR.wall) },
    /** CPU seconds of the same runs (all threads): less moved than wall time by other load on a shared host. */
    bareRunCpuSeconds: { text_encoder: r3(textR.cpu), unet_step: r3(unetR.cpu), unet_step_batch2: r3(batch2.cpu), vae_decode: r3(vaeR.cpu), taesd_decode: r3(taesdR.cpu) },
    engine: {
      /** First call: creates the four sessions (all of `loadSeconds`), then generates. */
      firstCallSeconds: r3(engineFirstS),
      loadSeconds: r3(first.timings.loadMs / 1000),
      vaeSeconds: r3(eVae.wall),
      taesdSeconds: r3(eTaesd.wall),
      vaeCpuSeconds: r3(eVae.cpu),
      taesdCpuSeconds: r3(eTaesd.cpu),
      overheadVsBareVae: r3((eVae.wall - bareVae) / bareVae),
      overheadVsBareTaesd: r3((eTaesd.wall - bareTaesd) / bareTaesd),
      cpuOverheadVsBareVae: r3((eVae.cpu - bareVaeCpu) / bareVaeCpu),
      cpuOverheadVsBareTaesd: r3((eTaesd.cpu - bareTaesdCpu) / bareTaesdCpu),
      /** Engine wall time outside session.run, over time inside it (same calls). */
      innerOverheadVae: r3(inner(eng.vae)),
      innerOverheadTaesd: r3(inner(eng.taesd)),
    },
    backend: {
      firstCallSeconds: r3(backendFirstS),
      taesdPngSeconds: r3(best(backendRuns.map((r) => r.wall))),
      taesdPngCpuSeconds: r3(best(backendRuns.map((r) => r.cpu))),
    },
    loadAverage: loadavg().map((v) => Math.round(v * 10) / 10),
    batchInvariant,
    memoryMiB: { ...phases, processPeak: Math.max(...Object.values(phases).map((p) => p.peakMiB)), peakResetPerPhase: canReset },
  };
  return result;
}

const pct = (v: number) => `${(v * 100).toFixed(1)}%`;

function printTable(r: Record<string, any>): void {
  const rows: [string, string][] = [
    ['scale', `${r.scale}, ${r.image}, ${r.threads} threads`],
    ['parameters', Object.entries(r.params as Record<string, number>).map(([k, v]) => `${k} ${(v / 1e6).toFixed(1)} M`).join(', ')],
    ['first engine call (s)', `${r.engine.firstCallSeconds}, of which loading the four sessions ${r.engine.loadSeconds}`],
    ['text encoder (s wall / cpu)', `${r.bareRunSeconds.text_encoder} / ${r.bareRunCpuSeconds.text_encoder}`],
    ['UNet step (s wall / cpu)', `${r.bareRunSeconds.unet_step} / ${r.bareRunCpuSeconds.unet_step} (batch of 2: ${r.bareRunSeconds.unet_step_batch2} / ${r.bareRunCpuSeconds.unet_step_batch2})`],
    ['VAE decode (s wall / cpu)', `${r.bareRunSeconds.vae_decode} / ${r.bareRunCpuSeconds.vae_decode}`],
    ['TAESD decode (s wall / cpu)', `${r.bareRunSeconds.taesd_decode} / ${r.bareRunCpuSeconds.taesd_decode}`],
    ['engine, 1 step + VAE', `${r.engine.vaeSeconds} s wall, ${r.engine.vaeCpuSeconds} s cpu; overhead vs bare: wall ${pct(r.engine.overheadVsBareVae)}, cpu ${pct(r.engine.cpuOverheadVsBareVae)}, outside session.run ${pct(r.engine.innerOverheadVae)}`],
    ['engine, 1 step + TAESD', `${r.engine.taesdSeconds} s wall, ${r.engine.taesdCpuSeconds} s cpu; overhead vs bare: wall ${pct(r.engine.overheadVsBareTaesd)}, cpu ${pct(r.engine.cpuOverheadVsBareTaesd)}, outside session.run ${pct(r.engine.innerOverheadTaesd)}`],
    ['backend + PNG, TAESD', `${r.backend.taesdPngSeconds} s wall, ${r.backend.taesdPngCpuSeconds} s cpu (first call, with model load: ${r.backend.firstCallSeconds} s)`],
    ['load average', (r.loadAverage as number[]).join(' ')],
    ['batch row bit-identical', String(r.batchInvariant)],
    ['peak RSS (MiB)', Object.entries(r.memoryMiB).filter(([k]) => k !== 'peakResetPerPhase' && k !== 'processPeak').map(([k, v]) => `${k} ${(v as { peakMiB: number }).peakMiB}`).join(', ') + `; process ${r.memoryMiB.processPeak}`],
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(w)}  ${v}\n`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, threads: { type: 'string' }, json: { type: 'boolean', default: false }, help: { type: 'boolean', default: false } } });
  if (values.help) {
    process.stdout.write('usage: node bench/onnx-engine.ts [--quick] [--threads N] [--json]\n');
    process.exit(0);
  }
  const result = await runOnnxBench({ quick: values.quick, ...(values.threads ? { threads: Number(values.threads) } : {}) });
  if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else printTable(result);
}
