/**
 * Noise schedules and samplers for latent diffusion: Euler, Euler ancestral, DPM++ 2M (k-diffusion
 * form, σ-space) and LCM (ᾱ-space). Tables follow diffusers' float32 arithmetic so σ and timesteps
 * match what the models were distilled against; the update rules are computed in float64 per element.
 * Pure: no I/O, no ONNX. Randomness comes in through each image's own SeededRandom.
 */
import type { SeededRandom } from './random.ts';

export type SchedulerName = 'euler' | 'euler-a' | 'dpmpp-2m' | 'lcm';
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';
export type PredictionType = 'epsilon' | 'v_prediction' | 'sample';

export interface NoiseScheduleConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: 'scaled_linear' | 'linear';
  stepsOffset: number;
  timestepSpacing: TimestepSpacing;
  predictionType: PredictionType;
  /** LCM: the teacher's step count its timesteps are drawn from. */
  originalInferenceSteps: number;
  /** LCM: boundary-condition scaling of the timestep. */
  timestepScaling: number;
}

export const DEFAULT_NOISE_SCHEDULE: NoiseScheduleConfig = {
  numTrainTimesteps: 1000,
  betaStart: 0.00085,
  betaEnd: 0.012,
  betaSchedule: 'scaled_linear',
  stepsOffset: 0,
  timestepSpacing: 'trailing',
  predictionType: 'epsilon',
  originalInferenceSteps: 50,
  timestepScaling: 10,
};

const f32 = Math.fround;

/** A float32 linspace computed in float64 and rounded per element (numpy's way). */
function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  const step = steps === 1 ? 0 : (end - start) / (steps - 1);
  for (let i = 0; i < steps; i++) out[i] = start + i * step;
  if (steps > 1) out[steps - 1] = end;
  return out;
}

const tableCache = new Map<string, { alphasCumprod: Float32Array; sigmas: Float32Array }>();

function tables(cfg: NoiseScheduleConfig): { alphasCumprod: Float32Array; sigmas: Float32Array } {
  const key = `${cfg.numTrainTimesteps}:${cfg.betaStart}:${cfg.betaEnd}:${cfg.betaSchedule}`;
  const hit = tableCache.get(key);
  if (hit) return hit;
  const n = cfg.numTrainTimesteps;
  const betas =
    cfg.betaSchedule === 'scaled_linear'
      ? linspaceF32(Math.sqrt(cfg.betaStart), Math.sqrt(cfg.betaEnd), n).map((v) => f32(v * v))
      : linspaceF32(cfg.betaStart, cfg.betaEnd, n);
  const alphasCumprod = new Float32Array(n);
  const sigmas = new Float32Array(n);
  // A running float32 product: σ₉₉₉ then lands on the published 14.6146555, not float64's 14.614641.
  let acc = 1;
  for (let t = 0; t < n; t++) {
    acc = f32(acc * f32(1 - betas[t]!));
    alphasCumprod[t] = acc;
    sigmas[t] = f32(Math.sqrt(f32(f32(1 - acc) / acc)));
  }
  const value = { alphasCumprod, sigmas };
  tableCache.set(key, value);
  return value;
}

/** ᾱ_t for t = 0 … numTrainTimesteps−1 (float32, as diffusers computes it). */
export function alphasCumprod(cfg: NoiseScheduleConfig = DEFAULT_NOISE_SCHEDULE): Float32Array {
  return tables(cfg).alphasCumprod;
}

/** σ_t = √((1−ᾱ_t)/ᾱ_t) for every training timestep. */
export function sigmaTable(cfg: NoiseScheduleConfig = DEFAULT_NOISE_SCHEDULE): Float32Array {
  return tables(cfg).sigmas;
}

/** numpy's round: halves go to the even neighbour. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The timesteps of an N-step sampling run, descending, per the configured spacing. */
export function spacedTimesteps(cfg: NoiseScheduleConfig, steps: number): number[] {
  const n = cfg.numTrainTimesteps;
  if (!Number.isInteger(steps) || steps < 1 || steps > n) throw new RangeError(`steps must be an integer in 1..${n}, got ${steps}`);
  const out: number[] = [];
  switch (cfg.timestepSpacing) {
    case 'trailing': {
      const ratio = n / steps;
      for (let k = 0; k < steps; k++) out.push(roundHalfEven(n - k * ratio) - 1);
      return out;
    }
    case 'leading': {
      const ratio = Math.floor(n / steps);
      for (let k = steps - 1; k >= 0; k--) out.push(k * ratio + cfg.stepsOffset);
      return out;
    }
    case 'linspace': {
      for (let k = steps - 1; k >= 0; k--) out.push(steps === 1 ? 0 : f32(((n - 1) * k) / (steps - 1)));
      return out;
    }
  }
}

