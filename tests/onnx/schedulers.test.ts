import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_NOISE_SCHEDULE as D,
  Sampler,
  guidanceEmbedding,
  lcmTimesteps,
  makeSchedule,
  sigmaTable,
  alphasCumprod,
  spacedTimesteps,
} from '../../src/backends/onnx/schedulers.ts';
import type { SchedulerName } from '../../src/backends/onnx/schedulers.ts';
import { SeededRandom } from '../../src/backends/onnx/random.ts';

const close = (a: number, b: number, tol: number, what = '') => assert.ok(Math.abs(a - b) <= tol, `${what} ${a} vs ${b}`);

describe('golden schedule tables (scaled_linear, β 0.00085 → 0.012, 1000 steps)', () => {
  test('σ at the ends, in float32 as diffusers computes them', () => {
    const s = sigmaTable(D);
    assert.equal(s[999], Math.fround(14.6146555));
    close(s[0]!, 0.0291675, 5e-8, 'σ0');
    close(Math.sqrt((1 - alphasCumprod(D)[999]!) / alphasCumprod(D)[999]!), 14.6146555, 2e-6);
  });

  test('trailing, 4 steps: timesteps [999, 749, 499, 249], σ [14.6147, 4.0817, 1.6129, 0.6932, 0]', () => {
    const sch = makeSchedule('euler', { ...D, timestepSpacing: 'trailing' }, 4);
    assert.deepEqual(sch.timesteps, [999, 749, 499, 249]);
    const want = [14.6147, 4.0817, 1.6129, 0.6932, 0];
    sch.sigmas.forEach((v, i) => close(v, want[i]!, 5e-5, `σ${i}`));
    assert.equal(sch.initNoiseSigma, sch.sigmas[0]);
  });

  test('trailing rounds halves to even like numpy (16 steps)', () => {
    const ts = spacedTimesteps({ ...D, timestepSpacing: 'trailing' }, 16);
    assert.deepEqual(ts.slice(0, 4), [999, 937, 874, 811]);
    assert.equal(spacedTimesteps(D, 1)[0], 999, 'SD-Turbo feeds 999');
  });

  test('leading with steps_offset 1, 4 steps: [751, 501, 251, 1]; initial noise √(σmax²+1)', () => {
    const cfg = { ...D, timestepSpacing: 'leading' as const, stepsOffset: 1 };
    assert.deepEqual(spacedTimesteps(cfg, 4), [751, 501, 251, 1]);
    const sch = makeSchedule('euler', cfg, 4);
    close(sch.initNoiseSigma, Math.sqrt(sch.sigmas[0]! ** 2 + 1), 1e-5);
  });

  test('linspace, 4 steps: [999, 666, 333, 0] with σ interpolated', () => {
    const sch = makeSchedule('euler', { ...D, timestepSpacing: 'linspace' }, 4);
    assert.deepEqual(sch.timesteps, [999, 666, 333, 0]);
    close(sch.sigmas[1]!, 2.9183085, 1e-6);
    close(sch.sigmas[3]!, 0.0291675, 1e-6);
  });

  test('LCM, 4 steps: [999, 759, 499, 259]; 1 step: [999]', () => {
    assert.deepEqual(lcmTimesteps(D, 4), [999, 759, 499, 259]);
    assert.deepEqual(lcmTimesteps(D, 1), [999]);
    assert.deepEqual(lcmTimesteps(D, 8), [999, 879, 759, 639, 499, 379, 259, 139]);
  });

  test('img2img skips the first steps: 4 steps at strength 0.5 run the last 2', () => {
    const sch = makeSchedule('euler', D, 4, 0.5);
    assert.deepEqual(sch.timesteps, [499, 249]);
    assert.equal(sch.sigmas.length, 3);
    assert.deepEqual(makeSchedule('euler', D, 2, 0.3).timesteps, [499], 'at least one step');
  });

  test('LCM guidance embedding: sin/cos of 1000·(w−1) over 10⁴^(−j/127)', () => {
    const e = guidanceEmbedding(8, 256);
    assert.equal(e.length, 256);
    close(e[0]!, Math.sin(7000), 1e-6);
    close(e[128]!, Math.cos(7000), 1e-6);
    close(e[127]!, Math.sin(7000 * 1e-4), 1e-6);
  });
});

