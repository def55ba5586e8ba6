/**
 * The Stable Diffusion engine: tokenizer → text encoder → sampler loop over the UNet → VAE (or
 * TAESD) decoder → RGB pixels. Runs wherever it is created; the backend runs it in a worker thread.
 * Every image carries its own seed and noise generator, so one image's pixels do not depend on what
 * it was batched with. Loaded models are kept (LRU) between calls.
 */
import type * as ort from 'onnxruntime-node';
import { ClipTokenizer } from './clip-tokenizer.ts';
import { SessionFactory, floatTensor, intTensor, toFloat32 } from './onnx-session.ts';
import type { IoSpec, OnnxSession } from './onnx-session.ts';
import { readDecoderFolder, readModelFolder, modelDefaults } from './model-folder.ts';
import type { DecoderFolder, ModelFolder } from './model-folder.ts';
import { SeededRandom } from './random.ts';
import { Sampler, guidanceEmbedding, makeSchedule } from './schedulers.ts';
import type { SamplerState, SchedulerName } from './schedulers.ts';
import type { JobWarning } from '../../core/job.ts';

export interface EngineOptions {
  executionProvider: 'cpu' | 'cuda';
  deviceId: number;
  intraOpThreads: number;
  keepLoaded: number;
  warn(message: string): void;
}

export interface EngineItem {
  prompt: string;
  negativePrompt?: string;
  seed: number;
}

export interface EngineRequest {
  modelDir: string;
  /** A TAESD folder to decode with instead of the model's VAE. */
  taesdDir?: string;
  width?: number;
  height?: number;
  steps?: number;
  guidanceScale?: number;
  scheduler?: SchedulerName;
  /** img2img: RGB bytes already resized to width × height, and how much of it to repaint. */
  init?: { rgb: Uint8Array; strength: number };
  items: EngineItem[];
  /** Also return the final latents (tests). */
  returnLatents?: boolean;
}

export interface EngineImage {
  rgb: Uint8Array;
  width: number;
  height: number;
  seed: number;
  latents?: Float32Array;
}

export interface EngineTimings {
  /** Wall time of the whole call, ms. */
  totalMs: number;
  /** Time inside session.run, ms (all sessions). */
  runMs: number;
  textEncoderMs: number;
  unetMs: number;
  unetCalls: number;
  decodeMs: number;
  encodeMs: number;
  loadMs: number;
}

export interface EngineResult {
  images: EngineImage[];
  settings: { width: number; height: number; steps: number; guidanceScale: number; scheduler: SchedulerName; cfg: boolean; decoder: 'vae' | 'taesd'; provider: 'cpu' | 'cuda' };
  /** Plain objects, so they cross from the engine thread as they are. */
  warnings: JobWarning[];
  timings: EngineTimings;
}

export interface EngineHooks {
  onProgress?(fraction: number): void;
  /** Checked between model calls; a true answer stops the run with an EngineAbortError. */
  isAborted?(): boolean;
}

export class EngineAbortError extends Error {
  constructor() {
    super('generation aborted');
    this.name = 'EngineAbortError';
  }
}

/** A request the model cannot run as asked (bad size, no encoder…): the caller's fault, not a crash. */
export class EngineRequestError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EngineRequestError';
  }
}

interface UnetIo {
  sample: IoSpec;
  timestep: IoSpec;
  hidden: IoSpec;
  timestepCond?: IoSpec;
  out: string;
  latentChannels: number;
  /** Rows per call when the model has a fixed batch size. */
  fixedBatch?: number;
  /** Resolved on first use when the declared shape leaves scalar vs [B] open. */
  timestepRank?: 0 | 1;
}

interface Pipeline {
  folder: ModelFolder;
  tokenizer: ClipTokenizer;
  text: OnnxSession;
  textIds: IoSpec;
  textOut: string;
  textFixedBatch?: number;
  hiddenSize: number;
  unet: OnnxSession;
  unetIo: UnetIo;
  vaeDecoder?: OnnxSession;
  vaeEncoder?: OnnxSession;
  family: ModelFolder['family'];
}

