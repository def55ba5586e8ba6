/**
 * The engine end to end (tokenizer → text encoder → sampler → UNet → VAE/TAESD → RGB) over tiny
 * models whose outputs the math predicts: an identity UNet, an ε = 0 UNet, a UNet that returns the
 * text embedding's mean (classifier-free guidance) and one that echoes the timestep it was fed.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine, EngineAbortError, EngineRequestError } from '../../src/backends/onnx/engine.ts';
import type { EngineRequest } from '../../src/backends/onnx/engine.ts';
import { ClipTokenizer } from '../../src/backends/onnx/clip-tokenizer.ts';
import { SeededRandom } from '../../src/backends/onnx/random.ts';
import { DEFAULT_NOISE_SCHEDULE, alphasCumprod, makeSchedule, sigmaTable } from '../../src/backends/onnx/schedulers.ts';
import { TOKENIZER_FIXTURE, buildTinyModel, buildTinyTaesd } from './support/tiny-models.ts';
import type { TinyModelOptions } from './support/tiny-models.ts';

let root: string;
let engine: Engine;
const dirs: Record<string, string> = {};
const turbo = { name: 'tiny', kind: 'pipeline', family: 'turbo' };
const sd = { name: 'tiny-sd', kind: 'pipeline', family: 'sd' };

const MODELS: Record<string, TinyModelOptions> = {
  identity: { unet: 'identity', manifest: turbo, vaeEncoder: true },
  zero: { unet: 'zero', manifest: sd },
  text: { unet: 'text', manifest: sd },
  textStatic: { unet: 'text', manifest: sd, fixedBatch: 1 },
  lcm: { unet: 'zero', lcm: true, manifest: { name: 'tiny-lcm', kind: 'pipeline', family: 'lcm' } },
  tsInt64: { unet: 'timestep', timestep: { type: 'int64', shape: [1] }, idsType: 'int64', manifest: turbo },
  tsFloatBatch: { unet: 'timestep', timestep: { type: 'float32', shape: ['batch'] }, manifest: turbo },
  tsFloatScalar: { unet: 'timestep', timestep: { type: 'float32', shape: [] }, manifest: turbo },
  tsHalf: { unet: 'timestep', timestep: { type: 'float16', shape: [1] }, manifest: turbo },
  noDecoder: { unet: 'zero', manifest: turbo, vaeDecoder: false },
};

before(() => {
  root = mkdtempSync(join(tmpdir(), 'easel-engine-'));
  for (const [k, opts] of Object.entries(MODELS)) dirs[k] = buildTinyModel(join(root, k), opts);
  dirs.taesd = buildTinyTaesd(join(root, 'taesd'));
  engine = new Engine({ executionProvider: 'cpu', deviceId: 0, intraOpThreads: 1, keepLoaded: 16, warn: () => {} });
});
after(async () => {
  await engine.close();
  rmSync(root, { recursive: true, force: true });
});

const W = 32;
const H = 32;
const SIZE = 4 * (H / 8) * (W / 8);
const SIGMA_MAX = sigmaTable(DEFAULT_NOISE_SCHEDULE)[999]!;
const noise = (seed: number) => new SeededRandom(seed).fillNormal(new Float32Array(SIZE));
const run = (model: string, req: Partial<EngineRequest> & Pick<EngineRequest, 'items'>) =>
  engine.generate({ modelDir: dirs[model]!, width: W, height: H, returnLatents: true, ...req });

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  assert.ok(worst <= tol, `${what}: max |Δ| ${worst} > ${tol}`);
}

/** What the tiny VAE decoder makes of a latent: channels 0..2, ×8 nearest, (x/scale) mapped from `range`. */
function expectedRgb(latent: Float32Array, scale: number, range: [number, number] = [-1, 1]): Uint8Array {
  const out = new Uint8Array(W * H * 3);
  const lw = W / 8;
  const lh = H / 8;
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      for (let c = 0; c < 3; c++) {
        const v = (latent[c * lh * lw + Math.floor(y / 8) * lw + Math.floor(x / 8)]! / scale - range[0]) / (range[1] - range[0]);
        out[(y * W + x) * 3 + c] = Math.round(Math.min(1, Math.max(0, v)) * 255);
      }
  return out;
}