describe('update rules', () => {
  const x0 = () => Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * 3);

  for (const name of ['euler', 'dpmpp-2m'] as SchedulerName[]) {
    test(`${name}: with ε = 0 the latent never moves (x0 = x at every σ)`, () => {
      const sch = makeSchedule(name, D, 6);
      const s = new Sampler(sch, D);
      const x = x0();
      const start = Float32Array.from(x);
      const state = {};
      for (let i = 0; i < s.steps; i++) s.step(i, x, new Float32Array(64), state, new SeededRandom(1));
      x.forEach((v, j) => close(v, start[j]!, 1e-5));
    });
  }

  test('euler, 1 step from σmax: x₁ = x − σ·ε (SD-Turbo)', () => {
    const s = new Sampler(makeSchedule('euler', D, 1), D);
    const x = x0();
    const eps = Float32Array.from({ length: 64 }, (_, i) => Math.cos(i));
    const want = x.map((v, j) => v - s.schedule.sigmas[0]! * eps[j]!);
    s.step(0, x, eps, {}, new SeededRandom(1));
    x.forEach((v, j) => close(v, want[j]!, 1e-4));
  });

  test('dpm++ 2m: first step is (σ₁/σ₀)x − expm1(−h)·x0, second uses the previous x0', () => {
    const s = new Sampler(makeSchedule('dpmpp-2m', D, 4), D);
    const [s0, s1, s2] = s.schedule.sigmas as [number, number, number];
    const x = Float32Array.of(2);
    const eps = Float32Array.of(0.5);
    const x0a = 2 - s0 * 0.5;
    s.step(0, x, eps, {}, new SeededRandom(1));
    const h = Math.log(s0 / s1);
    close(x[0]!, (s1 / s0) * 2 + -Math.expm1(-h) * x0a, 1e-5, 'step 0');
    const state = { prevX0: Float32Array.of(x0a) };
    const xb = Float32Array.of(x[0]!);
    const x0b = xb[0]! - s1 * 0.5;
    s.step(1, xb, eps, state, new SeededRandom(1));
    const h2 = Math.log(s1 / s2);
    const r = Math.log(s0 / s1) / h2;
    const Dd = (1 + 1 / (2 * r)) * x0b - (1 / (2 * r)) * x0a;
    close(xb[0]!, (s2 / s1) * x[0]! - Math.expm1(-h2) * Dd, 1e-5, 'step 1');
  });

  test('euler ancestral adds σ_up of fresh noise, and none on the last step', () => {
    const s = new Sampler(makeSchedule('euler-a', D, 2), D);
    const a = Float32Array.of(1, 1, 1, 1);
    const b = Float32Array.of(1, 1, 1, 1);
    s.step(0, a, new Float32Array(4), {}, new SeededRandom(1));
    s.step(0, b, new Float32Array(4), {}, new SeededRandom(2));
    assert.notDeepEqual(a, b, 'noise depends on the image seed');
    const c = Float32Array.of(1, 1);
    s.step(1, c, new Float32Array(2), {}, new SeededRandom(3));
    assert.deepEqual(c, Float32Array.of(1, 1));
  });

  test('lcm, last step returns c_out·x0 + c_skip·x with x0 = (x − √(1−ᾱ)ε)/√ᾱ', () => {
    const s = new Sampler(makeSchedule('lcm', D, 1), D);
    const a = alphasCumprod(D)[999]!;
    const x = Float32Array.of(0.7);
    const eps = Float32Array.of(0.2);
    s.step(0, x, eps, {}, new SeededRandom(1));
    const x0 = (0.7 - Math.sqrt(1 - a) * 0.2) / Math.sqrt(a);
    const st = 9990;
    close(x[0]!, (st / Math.sqrt(st * st + 0.25)) * x0 + (0.25 / (st * st + 0.25)) * 0.7, 1e-4);
  });
});

describe('seeded noise', () => {
  test('same seed, same stream; different seeds differ; roughly standard normal', () => {
    const a = new SeededRandom(42).fillNormal(new Float32Array(20000));
    const b = new SeededRandom(42).fillNormal(new Float32Array(20000));
    const c = new SeededRandom(43).fillNormal(new Float32Array(20000));
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
    close(mean, 0, 0.03, 'mean');
    close(variance, 1, 0.05, 'variance');
    assert.notDeepEqual(new SeededRandom(2 ** 32).fillNormal(new Float32Array(4)), new SeededRandom(0).fillNormal(new Float32Array(4)), 'high bits count');
  });
});