interface Decoder {
  session: OnnxSession;
  scale: number;
  range: [number, number];
  folder?: DecoderFolder;
  encoder?: OnnxSession;
}

const fixed = (d: number | string | undefined): number | undefined => (typeof d === 'number' && d > 0 ? d : undefined);

export class Engine {
  private readonly opts: EngineOptions;
  private readonly sessions: SessionFactory;
  private readonly pipelines = new Map<string, Pipeline>();
  private readonly decoders = new Map<string, Decoder>();

  constructor(opts: EngineOptions) {
    this.opts = opts;
    this.sessions = new SessionFactory({
      executionProvider: opts.executionProvider,
      deviceId: opts.deviceId,
      intraOpThreads: opts.intraOpThreads,
      warn: opts.warn,
    });
  }

  get provider(): 'cpu' | 'cuda' {
    return this.sessions.provider;
  }

  async generate(req: EngineRequest, hooks: EngineHooks = {}): Promise<EngineResult> {
    const t0 = performance.now();
    const checkAbort = () => {
      if (hooks.isAborted?.()) throw new EngineAbortError();
    };
    if (req.items.length === 0) throw new EngineRequestError('nothing to generate');
    const tLoad = performance.now();
    const pipe = await this.pipeline(req.modelDir);
    const taesd = req.taesdDir ? await this.decoder(req.taesdDir) : undefined;
    const loadMs = performance.now() - tLoad;
    checkAbort();
    const sessionsUsed = new Set<OnnxSession>([pipe.text, pipe.unet]);
    const runBefore = new Map<OnnxSession, number>();
    const mark = (s: OnnxSession) => {
      sessionsUsed.add(s);
      if (!runBefore.has(s)) runBefore.set(s, s.runMs);
    };
    mark(pipe.text);
    mark(pipe.unet);

    const warnings: JobWarning[] = [];
    const defaults = modelDefaults(pipe.folder, pipe.family);
    const width = req.width ?? defaults.width;
    const height = req.height ?? defaults.height;
    const steps = req.steps ?? defaults.steps;
    const scheduler = req.scheduler ?? defaults.scheduler;
    const isLcm = pipe.family === 'lcm';
    let guidance = req.guidanceScale ?? defaults.guidanceScale;
    if (scheduler === 'lcm' && !isLcm) throw new EngineRequestError(`the lcm scheduler needs an LCM model; ${pipe.folder.id} is not one`);
    if (isLcm && scheduler !== 'lcm') warnings.push({ type: 'compatibility', setting: 'provider_options.scheduler', detail: `${pipe.folder.id} is an LCM model; scheduler ${scheduler} may give poor images` });
    if (width % 8 || height % 8) throw new EngineRequestError(`width and height must be multiples of 8, got ${width}x${height}`);
    const io = pipe.unetIo;
    const fixedH = fixed(io.sample.shape[2]);
    const fixedW = fixed(io.sample.shape[3]);
    if ((fixedH && fixedH !== height / 8) || (fixedW && fixedW !== width / 8)) {
      throw new EngineRequestError(`${pipe.folder.id} was exported for ${(fixedW ?? width / 8) * 8}x${(fixedH ?? height / 8) * 8} only`);
    }
    const cfg = !isLcm && guidance > 1;
    if (!cfg && !isLcm && guidance > 0 && guidance <= 1) guidance = 0;
    if (!cfg && req.items.some((it) => it.negativePrompt)) warnings.push({ type: 'unsupported', setting: 'negative_prompt', detail: 'negative_prompt is ignored without classifier-free guidance (guidance_scale ≤ 1 or an LCM/turbo model)' });

    const strength = req.init?.strength ?? 1;
    const schedule = makeSchedule(scheduler, pipe.folder.schedule, steps, req.init ? strength : 1);
    const sampler = new Sampler(schedule, pipe.folder.schedule);
    const decoder: 'vae' | 'taesd' = taesd ? 'taesd' : 'vae';
    if (!taesd && !pipe.vaeDecoder) throw new EngineRequestError(`${pipe.folder.id} has no vae_decoder and no TAESD is installed`);

    const B = req.items.length;
    const totalUnits = 1 + (req.init ? 1 : 0) + sampler.steps + B;
    let done = 0;
    const tick = () => hooks.onProgress?.(Math.min(1, ++done / totalUnits));

    // Text: each distinct prompt once.
    const tText = performance.now();
    const texts = [...new Set(req.items.flatMap((it) => (cfg ? [it.negativePrompt ?? '', it.prompt] : [it.prompt])))];
    const embeds = await this.encodeText(pipe, texts);
    const textEncoderMs = performance.now() - tText;
    checkAbort();
    tick();

    // Initial latents, from each image's own noise.
    const h = height / 8;
    const w = width / 8;
    const C = io.latentChannels;
    const size = C * h * w;
    const rngs = req.items.map((it) => new SeededRandom(it.seed));
    const states: SamplerState[] = req.items.map(() => ({}));
    let encodeMs = 0;
    let initLatent: Float32Array | undefined;
    if (req.init) {
      const tEnc = performance.now();
      const enc = await this.vaeEncoder(pipe, taesd);
      mark(enc.session);
      initLatent = await encodeImage(enc, req.init.rgb, width, height, C);
      encodeMs = performance.now() - tEnc;
      checkAbort();
      tick();
    }
    const xs = rngs.map((rng) => sampler.initLatent(rng.fillNormal(new Float32Array(size)), initLatent));

    // Denoising: all images (and their unconditional twins) in one UNet call per step.
    const rows = cfg ? 2 * B : B;
    const D = pipe.hiddenSize;
    const tokens = 77 * D;
    const hidden = new Float32Array(rows * tokens);
    req.items.forEach((it, b) => {
      if (cfg) {
        hidden.set(embeds.get(it.negativePrompt ?? '')!, b * tokens);
        hidden.set(embeds.get(it.prompt)!, (B + b) * tokens);
      } else {
        hidden.set(embeds.get(it.prompt)!, b * tokens);
      }
    });
    const cond = io.timestepCond ? guidanceEmbedding(guidance, fixed(io.timestepCond.shape[1]) ?? 256) : undefined;
    let unetMs = 0;
    let unetCalls = 0;
    for (let i = 0; i < sampler.steps; i++) {
      checkAbort();
      const scale = sampler.inputScale(i);
      const input = new Float32Array(rows * size);
      xs.forEach((x, b) => {
        const dst = input.subarray(b * size, (b + 1) * size);
        for (let j = 0; j < size; j++) dst[j] = x[j]! * scale;
        if (cfg) input.copyWithin((B + b) * size, b * size, (b + 1) * size);
      });
      const tU = performance.now();
      const out = await this.runUnet(pipe, input, hidden, rows, [C, h, w], sampler.timestep(i), cond);
      unetMs += performance.now() - tU;
      unetCalls++;
      xs.forEach((x, b) => {
        let eps: Float32Array;
        if (cfg) {
          const u = out.subarray(b * size, (b + 1) * size);
          const c = out.subarray((B + b) * size, (B + b + 1) * size);
          eps = new Float32Array(size);
          for (let j = 0; j < size; j++) eps[j] = u[j]! + guidance * (c[j]! - u[j]!);
        } else {
          eps = out.subarray(b * size, (b + 1) * size);
        }
        sampler.step(i, x, eps, states[b]!, rngs[b]!);
      });
      tick();
    }

    // Decode one image at a time: the VAE's activations at full size are the memory peak.
    const tDec = performance.now();
    const dec: Decoder = taesd ?? { session: pipe.vaeDecoder!, scale: pipe.folder.vaeScalingFactor, range: [-1, 1] };
    mark(dec.session);
    const images: EngineImage[] = [];
    for (let b = 0; b < B; b++) {
      checkAbort();
      const rgb = await decodeLatent(dec, xs[b]!, [C, h, w], width, height);
      images.push({ rgb, width, height, seed: req.items[b]!.seed, ...(req.returnLatents ? { latents: xs[b] } : {}) });
      tick();
    }
    const decodeMs = performance.now() - tDec;

    let runMs = 0;
    for (const s of sessionsUsed) runMs += s.runMs - (runBefore.get(s) ?? 0);
    return {
      images,
      settings: { width, height, steps: sampler.steps, guidanceScale: guidance, scheduler, cfg, decoder, provider: this.provider },
      warnings,
      timings: { totalMs: performance.now() - t0, runMs, textEncoderMs, unetMs, unetCalls, decodeMs, encodeMs, loadMs },
    };
  }