/** LCM's timesteps: N picked (floor of an endpoint-free linspace) from the teacher's skipped grid. */
export function lcmTimesteps(cfg: NoiseScheduleConfig, steps: number, strength = 1): number[] {
  const n = cfg.numTrainTimesteps;
  const k = Math.floor(n / cfg.originalInferenceSteps);
  const originCount = Math.floor(cfg.originalInferenceSteps * strength);
  if (originCount < 1) throw new RangeError(`strength ${strength} leaves no LCM timesteps`);
  if (steps > originCount) throw new RangeError(`LCM takes at most ${originCount} steps here, got ${steps}`);
  const origin: number[] = [];
  for (let i = originCount; i >= 1; i--) origin.push(i * k - 1);
  const out: number[] = [];
  for (let j = 0; j < steps; j++) out.push(origin[Math.floor((j * originCount) / steps)]!);
  return out;
}

/** σ at a (possibly fractional) timestep, linear between table entries like np.interp. */
export function sigmaAt(table: Float32Array, t: number): number {
  if (t <= 0) return table[0]!;
  if (t >= table.length - 1) return table[table.length - 1]!;
  const lo = Math.floor(t);
  const frac = t - lo;
  return frac === 0 ? table[lo]! : f32(table[lo]! + (table[lo + 1]! - table[lo]!) * frac);
}

export interface Schedule {
  scheduler: SchedulerName;
  /** Fed to the UNet, one per step. */
  timesteps: number[];
  /** σ per step plus a final 0 (k-diffusion samplers); empty for LCM. */
  sigmas: number[];
  /** What the unit noise is multiplied by to start text-to-image. */
  initNoiseSigma: number;
}

/**
 * The plan for one run. With `strength` < 1 (img2img) the first steps are skipped, as diffusers'
 * img2img pipelines do: ⌊N·strength⌋ steps run (at least one).
 */
export function makeSchedule(scheduler: SchedulerName, cfg: NoiseScheduleConfig, steps: number, strength = 1): Schedule {
  if (!(strength > 0 && strength <= 1)) throw new RangeError(`strength must be in (0, 1], got ${strength}`);
  if (scheduler === 'lcm') {
    const timesteps = lcmTimesteps(cfg, steps, strength);
    return { scheduler, timesteps, sigmas: [], initNoiseSigma: 1 };
  }
  const table = sigmaTable(cfg);
  const all = spacedTimesteps(cfg, steps);
  const sigmasAll = all.map((t) => sigmaAt(table, t));
  const run = strength < 1 ? Math.max(1, Math.min(steps, Math.floor(steps * strength))) : steps;
  const start = steps - run;
  const timesteps = all.slice(start);
  const sigmas = [...sigmasAll.slice(start), 0];
  const sigmaMax = Math.max(...sigmasAll);
  const initNoiseSigma = cfg.timestepSpacing === 'leading' ? f32(Math.sqrt(sigmaMax * sigmaMax + 1)) : sigmaMax;
  return { scheduler, timesteps, sigmas, initNoiseSigma };
}

/** Per-image sampler memory (DPM++ 2M's previous prediction). */
export interface SamplerState {
  prevX0?: Float32Array;
}

/**
 * One sampling run: scaling of the UNet input, the initial latent and the update rule per step.
 * `step` works on one image; `x` is replaced in place.
 */
export class Sampler {
  readonly schedule: Schedule;
  readonly cfg: NoiseScheduleConfig;
  private readonly ac: Float32Array;

  constructor(schedule: Schedule, cfg: NoiseScheduleConfig) {
    this.schedule = schedule;
    this.cfg = cfg;
    this.ac = alphasCumprod(cfg);
  }

  get steps(): number {
    return this.schedule.timesteps.length;
  }

  timestep(i: number): number {
    return this.schedule.timesteps[i]!;
  }

  /** Multiplier of the latent before it goes into the UNet. */
  inputScale(i: number): number {
    if (this.schedule.scheduler === 'lcm') return 1;
    const s = this.schedule.sigmas[i]!;
    return 1 / Math.sqrt(s * s + 1);
  }

  /** x_T from unit noise: scaled noise for text-to-image, the noised encoded image for img2img. */
  initLatent(noise: Float32Array, image?: Float32Array): Float32Array {
    const x = new Float32Array(noise.length);
    if (this.schedule.scheduler === 'lcm') {
      if (!image) {
        x.set(noise);
        return x;
      }
      const a = this.ac[this.timestep(0)]!;
      const sa = Math.sqrt(a);
      const sb = Math.sqrt(1 - a);
      for (let j = 0; j < x.length; j++) x[j] = sa * image[j]! + sb * noise[j]!;
      return x;
    }
    if (!image) {
      const s = this.schedule.initNoiseSigma;
      for (let j = 0; j < x.length; j++) x[j] = noise[j]! * s;
      return x;
    }
    const s = this.schedule.sigmas[0]!;
    for (let j = 0; j < x.length; j++) x[j] = image[j]! + noise[j]! * s;
    return x;
  }

