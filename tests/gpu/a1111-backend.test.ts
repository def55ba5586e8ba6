/** The AUTOMATIC1111/Forge backend against loopback stand-ins. */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { HOSTILE, assertWarnsAbout, hostileOptions } from '../support/hostile-options.ts';
import sharp from 'sharp';
import { A1111Backend, checkpointKey } from '../../src/backends/a1111/a1111-backend.ts';
import type { A1111BackendConfigInput } from '../../src/backends/a1111/options.ts';
import { pngText } from '../support/comfyui-standin.ts';
import { startA1111Standin } from '../support/a1111-standin.ts';
import type { A1111Standin, A1111StandinOptions } from '../support/a1111-standin.ts';
import { context, rejection, request, until } from './helpers.ts';

const open: Array<{ close(): Promise<void> }> = [];
after(async () => {
  for (const o of open.reverse()) await o.close().catch(() => {});
});

async function standin(opts: A1111StandinOptions = {}): Promise<A1111Standin> {
  const s = await startA1111Standin(opts);
  open.push(s);
  return s;
}

function backend(hosts: A1111Standin[], config: Partial<A1111BackendConfigInput> = {}): A1111Backend {
  const b = new A1111Backend({ type: 'a1111', name: 'webui', hosts: hosts.map((h) => h.url), healthIntervalSeconds: 0.05, progressPollMs: 10, ...config });
  open.push(b);
  return b;
}

// 20 ms a step at the tests' 64×64.
const slow = { msPerStep: 1280, overheadMs: 5, batchFactor: 0.6, switchMs: 30 };