  /** A model's sessions, loaded if needed: the benchmark times bare runs on the very sessions the engine uses. */
  async sessionsFor(modelDir: string, taesdDir?: string): Promise<{ text: OnnxSession; unet: OnnxSession; vaeDecoder?: OnnxSession; taesd?: OnnxSession }> {
    const p = await this.pipeline(modelDir);
    return { text: p.text, unet: p.unet, vaeDecoder: p.vaeDecoder, taesd: taesdDir ? (await this.decoder(taesdDir)).session : undefined };
  }

  /** Whether a model folder can do img2img (has a VAE encoder), without loading it. */
  static canEdit(modelDir: string, taesdDir?: string): boolean {
    try {
      if (readModelFolder(modelDir).vaeEncoder) return true;
    } catch {
      return false;
    }
    return Boolean(taesdDir && readDecoderFolder(taesdDir)?.encoder);
  }

  async close(): Promise<void> {
    for (const p of this.pipelines.values()) await releasePipeline(p);
    this.pipelines.clear();
    for (const d of this.decoders.values()) for (const s of [d.session, d.encoder]) await s?.release().catch(() => {});
    this.decoders.clear();
  }

  private async pipeline(dir: string): Promise<Pipeline> {
    const hit = this.pipelines.get(dir);
    if (hit) {
      this.pipelines.delete(dir);
      this.pipelines.set(dir, hit);
      return hit;
    }
    while (this.pipelines.size >= this.opts.keepLoaded) {
      const [oldest, p] = this.pipelines.entries().next().value as [string, Pipeline];
      this.pipelines.delete(oldest);
      await releasePipeline(p);
    }
    const folder = readModelFolder(dir);
    const tokenizer = ClipTokenizer.fromDir(folder.tokenizerDir, { padToken: folder.padToken ?? defaultPad(folder) });
    const text = await this.sessions.open(folder.textEncoder);
    const unet = await this.sessions.open(folder.unet);
    const vaeDecoder = folder.vaeDecoder ? await this.sessions.open(folder.vaeDecoder) : undefined;

    const textIds = text.input(['input_ids'], (s) => s.type.startsWith('int'));
    if (!textIds) throw new Error(`${folder.textEncoder}: no integer input_ids (${text.describe()})`);
    const textOut = text.output(['last_hidden_state', 'text_embeds']).name;
    const sample = unet.input(['sample'], (s) => s.shape.length === 4);
    const timestep = unet.input(['timestep', 'timesteps', 't']);
    const hidden = unet.input(['encoder_hidden_states'], (s) => s.shape.length === 3);
    if (!sample || !timestep || !hidden) throw new Error(`${folder.unet}: expected sample, timestep and encoder_hidden_states (${unet.describe()})`);
    if (unet.inputs.has('text_embeds') || unet.inputs.has('time_ids')) throw new Error(`${folder.unet} is an SDXL UNet; easel's engine runs SD 1.x/2.x, Turbo and LCM`);
    const timestepCond = unet.input(['timestep_cond']);
    const hiddenSize = fixed(hidden.shape[2]) ?? fixed(text.output([textOut]).shape[2]);
    const unetIo: UnetIo = {
      sample,
      timestep,
      hidden,
      timestepCond,
      out: unet.output(['out_sample']).name,
      latentChannels: fixed(sample.shape[1]) ?? 4,
      fixedBatch: fixed(sample.shape[0]),
    };
    const p: Pipeline = {
      folder,
      tokenizer,
      text,
      textIds,
      textOut,
      textFixedBatch: fixed(textIds.shape[0]),
      hiddenSize: hiddenSize ?? 0,
      unet,
      unetIo,
      vaeDecoder,
      family: timestepCond ? 'lcm' : folder.family,
    };
    if (!p.hiddenSize) p.hiddenSize = (await this.encodeText(p, [''])).get('')!.length / 77;
    this.pipelines.set(dir, p);
    return p;
  }