function assertPixels(actual: Uint8Array, expected: Uint8Array): void {
  let off = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    assert.ok(d <= 1, `pixel byte ${i}: ${actual[i]} vs ${expected[i]}`);
    if (d) off++;
  }
  assert.ok(off <= actual.length * 0.01, `${off} bytes off by one`);
}

describe('SD-Turbo path (1 step, Euler, trailing, no guidance)', () => {
  test('identity UNet: x₀ = x_T·(1 − σ/√(σ²+1)), decoded through the VAE (÷0.18215) to the predicted pixels', async () => {
    const res = await run('identity', { items: [{ prompt: 'An astronaut riding a horse', seed: 7 }] });
    assert.deepEqual(res.settings, { width: W, height: H, steps: 1, guidanceScale: 0, scheduler: 'euler', cfg: false, decoder: 'vae', provider: 'cpu' });
    const k = 1 - SIGMA_MAX / Math.sqrt(SIGMA_MAX ** 2 + 1);
    const want = noise(7).map((n) => n * SIGMA_MAX * k);
    assertClose(res.images[0]!.latents!, want, 1e-5, 'latent');
    assertPixels(res.images[0]!.rgb, expectedRgb(want, 0.18215));
    assert.equal(res.timings.unetCalls, 1);
  });

  test('TAESD decodes the same latent without the 0.18215 scaling', async () => {
    const res = await run('identity', { taesdDir: dirs.taesd, items: [{ prompt: 'x', seed: 7 }] });
    assert.equal(res.settings.decoder, 'taesd');
    assertPixels(res.images[0]!.rgb, expectedRgb(res.images[0]!.latents!, 1));
  });

  for (const [model, what] of [
    ['tsInt64', 'int64 [1] (with int64 input_ids)'],
    ['tsFloatBatch', 'float32 [batch]'],
    ['tsFloatScalar', 'float32 scalar'],
    ['tsHalf', 'float16 [1]'],
  ] as const) {
    test(`timestep fed as ${what}, read from the model's metadata`, async () => {
      const res = await run(model, { items: [{ prompt: 'a', seed: 1 }, { prompt: 'b', seed: 2 }] });
      // The echo UNet returns t·1e-3 = 0.999 for every element, so x₁ = x_T − σ·0.999.
      res.images.forEach((img, b) => assertClose(img.latents!, noise(b + 1).map((n) => n * SIGMA_MAX - SIGMA_MAX * 0.999), 1e-4, `image ${b}`));
    });
  }

  test('a negative prompt without guidance is ignored, and said so', async () => {
    const res = await run('identity', { items: [{ prompt: 'a', negativePrompt: 'blurry', seed: 3 }] });
    assert.equal(res.settings.cfg, false);
    assert.match(res.warnings.map((w) => w.detail).join(' '), /negative_prompt is ignored/);
  });
});