describe('A1111 backend', () => {
  test('checkpoint keys ignore hash, folder and extension', () => {
    assert.equal(checkpointKey('sd15.safetensors [a1b2c3d4e5]'), 'sd15');
    assert.equal(checkpointKey('sub/dir/sd15.safetensors'), 'sd15');
    assert.equal(checkpointKey('sd15'), 'sd15');
  });

  test('txt2img: checkpoint per request through override_settings, kept loaded; info parsed; seeds per image', async () => {
    const s = await standin();
    const b = backend([s]);
    const res = await b.generate(request({ n: 2, negativePrompt: 'ugly', guidanceScale: 5 }), context());
    const body = s.executions[0]!.body;
    assert.deepEqual(body.override_settings, { sd_model_checkpoint: 'sd15.safetensors' });
    assert.equal(body.override_settings_restore_afterwards, false);
    assert.equal(body.batch_size, 2);
    assert.equal(body.steps, 10);
    assert.equal(body.cfg_scale, 5);
    assert.equal(body.negative_prompt, 'ugly');
    assert.equal(body.width, 64);
    assert.equal(res.images.length, 2);
    const seeds = res.images.map((i) => pngText(i.data).seed);
    assert.deepEqual(res.images.map((i) => i.seed), seeds);
    assert.equal(seeds[1], seeds[0] + 1);
    assert.equal(s.loaded, 'sd15.safetensors');
  });

  test('progress is polled on a separate connection while the call blocks; previews optional', async () => {
    const s = await standin({ latency: slow, previews: true });
    const b = backend([s], { previews: true });
    const ctx = context();
    await b.generate(request({ steps: 40 }), ctx);
    assert.ok(ctx.progress.length >= 3, `progress: ${ctx.progress}`);
    assert.ok(ctx.progress.every((p, i) => i === 0 || p > ctx.progress[i - 1]!));
    assert.ok(ctx.partials.length >= 1);
    assert.ok(s.requests.filter((r) => r === 'GET /sdapi/v1/progress').length >= 3);
  });

  test('batching: compatible jobs become one batch_size call; each gets its own seeds', async () => {
    const s = await standin({ latency: slow });
    const b = backend([s], { maxBatchSize: 4 });
    const warm = b.generate(request({ prompt: 'warm' }), context());
    await until(() => s.executions.length === 1);
    const ctxs = [context('a'), context('b'), context('c')];
    const rs = await Promise.all([b.generate(request(), ctxs[0]!), b.generate(request({ n: 2 }), ctxs[1]!), b.generate(request(), ctxs[2]!)]);
    await warm;
    assert.equal(s.executions.length, 2);
    const run = s.executions[1]!;
    assert.equal(run.batch, 4);
    assert.deepEqual(rs.map((r) => r.images.map((i) => pngText(i.data).seed - run.seed)), [[0], [1, 2], [3]]);
    assert.deepEqual(ctxs.map((c) => (c.states[0] as any).seed - run.seed), [0, 1, 3]);
  });

  test('affinity uses the checkpoint the host reports as loaded', async () => {
    const h1 = await standin({ latency: slow });
    const h2 = await standin({ latency: slow });
    h1.loaded = 'dreamshaper_8.safetensors';
    h2.loaded = 'sd15.safetensors';
    const b = backend([h1, h2], { maxBatchSize: 1 });
    await b.pool.probeAll();
    assert.deepEqual(b.pool.hosts.map((h) => h.loaded), ['dreamshaper_8', 'sd15']);
    await Promise.all([
      b.generate(request({ model: 'sd15.safetensors', prompt: '1' }), context()),
      b.generate(request({ model: 'dreamshaper_8', prompt: '2' }), context()),
      b.generate(request({ model: 'sd15.safetensors [736431352e]', prompt: '3' }), context()),
    ]);
    assert.equal(h1.executions.filter((e) => e.switched).length + h2.executions.filter((e) => e.switched).length, 0, 'no checkpoint switch');
  });

  test('img2img with a mask: init image and an A1111-style mask (white = repaint) from OpenAI-style alpha', async () => {
    const s = await standin();
    const b = backend([s]);
    const input = await sharp({ create: { width: 80, height: 64, channels: 3, background: { r: 200, g: 10, b: 10 } } }).png().toBuffer();
    const mask = await sharp({ create: { width: 80, height: 64, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    const res = await b.generate(
      request({ kind: 'edit', size: undefined, inputImages: [{ data: input, mediaType: 'image/png' }], mask: { data: mask, mediaType: 'image/png' } }),
      context(),
    );
    assert.equal(res.images.length, 1);
    const ex = s.executions[0]!;
    assert.equal(ex.route, '/sdapi/v1/img2img');
    assert.equal(ex.width, 80, 'the input size');
    assert.equal(ex.body.denoising_strength, 0.75);
    const m = await sharp(Buffer.from(ex.body.mask, 'base64')).raw().toBuffer({ resolveWithObject: true });
    assert.equal(m.data[0], 255, 'transparent became white');
  });

  test('validation errors: 404 Sampler not found and FastAPI 422 fail the job, not the host', async () => {
    const s = await standin();
    const b = backend([s]);
    const e1 = await rejection(b.generate(request({ providerOptions: { sampler_name: 'Fancy' } }), context()));
    assert.equal(e1.code, 'invalid_request');
    assert.match(e1.message, /rejected the request \(404\): Sampler not found/);
    const e2 = await rejection(b.generate(request({ providerOptions: { n_iter: 1, hr_second_pass_steps: 1 }, steps: 2.5 as any }), context()));
    assert.match(e2.message, /\(422\): steps: value is not a valid integer/);
    const h = await b.health();
    assert.equal(h.ok, true);
  });

  test('cancel interrupts the running generation and drops its partial result', async () => {
    const s = await standin({ latency: { ...slow, msPerStep: 6400 } });
    const b = backend([s]);
    const ctx = context();
    const p = b.generate(request({ steps: 30 }), ctx);
    await until(() => ctx.progress.length > 0, 5000, 'running');
    ctx.controller.abort();
    assert.equal((await rejection(p)).code, 'aborted');
    await until(() => s.requests.includes('POST /sdapi/v1/interrupt'), 2000, 'interrupt');
    await until(() => s.executions[0]!.outcome === 'interrupted', 2000, 'interrupted');
  });

  test('a 500 (CUDA OOM) or a host dying mid-call moves the job to another host', async () => {
    const a = await standin({ latency: { ...slow, msPerStep: 3200 } });
    const c = await standin({ latency: slow });
    const b = backend([a, c], { maxBatchSize: 1 });
    await b.pool.probeAll();
    a.failGeneration();
    c.failGeneration();
    const r1 = await b.generate(request({ prompt: 'oom' }), context());
    assert.equal(r1.images.length, 1);
    assert.equal(a.executions.length + c.executions.length, 3);

    const busy = b.generate(request({ prompt: 'busy', steps: 5 }), context());
    await until(() => [...a.executions, ...c.executions].some((e) => e.prompt === 'busy'));
    const victimHost = a.executions.some((e) => e.prompt === 'busy') ? c : a;
    const p = b.generate(request({ prompt: 'victim', steps: 30 }), context());
    await until(() => victimHost.executions.some((e) => e.prompt === 'victim'), 5000, 'victim running');
    await victimHost.die();
    const res = await p;
    assert.equal(pngText(res.images[0]!.data).prompt, 'victim');
    await busy;
    assert.equal(b.pool.stats().hosts.find((h) => h.url === victimHost.url)!.status, 'down');
    await victimHost.revive();
    await until(() => b.pool.stats().hosts.every((h) => h.status === 'up'), 3000, 'rejoin');
  });

  test('HTTP Basic credentials go to every route', async () => {
    const s = await standin({ auth: 'me:secret' });
    const bad = backend([s], { basicAuth: 'me:wrong' });
    const h = await bad.health();
    assert.equal(h.ok, false);
    assert.match(h.message!, /401/);
    const good = backend([s], { basicAuth: 'me:secret' });
    const res = await good.generate(request(), context());
    assert.equal(res.images.length, 1);
  });

  test('config: one call per host (the webui serialises generations)', () => {
    assert.throws(() => new A1111Backend({ type: 'a1111', name: 'x', hosts: ['http://127.0.0.1:1'], maxConcurrentPerHost: 2 }));
  });

  test('hostile provider options never reach the webui: checkpoint, count, size, steps, prompt and scripts stay easel’s', async () => {
    const s = await standin();
    const b = backend([s]);
    const providerOptions = hostileOptions({
      n_iter: 4,
      batch_size: 4,
      width: 2048,
      enable_hr: true,
      steps: 150,
      negative_prompt: 'hostile negative',
      override_settings: { sd_model_checkpoint: 'hostile.safetensors' },
      script_name: 'hostile script',
      styles: ['hostile style'],
      cfg_scale: 30,
      sampler_name: 'DPM++ 2M',
      restore_faces: true,
    });
    const res = await b.generate(request({ seed: 9, providerOptions }), context());
    assert.equal(res.images.length, 1);
    const body = s.executions[0]!.body;
    assert.equal(body.prompt, 'a lighthouse at dusk');
    assert.equal(body.negative_prompt, '');
    assert.deepEqual([body.batch_size, body.n_iter, body.width, body.height, body.steps], [1, 1, 64, 64, 10]);
    assert.deepEqual(body.override_settings, { sd_model_checkpoint: 'sd15.safetensors' });
    assert.equal(body.cfg_scale, 7);
    assert.equal(body.enable_hr, undefined);
    assert.equal(body.script_name, undefined);
    assert.equal(body.styles, undefined);
    assert.equal(body.sampler_name, 'DPM++ 2M', 'a declared option still goes through');
    assert.equal(body.restore_faces, true);
    assert.doesNotMatch(JSON.stringify(body), HOSTILE);
    assertWarnsAbout(res.warnings, ['n', 'model', 'size', 'prompt', 'image', 'input.prompt', '__proto__', 'n_iter', 'batch_size', 'width', 'enable_hr', 'steps', 'negative_prompt', 'override_settings.sd_model_checkpoint', 'script_name', 'styles', 'cfg_scale']);
  });

  test('the spec: every kind of job, sizes on the latent grid, the webui’s sampling options; refine’s strength is the img2img strength', async () => {
    const { completeSpec, providerOptionsProblem, requestProblem } = await import('../../src/backends/model-spec.ts');
    const s = await standin();
    const b = backend([s]);
    const spec = completeSpec(b.modelSpec('sd15.safetensors'), 'sd15.safetensors');
    assert.deepEqual(spec.capabilities, { generate: true, edit: true, mask: true, variation: true, maxInputImages: 1 });
    assert.equal(spec.pricing, 'gpu-time');
    assert.equal(requestProblem('m', spec, { prompt: 'x', size: { width: 100, height: 64 } }, 'generation')?.param, 'size');
    assert.equal(providerOptionsProblem('m', spec, { sampler_name: 'Euler', scheduler: 'Karras', denoising_strength: 0.4, tiling: true }), undefined);
    assert.equal(providerOptionsProblem('m', spec, { alwayson_scripts: {} })?.code, 'unknown_parameter');
    assert.equal(providerOptionsProblem('m', spec, { override_settings: { sd_model_checkpoint: 'x' } })?.code, 'provider_option_not_allowed');
    const input = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 9, g: 9, b: 9 } } }).png().toBuffer();
    await b.generate(request({ kind: 'edit', inputImages: [{ data: input, mediaType: 'image/png' }], providerOptions: { strength: 0.3 } }), context());
    assert.equal(s.executions[0]!.body.denoising_strength, 0.3);
  });
});