  private async decoder(dir: string): Promise<Decoder> {
    const hit = this.decoders.get(dir);
    if (hit) return hit;
    const folder: DecoderFolder | undefined = readDecoderFolder(dir);
    if (!folder) throw new EngineRequestError(`no TAESD decoder in ${dir}`);
    const d: Decoder = { session: await this.sessions.open(folder.decoder), scale: folder.scalingFactor, range: folder.outputRange, folder };
    this.decoders.set(dir, d);
    return d;
  }

  private async vaeEncoder(pipe: Pipeline, taesd: Decoder | undefined): Promise<{ session: OnnxSession; scale: number }> {
    if (pipe.folder.vaeEncoder) {
      pipe.vaeEncoder ??= await this.sessions.open(pipe.folder.vaeEncoder);
      return { session: pipe.vaeEncoder, scale: pipe.folder.vaeScalingFactor };
    }
    const tf = taesd?.folder;
    if (tf?.encoder) {
      taesd!.encoder ??= await this.sessions.open(tf.encoder);
      return { session: taesd!.encoder, scale: tf.scalingFactor };
    }
    throw new EngineRequestError(`${pipe.folder.id} has no vae_encoder, so it cannot edit images`);
  }

  private async encodeText(pipe: Pipeline, texts: string[]): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    const chunk = pipe.textFixedBatch ?? texts.length;
    for (let start = 0; start < texts.length; start += chunk) {
      const group = texts.slice(start, start + chunk);
      const ids = group.flatMap((t) => pipe.tokenizer.encodePadded(t));
      const res = await pipe.text.run({ [pipe.textIds.name]: intTensor(pipe.textIds.type, ids, [group.length, 77]) }, [pipe.textOut]);
      const data = toFloat32(res[pipe.textOut]!);
      const per = data.length / group.length;
      group.forEach((t, i) => out.set(t, data.slice(i * per, (i + 1) * per)));
    }
    return out;
  }

  private async runUnet(
    pipe: Pipeline,
    input: Float32Array,
    hidden: Float32Array,
    rows: number,
    latentShape: [number, number, number],
    t: number,
    cond: Float32Array | undefined,
  ): Promise<Float32Array> {
    const io = pipe.unetIo;
    const size = latentShape[0] * latentShape[1] * latentShape[2];
    const tokens = hidden.length / rows;
    const chunk = io.fixedBatch ?? rows;
    const result = new Float32Array(rows * size);
    for (let start = 0; start < rows; start += chunk) {
      const n = Math.min(chunk, rows - start);
      const whole = n === rows;
      const feeds: Record<string, ort.Tensor> = {
        [io.sample.name]: floatTensor(io.sample.type, whole ? input : input.slice(start * size, (start + n) * size), [n, ...latentShape]),
        [io.hidden.name]: floatTensor(io.hidden.type, whole ? hidden : hidden.slice(start * tokens, (start + n) * tokens), [n, 77, tokens / 77]),
      };
      if (io.timestepCond && cond) {
        const all = new Float32Array(n * cond.length);
        for (let r = 0; r < n; r++) all.set(cond, r * cond.length);
        feeds[io.timestepCond.name] = floatTensor(io.timestepCond.type, all, [n, cond.length]);
      }
      const res = await this.runWithTimestep(pipe, feeds, n, t);
      result.set(toFloat32(res[io.out]!).subarray(0, n * size), start * size);
    }
    return result;
  }

  /** Feeds the timestep in the declared form; a shape the model leaves open is tried as a scalar, then as [B]. */
  private async runWithTimestep(pipe: Pipeline, feeds: Record<string, ort.Tensor>, n: number, t: number): Promise<Record<string, ort.Tensor>> {
    const io = pipe.unetIo;
    const declared = io.timestep.shape;
    const rank = io.timestepRank ?? (declared.length === 0 ? 0 : 1);
    const dims = rank === 0 ? [] : fixed(declared[0]) === 1 ? [1] : [n];
    feeds[io.timestep.name] = timestepTensor(io.timestep.type, t, dims);
    try {
      const res = await pipe.unet.run(feeds, [io.out]);
      io.timestepRank = rank;
      return res;
    } catch (err) {
      if (io.timestepRank === undefined && declared.length === 0 && /rank|shape|dimension/i.test(String((err as Error).message))) {
        io.timestepRank = 1;
        return this.runWithTimestep(pipe, feeds, n, t);
      }
      throw err;
    }
  }
}