describe('classifier-free guidance (SD 1.x/2.x)', () => {
  const tok = ClipTokenizer.fromDir(TOKENIZER_FIXTURE);
  /** The tiny text encoder's mean embedding of a prompt: 1e-4·mean(ids)·mean((k+1)/D), D = 8. */
  const meanEmbed = (p: string) => 1e-4 * (tok.encodePadded(p).reduce((a, b) => a + b, 0) / 77) * (4.5 / 8);

  test('ε = ε_u + g·(ε_c − ε_u), with the negative prompt as the unconditional one', async () => {
    for (const negativePrompt of [undefined, 'blurry, low quality']) {
      const res = await run('text', { steps: 1, guidanceScale: 5, scheduler: 'euler', items: [{ prompt: 'a red fox in snow', negativePrompt, seed: 4 }] });
      assert.equal(res.settings.cfg, true);
      const u = meanEmbed(negativePrompt ?? '');
      const c = meanEmbed('a red fox in snow');
      const eps = u + 5 * (c - u);
      assertClose(res.images[0]!.latents!, noise(4).map((n) => n * SIGMA_MAX - SIGMA_MAX * eps), 2e-3, `negative ${negativePrompt}`);
      assert.equal(res.timings.unetCalls, 1, 'conditional and unconditional share one UNet call');
    }
  });

  test('a model exported with a fixed batch of 1 runs the same guidance in chunks', async () => {
    const items = [{ prompt: 'a', seed: 1 }, { prompt: 'b', negativePrompt: 'c', seed: 2 }];
    const dynamic = await run('text', { steps: 2, guidanceScale: 3, items });
    const fixed = await run('textStatic', { steps: 2, guidanceScale: 3, items });
    dynamic.images.forEach((img, b) => assert.deepEqual(fixed.images[b]!.latents, img.latents));
  });

  for (const scheduler of ['euler', 'dpmpp-2m'] as const) {
    test(`${scheduler}, 6 steps, ε = 0 UNet: the latent stays x_T = noise·σmax`, async () => {
      const res = await run('zero', { steps: 6, guidanceScale: 0, scheduler, items: [{ prompt: 'x', seed: 9 }] });
      assert.equal(res.settings.steps, 6);
      assertClose(res.images[0]!.latents!, noise(9).map((n) => n * SIGMA_MAX), 2e-4, scheduler);
    });
  }

  test('euler ancestral: deterministic per seed, different from plain Euler', async () => {
    const a = await run('zero', { steps: 3, guidanceScale: 0, scheduler: 'euler-a', items: [{ prompt: 'x', seed: 9 }] });
    const b = await run('zero', { steps: 3, guidanceScale: 0, scheduler: 'euler-a', items: [{ prompt: 'x', seed: 9 }] });
    assert.deepEqual(a.images[0]!.rgb, b.images[0]!.rgb);
    assert.notDeepEqual(a.images[0]!.latents, noise(9).map((n) => n * SIGMA_MAX));
  });
});

describe('LCM', () => {
  test('timestep_cond marks the model as LCM: 4 steps with the LCM scheduler by default', async () => {
    const res = await run('lcm', { items: [{ prompt: 'x', seed: 2 }] });
    assert.equal(res.settings.scheduler, 'lcm');
    assert.equal(res.settings.steps, 4);
    assert.equal(res.settings.cfg, false);
    assert.ok(res.images[0]!.latents!.every(Number.isFinite));
  });

  test('1 step, ε = 0: c_out·x/√ᾱ₉₉₉ + c_skip·x from unit noise', async () => {
    const res = await run('lcm', { steps: 1, items: [{ prompt: 'x', seed: 2 }] });
    const a = alphasCumprod(DEFAULT_NOISE_SCHEDULE)[999]!;
    const st = 9990;
    const k = (st / Math.sqrt(st * st + 0.25)) / Math.sqrt(a) + 0.25 / (st * st + 0.25);
    assertClose(res.images[0]!.latents!, noise(2).map((n) => n * k), 1e-4, 'latent');
  });
});

describe('img2img', () => {
  test('strength 0.5 of 2 steps: the encoded image noised to σ₄₉₉, one identity step', async () => {
    const rgb = new Uint8Array(W * H * 3);
    for (let p = 0; p < W * H; p++) rgb.set([200, 100, 50], p * 3);
    const res = await run('identity', { steps: 2, init: { rgb, strength: 0.5 }, items: [{ prompt: 'x', seed: 5 }] });
    assert.equal(res.settings.steps, 1);
    const sch = makeSchedule('euler', DEFAULT_NOISE_SCHEDULE, 2, 0.5);
    const s = sch.sigmas[0]!;
    const plane = (W / 8) * (H / 8);
    const color = [200, 100, 50, 200].map((v) => ((v / 255) * 2 - 1) * 0.18215);
    const n = noise(5);
    const want = n.map((v, j) => (color[Math.floor(j / plane)]! + v * s) * (1 - s / Math.sqrt(s * s + 1)));
    assertClose(res.images[0]!.latents!, want, 1e-5, 'latent');
  });

  test('a model without an encoder refuses edits', async () => {
    await assert.rejects(run('zero', { init: { rgb: new Uint8Array(W * H * 3), strength: 0.5 }, items: [{ prompt: 'x', seed: 1 }] }), EngineRequestError);
  });
});