  /** Denoised estimate x0 from the model output at σ (k-diffusion parametrisation). */
  private x0Sigma(x: Float32Array, out: Float32Array, sigma: number): Float32Array {
    const x0 = new Float32Array(x.length);
    switch (this.cfg.predictionType) {
      case 'epsilon':
        for (let j = 0; j < x.length; j++) x0[j] = x[j]! - sigma * out[j]!;
        break;
      case 'v_prediction': {
        const cIn = 1 / (sigma * sigma + 1);
        const cOut = -sigma / Math.sqrt(sigma * sigma + 1);
        for (let j = 0; j < x.length; j++) x0[j] = x[j]! * cIn + out[j]! * cOut;
        break;
      }
      case 'sample':
        x0.set(out);
        break;
    }
    return x0;
  }

  step(i: number, x: Float32Array, modelOut: Float32Array, state: SamplerState, rng: SeededRandom): void {
    switch (this.schedule.scheduler) {
      case 'euler':
        return this.euler(i, x, modelOut);
      case 'euler-a':
        return this.eulerAncestral(i, x, modelOut, rng);
      case 'dpmpp-2m':
        return this.dpmpp2m(i, x, modelOut, state);
      case 'lcm':
        return this.lcm(i, x, modelOut, rng);
    }
  }

  private euler(i: number, x: Float32Array, out: Float32Array): void {
    const s = this.schedule.sigmas[i]!;
    const next = this.schedule.sigmas[i + 1]!;
    const x0 = this.x0Sigma(x, out, s);
    const dt = next - s;
    for (let j = 0; j < x.length; j++) x[j] = x[j]! + ((x[j]! - x0[j]!) / s) * dt;
  }

  private eulerAncestral(i: number, x: Float32Array, out: Float32Array, rng: SeededRandom): void {
    const from = this.schedule.sigmas[i]!;
    const to = this.schedule.sigmas[i + 1]!;
    const x0 = this.x0Sigma(x, out, from);
    const up = Math.sqrt((to * to * (from * from - to * to)) / (from * from));
    const down = Math.sqrt(to * to - up * up);
    const dt = down - from;
    for (let j = 0; j < x.length; j++) x[j] = x[j]! + ((x[j]! - x0[j]!) / from) * dt;
    if (up > 0) for (let j = 0; j < x.length; j++) x[j] = x[j]! + rng.normal() * up;
  }

  private dpmpp2m(i: number, x: Float32Array, out: Float32Array, state: SamplerState): void {
    const s = this.schedule.sigmas[i]!;
    const next = this.schedule.sigmas[i + 1]!;
    const x0 = this.x0Sigma(x, out, s);
    if (next === 0) {
      x.set(x0);
    } else {
      const h = -Math.log(next) + Math.log(s);
      const ratio = next / s;
      const k = -Math.expm1(-h);
      if (!state.prevX0 || i === 0) {
        for (let j = 0; j < x.length; j++) x[j] = ratio * x[j]! + k * x0[j]!;
      } else {
        const prev = this.schedule.sigmas[i - 1]!;
        const r = (Math.log(prev) - Math.log(s)) / h;
        const a = 1 + 1 / (2 * r);
        const b = 1 / (2 * r);
        const p = state.prevX0;
        for (let j = 0; j < x.length; j++) x[j] = ratio * x[j]! + k * (a * x0[j]! - b * p[j]!);
      }
    }
    state.prevX0 = x0;
  }

  private lcm(i: number, x: Float32Array, out: Float32Array, rng: SeededRandom): void {
    const t = this.timestep(i);
    const a = this.ac[t]!;
    const sa = Math.sqrt(a);
    const sb = Math.sqrt(1 - a);
    const st = t * this.cfg.timestepScaling;
    const cSkip = 0.25 / (st * st + 0.25);
    const cOut = st / Math.sqrt(st * st + 0.25);
    const last = i === this.steps - 1;
    const aPrev = last ? 1 : this.ac[this.timestep(i + 1)]!;
    const sap = Math.sqrt(aPrev);
    const sbp = Math.sqrt(1 - aPrev);
    const pred = this.cfg.predictionType;
    for (let j = 0; j < x.length; j++) {
      const xj = x[j]!;
      const o = out[j]!;
      const x0 = pred === 'epsilon' ? (xj - sb * o) / sa : pred === 'v_prediction' ? sa * xj - sb * o : o;
      const denoised = cOut * x0 + cSkip * xj;
      x[j] = last ? denoised : sap * denoised + sbp * rng.normal();
    }
  }
}

/** LCM's guidance embedding (`timestep_cond`): sin/cos of w·1000 over a geometric frequency ladder. */
export function guidanceEmbedding(guidance: number, dim = 256): Float32Array {
  const w = (guidance - 1) * 1000;
  const half = dim / 2;
  const out = new Float32Array(dim);
  const base = Math.log(10000) / (half - 1);
  for (let j = 0; j < half; j++) {
    const v = w * Math.exp(-base * j);
    out[j] = Math.sin(v);
    out[half + j] = Math.cos(v);
  }
  return out;
}