function timestepTensor(type: string, t: number, dims: number[]): ort.Tensor {
  const count = dims.reduce((a, b) => a * b, 1);
  const values = new Array<number>(count).fill(type.startsWith('int') ? Math.round(t) : t);
  return type.startsWith('int') ? intTensor(type, values, dims) : floatTensor(type, Float32Array.from(values), dims);
}

/** SD 2.x / Turbo (OpenCLIP, 1024-wide) pad with `!`; without a manifest, the tokenizer files decide. */
function defaultPad(folder: ModelFolder): string | undefined {
  return folder.family === 'turbo' ? '!' : undefined;
}

async function releasePipeline(p: Pipeline): Promise<void> {
  for (const s of [p.text, p.unet, p.vaeDecoder, p.vaeEncoder]) await s?.release().catch(() => {});
}

async function decodeLatent(dec: Decoder, latent: Float32Array, shape: [number, number, number], width: number, height: number): Promise<Uint8Array> {
  const input = dec.session.input(['latent_sample', 'latent', 'latents'], () => true)!;
  const outName = dec.session.output(['sample', 'image', 'output']).name;
  const scaled = new Float32Array(latent.length);
  const inv = 1 / dec.scale;
  for (let j = 0; j < latent.length; j++) scaled[j] = latent[j]! * inv;
  const res = await dec.session.run({ [input.name]: floatTensor(input.type, scaled, [1, ...shape]) }, [outName]);
  const out = res[outName]!;
  const [, ch, oh, ow] = out.dims as number[];
  if (oh !== height || ow !== width || (ch !== 3 && ch !== 4)) {
    throw new Error(`decoder returned ${out.dims.join('x')}, expected 1x3x${height}x${width}`);
  }
  return toRgb(toFloat32(out), width, height, dec.range);
}