describe('determinism and batching', () => {
  test('same seed → same bytes; an image does not depend on what it is batched with', async () => {
    const alone = await run('text', { steps: 2, guidanceScale: 4, items: [{ prompt: 'a fox', seed: 11 }] });
    const again = await run('text', { steps: 2, guidanceScale: 4, items: [{ prompt: 'a fox', seed: 11 }] });
    const batch = await run('text', { steps: 2, guidanceScale: 4, items: [{ prompt: 'a cat', negativePrompt: 'dog', seed: 5 }, { prompt: 'a fox', seed: 11 }] });
    assert.deepEqual(again.images[0]!.rgb, alone.images[0]!.rgb);
    assert.deepEqual(batch.images[1]!.rgb, alone.images[0]!.rgb);
    assert.notDeepEqual(batch.images[0]!.rgb, alone.images[0]!.rgb);
    assert.equal(batch.timings.unetCalls, 2, 'both prompts (and their unconditional twins) in one call per step');
  });
});

describe('requests the model cannot run', () => {
  test('sizes must be multiples of 8', async () => {
    await assert.rejects(run('zero', { width: 60, items: [{ prompt: 'x', seed: 1 }] }), /multiples of 8/);
  });
  test('the lcm scheduler needs an LCM model', async () => {
    await assert.rejects(run('zero', { scheduler: 'lcm', items: [{ prompt: 'x', seed: 1 }] }), /needs an LCM model/);
  });
  test('no VAE decoder and no TAESD', async () => {
    await assert.rejects(run('noDecoder', { items: [{ prompt: 'x', seed: 1 }] }), /no vae_decoder/);
  });
});

describe('progress and abort', () => {
  test('progress rises to 1; an abort stops the loop between model calls', async () => {
    const seen: number[] = [];
    await run('zero', { steps: 3, guidanceScale: 0, items: [{ prompt: 'x', seed: 1 }], returnLatents: false }).then(() => {});
    await engine.generate({ modelDir: dirs.zero!, width: W, height: H, steps: 3, guidanceScale: 0, items: [{ prompt: 'x', seed: 1 }] }, { onProgress: (p) => seen.push(p) });
    assert.deepEqual(seen, [...seen].sort((a, b) => a - b));
    assert.equal(seen.at(-1), 1);
    let calls = 0;
    await assert.rejects(
      engine.generate({ modelDir: dirs.zero!, width: W, height: H, steps: 5, guidanceScale: 0, items: [{ prompt: 'x', seed: 1 }] }, { onProgress: () => calls++, isAborted: () => calls >= 2 }),
      EngineAbortError,
    );
    assert.equal(calls, 2);
  });
});

describe('execution providers', () => {
  test('asking for CUDA where it cannot load: one warning line, then the CPU gives the same image', async () => {
    const lines: string[] = [];
    const cuda = new Engine({ executionProvider: 'cuda', deviceId: 0, intraOpThreads: 1, keepLoaded: 1, warn: (m) => lines.push(m) });
    try {
      const res = await cuda.generate({ modelDir: dirs.identity!, width: W, height: H, items: [{ prompt: 'x', seed: 7 }] });
      await cuda.generate({ modelDir: dirs.identity!, width: W, height: H, items: [{ prompt: 'y', seed: 8 }] });
      assert.equal(lines.length, 1, lines.join('\n'));
      assert.match(lines[0]!, /CUDA execution provider unavailable, running on CPU/);
      assert.equal(res.settings.provider, 'cpu');
      const cpu = await run('identity', { items: [{ prompt: 'x', seed: 7 }] });
      assert.deepEqual(res.images[0]!.rgb, cpu.images[0]!.rgb);
    } finally {
      await cuda.close();
    }
  });
});