/** NCHW floats in `range` → interleaved RGB bytes, as diffusers rounds them. */
export function toRgb(data: Float32Array, width: number, height: number, range: [number, number]): Uint8Array {
  const plane = width * height;
  const rgb = new Uint8Array(plane * 3);
  const [lo, hi] = range;
  const k = 1 / (hi - lo);
  for (let c = 0; c < 3; c++) {
    const src = data.subarray(c * plane, (c + 1) * plane);
    for (let p = 0; p < plane; p++) {
      const v = (src[p]! - lo) * k;
      rgb[p * 3 + c] = Math.round((v < 0 ? 0 : v > 1 ? 1 : v) * 255);
    }
  }
  return rgb;
}

async function encodeImage(enc: { session: OnnxSession; scale: number }, rgb: Uint8Array, width: number, height: number, channels: number): Promise<Float32Array> {
  if (rgb.length !== width * height * 3) throw new EngineRequestError(`init image is ${rgb.length} bytes, expected ${width}x${height} RGB`);
  const plane = width * height;
  const x = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) x[c * plane + p] = (rgb[p * 3 + c]! / 255) * 2 - 1;
  const input = enc.session.input(['sample', 'image'], () => true)!;
  const outName = enc.session.output(['latent_sample', 'latent_parameters', 'latent_dist', 'latent']).name;
  const res = await enc.session.run({ [input.name]: floatTensor(input.type, x, [1, 3, height, width]) }, [outName]);
  const out = res[outName]!;
  const data = toFloat32(out);
  const ch = (out.dims as number[])[1]!;
  const size = channels * (height / 8) * (width / 8);
  // Distribution parameters (mean ‖ log-variance) come as twice the channels: take the mean.
  if (ch !== channels && ch !== 2 * channels) throw new Error(`vae encoder returned ${out.dims.join('x')}, expected ${channels} latent channels`);
  const latent = new Float32Array(size);
  for (let j = 0; j < size; j++) latent[j] = data[j]! * enc.scale;
  return latent;
}
