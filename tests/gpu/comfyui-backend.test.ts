/** The ComfyUI backend against loopback ComfyUI stand-ins. */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { HOSTILE, assertWarnsAbout, hostileOptions } from '../support/hostile-options.ts';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { ComfyUIBackend } from '../../src/backends/comfyui/comfyui-backend.ts';
import type { ComfyUIBackendConfigInput } from '../../src/backends/comfyui/options.ts';
import { buildTemplate, guessFamily } from '../../src/backends/comfyui/templates.ts';
import { imageColor, pngText, startComfyUIStandin } from '../support/comfyui-standin.ts';
import type { ComfyStandinOptions, ComfyUIStandin } from '../support/comfyui-standin.ts';
import { context, rejection, request, until } from './helpers.ts';

const open: Array<{ close(): Promise<void> }> = [];
after(async () => {
  for (const o of open.reverse()) await o.close().catch(() => {});
});

async function standin(opts: ComfyStandinOptions = {}): Promise<ComfyUIStandin> {
  const s = await startComfyUIStandin(opts);
  open.push(s);
  return s;
}

function backend(hosts: ComfyUIStandin[], config: Partial<ComfyUIBackendConfigInput> = {}): ComfyUIBackend {
  const b = new ComfyUIBackend({
    type: 'comfyui',
    name: 'comfy',
    hosts: hosts.map((h) => h.url),
    healthIntervalSeconds: 0.05,
    hostLostAfterSeconds: 0.5,
    reconnectDelayMs: 20,
    historyPollMs: 20,
    // Most tests want calls to wait in the pool while a host is busy; queue-ahead has its own test.
    queueAheadPerHost: 0,
    ...config,
  });
  open.push(b);
  return b;
}

// Per step of a 512×512 image; the tests' 64×64 images take 1/64 of it (20 ms a step).
const slow = { msPerStep: 1280, overheadMs: 5, batchFactor: 0.6, switchMs: 30 };

describe('ComfyUI backend', () => {
  test('txt2img: submits the template with its client id, follows the socket, reads history and /view', async () => {
    const s = await standin({ historyDelayMs: 40 });
    const b = backend([s]);
    const ctx = context();
    const res = await b.generate(request({ negativePrompt: 'blurry', guidanceScale: 6, size: { width: 96, height: 64 } }), ctx);
    assert.equal(res.images.length, 1);
    assert.equal(res.images[0]!.mediaType, 'image/png');
    const meta = pngText(res.images[0]!.data);
    assert.equal(meta.prompt, 'a lighthouse at dusk');
    assert.equal(meta.checkpoint, 'sd15.safetensors');
    assert.equal(res.images[0]!.seed, meta.seed);

    const sent = s.prompts[0]!;
    assert.ok(sent.client_id, 'submitted with a client_id');
    const g = sent.prompt as any;
    assert.equal(g['4'].class_type, 'CheckpointLoaderSimple');
    assert.equal(g['5'].inputs.width, 96);
    assert.equal(g['7'].inputs.text, 'blurry');
    assert.equal(g['3'].inputs.cfg, 6);
    assert.equal(g['3'].inputs.steps, 10);
    assert.ok(s.requests.includes(`GET /history/${sent.id}`));
    assert.ok(s.requests.some((r) => r === 'GET /view'));
    // The history write comes 40 ms after execution_success: acting on it would have read {}.
    assert.equal(s.requests.filter((r) => r.startsWith('GET /history/')).length, 1, 'history read once, after executing{node:null}');
    assert.deepEqual(ctx.states[0], { backend: 'comfyui', host: b.pool.hosts[0]!.name, promptId: sent.id, seed: meta.seed, batchIndex: 0, batchSize: 1, outputs: ['9'] });
  });

  test('progress and binary previews reach the job (type-4 frames after the handshake)', async () => {
    const s = await standin({ previews: true, latency: slow });
    const b = backend([s]);
    const ctx = context();
    await b.generate(request({ steps: 25 }), ctx);
    assert.ok(ctx.progress.length >= 3, `progress events: ${ctx.progress}`);
    assert.ok(ctx.progress.every((p, i) => i === 0 || p > ctx.progress[i - 1]!), 'only growing');
    assert.equal(ctx.progress.at(-1), 1);
    assert.ok(ctx.partials.length >= 2, 'previews forwarded');
    assert.equal(ctx.partials[0]!.mediaType, 'image/png');
    assert.deepEqual([...ctx.partials[0]!.data.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], 'image bytes start after the frame header');
  });

  test('legacy server: own prompt ids, no execution_success, type-1 previews', async () => {
    const s = await standin({ previews: true, latency: slow, legacyIds: true, noExecutionSuccess: true });
    const b = backend([s], { previews: true });
    const ctx = context();
    const res = await b.generate(request(), ctx);
    assert.equal(res.images.length, 1);
    assert.ok(ctx.partials.length >= 1, 'type-1 previews attributed to the executing prompt');
    assert.ok(s.prompts[0]!.requestedId);
    assert.notEqual(s.prompts[0]!.id, s.prompts[0]!.requestedId, 'the server chose its own id, and it was followed');
  });

  test('batching: compatible calls share one prompt and each job gets its own images', async () => {
    const s = await standin({ latency: slow });
    const b = backend([s], { maxBatchSize: 4 });
    const blocker = b.generate(request({ prompt: 'warm up' }), context('w'));
    await until(() => s.executions.length === 1);
    const ctxs = ['a', 'b', 'c'].map((id) => context(id));
    const calls = [b.generate(request({ n: 1 }), ctxs[0]!), b.generate(request({ n: 2 }), ctxs[1]!), b.generate(request({ n: 1 }), ctxs[2]!)];
    await blocker;
    const results = await Promise.all(calls);
    const batchRun = s.executions[1]!;
    assert.equal(batchRun.batch, 4);
    assert.equal(s.executions.length, 2, 'one prompt for the three jobs');
    const indexes = results.map((r) => r.images.map((img) => pngText(img.data).index));
    assert.deepEqual(indexes, [[0], [1, 2], [3]]);
    for (const r of results) {
      for (const img of r.images) {
        const m = pngText(img.data);
        assert.equal(m.seed, batchRun.seed);
        assert.equal(img.seed, batchRun.seed);
      }
    }
    assert.deepEqual(ctxs.map((c) => (c.states[0] as any).batchIndex), [0, 1, 3]);
    assert.deepEqual((results[1]!.providerMetadata as any).batch, { size: 4, jobs: 3, seed: batchRun.seed, firstIndex: 1 });
  });

  test('queue-ahead: the next prompt waits in the host queue, so the GPU starts it at once', async () => {
    const s = await standin({ latency: slow });
    const b = backend([s], { queueAheadPerHost: 1, maxBatchSize: 1 });
    const ctxs = [context('1'), context('2'), context('3')];
    const calls = ctxs.map((c, i) => b.generate(request({ prompt: `p${i}`, steps: 40 }), c));
    await until(() => s.prompts.length === 2, 5000, 'two prompts on the host');
    assert.equal(s.executions.length, 1, 'one running, one queued on the host');
    assert.ok(ctxs[0]!.progress.at(-1)! >= 0.5, 'queued ahead once the running one was halfway');
    await Promise.all(calls);
    for (let i = 1; i < s.executions.length; i++) {
      const gap = s.executions[i]!.startedAt - s.executions[i - 1]!.endedAt;
      assert.ok(gap < 50, `gap ${gap} ms`);
    }
    assert.ok(ctxs.every((c) => c.progress.at(-1) === 1), 'a queued prompt still reports its own progress');
  });

  test('batch_index reproduces one image of an earlier batch', async () => {
    const s = await standin();
    const b = backend([s]);
    const res = await b.generate(request({ seed: 1234, providerOptions: { batch_index: 2 } }), context());
    const g = s.prompts[0]!.prompt as any;
    assert.equal(g['5'].inputs.batch_size, 3);
    assert.deepEqual(g['17'].inputs, { samples: ['5', 0], batch_index: 2, length: 1 });
    const m = pngText(res.images[0]!.data);
    assert.deepEqual([m.seed, m.index], [1234, 2]);
  });

  test('affinity: with two hosts, each checkpoint stays on one host', async () => {
    const h1 = await standin({ latency: slow });
    const h2 = await standin({ latency: slow });
    const b = backend([h1, h2], { maxBatchSize: 1 });
    await b.pool.probeAll();
    const jobs = [];
    for (let i = 0; i < 12; i++) {
      const model = i % 2 ? 'sd15.safetensors' : 'sd_xl_base_1.0.safetensors';
      jobs.push(b.generate(request({ model, prompt: `p${i}`, steps: 3 }), context(`j${i}`)));
    }
    await Promise.all(jobs);
    const switches = h1.executions.filter((e) => e.switched).length + h2.executions.filter((e) => e.switched).length;
    assert.equal(switches, 2, `checkpoint loads: ${switches}`);
    assert.equal(new Set(h1.executions.map((e) => e.checkpoint)).size, 1);
    assert.equal(new Set(h2.executions.map((e) => e.checkpoint)).size, 1);
  });

  test('a validation failure (400 with node_errors) fails the job naming the node and input', async () => {
    const s = await standin();
    const b = backend([s]);
    const err = await rejection(b.generate(request({ providerOptions: { sampler: 'euler_fancy' } }), context()));
    assert.equal(err.code, 'invalid_request');
    assert.equal(err.retryable, false);
    assert.match(err.message, /node 3 \(KSampler\): Value not in list: sampler_name: 'euler_fancy' not in/);
    assert.equal(s.executions.length, 0);
  });

  test('an unknown checkpoint is refused before queueing once the hosts have listed theirs', async () => {
    const s = await standin();
    const b = backend([s]);
    await b.pool.probeAll();
    const err = await rejection(b.generate(request({ model: 'nope.safetensors' }), context()));
    assert.equal(err.code, 'model_not_found');
    assert.equal(s.prompts.length, 0);
  });

  test('200 with node_errors (some outputs dropped) fails the job naming the node, and dequeues the prompt', async () => {
    const s = await standin({ latency: slow });
    const graph = buildTemplate({
      family: 'sd15', checkpoint: 'sd15.safetensors', prompt: 'x', negativePrompt: '', width: 64, height: 64, batchSize: 1, seed: 1,
      steps: 5, cfg: 7, sampler: 'euler', scheduler: 'normal', denoise: 1, filenamePrefix: 'wf',
    }) as any;
    graph['20'] = { class_type: 'KSampler', inputs: { ...graph['3'].inputs, sampler_name: 'bogus' } };
    graph['21'] = { class_type: 'VAEDecode', inputs: { samples: ['20', 0], vae: ['4', 2] } };
    graph['22'] = { class_type: 'SaveImage', inputs: { images: ['21', 0], filename_prefix: 'second' } };
    const b = backend([s], { maxConcurrentPerHost: 2, workflows: [{ name: 'two-outputs', graph, inputs: { prompt: '6.text' } }] });
    const blocker = b.generate(request({ prompt: 'busy' }), context());
    await until(() => s.executions.length === 1);
    const err = await rejection(b.generate(request({ model: 'two-outputs' }), context()));
    assert.match(err.message, /node 20 \(KSampler\)/);
    assert.equal(err.code, 'invalid_request');
    await blocker;
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(s.executions.length, 1, 'the half-valid prompt was deleted from the queue');
  });

  test('an execution_error fails the job naming the node; an OOM moves it to another host', async () => {
    const s1 = await standin();
    const b = backend([s1]);
    s1.failExecution('KSampler', 'mat1 and mat2 shapes cannot be multiplied (2x768 and 1024x320)');
    const err = await rejection(b.generate(request(), context()));
    assert.match(err.message, /node 3 \(KSampler\) failed on host .*: RuntimeError: mat1 and mat2/);
    assert.equal(err.retryable, false);

    const a = await standin();
    const c = await standin();
    const b2 = backend([a, c], { maxBatchSize: 1 });
    await b2.pool.probeAll();
    a.failExecution('KSampler', 'Allocation on device', 'torch.OutOfMemoryError');
    c.failExecution('KSampler', 'Allocation on device', 'torch.OutOfMemoryError');
    const ok = await b2.generate(request({ prompt: 'oom once' }), context()).catch((e) => e);
    // The first host to take it fails with OOM; it runs again on the other, which also fails once…
    // …so with two retries it lands back on the first, now without an injected failure.
    assert.ok(!(ok instanceof Error), String(ok));
    assert.equal(a.executions.length + c.executions.length, 3);
  });

  test('cancel while pending removes the prompt from the queue without interrupting', async () => {
    const s = await standin({ latency: slow });
    const b = backend([s], { queueAheadPerHost: 1, maxBatchSize: 1 });
    const running = b.generate(request({ prompt: 'running', steps: 80 }), context());
    await until(() => s.executions.length === 1);
    const ctx = context('pending');
    const pending = b.generate(request({ prompt: 'pending' }), ctx);
    await until(() => s.prompts.length === 2);
    ctx.controller.abort();
    const err = await rejection(pending);
    assert.equal(err.code, 'aborted', 'the job is answered at once');
    await until(() => s.requests.includes('POST /queue'), 2000, 'queue delete');
    await running;
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(s.executions.length, 1, 'the cancelled prompt never ran');
    assert.ok(!s.requests.includes('POST /interrupt'), 'the running prompt was not interrupted');
  });

  test('cancel while running interrupts that prompt', async () => {
    const s = await standin({ latency: { ...slow, msPerStep: 6400 } });
    const b = backend([s]);
    const ctx = context();
    const p = b.generate(request({ steps: 30 }), ctx);
    await until(() => ctx.progress.length > 0, 5000, 'running');
    ctx.controller.abort();
    const err = await rejection(p);
    assert.equal(err.code, 'aborted');
    await until(() => s.requests.includes('POST /interrupt'), 2000, 'interrupt');
    await until(() => s.executions[0]!.outcome === 'interrupted', 2000, 'interrupted');
    assert.ok(s.executions[0]!.endedAt - s.executions[0]!.startedAt < 2000, 'stopped early');
  });

  test('a dropped websocket is reopened and the prompt still followed (progress resumes)', async () => {
    const s = await standin({ latency: { ...slow, msPerStep: 1600 } });
    const b = backend([s]);
    const ctx = context();
    const p = b.generate(request({ steps: 60 }), ctx);
    await until(() => ctx.progress.length > 0, 5000, 'progress');
    s.dropSockets();
    const before = ctx.progress.length;
    const res = await p;
    assert.equal(res.images.length, 1);
    assert.ok(ctx.progress.length > before, 'progress kept coming after the reconnect');
    assert.ok(s.requests.filter((r) => r.startsWith('GET /history/')).length >= 2, 'history checked after the drop');
  });

  test('no websocket at all: history polling carries the prompt to its end', async () => {
    const s = await standin({ latency: slow });
    s.refuseSockets(60_000);
    const b = backend([s]);
    const res = await b.generate(request(), context());
    assert.equal(res.images.length, 1);
    assert.ok(s.requests.filter((r) => r.startsWith('GET /history/')).length >= 2);
  });

  test('a restarted worker resumes a finished prompt from its saved handle instead of running it again', async () => {
    const s = await standin({ latency: slow });
    const first = backend([s], { maxBatchSize: 4 });
    const blocker = first.generate(request({ prompt: 'warm up' }), context('w'));
    await until(() => s.executions.length === 1);
    const ctxs = ['a', 'b'].map((id) => context(id));
    const originals = await Promise.all([blocker, first.generate(request({ n: 1 }), ctxs[0]!), first.generate(request({ n: 2 }), ctxs[1]!)]);
    assert.equal(s.prompts.length, 2, 'the two jobs shared one prompt');

    // The worker died after the prompt ran but before the jobs were marked done: a new process,
    // the same saved handles.
    const again = backend([s], { maxBatchSize: 4 });
    const resumed = await Promise.all(ctxs.map((c, k) => again.generate(request({ n: k + 1 }), { ...context(`r${k}`), savedState: c.states[0] })));
    assert.equal(s.prompts.length, 2, 'nothing submitted again');
    for (const [k, r] of resumed.entries()) {
      assert.deepEqual(r.images.map((img) => Buffer.from(img.data)), originals[k + 1]!.images.map((img) => Buffer.from(img.data)));
      assert.equal(r.images[0]!.seed, originals[k + 1]!.images[0]!.seed);
      const md = r.providerMetadata as any;
      assert.equal(md.resumed, true);
      assert.equal(md.batch.size, 3);
      assert.ok(md.gpuMs > 0, 'GPU time is the run recorded in the host history');
    }
  });

  test('a prompt still running when the worker restarted is followed to its end, not submitted again', async () => {
    const s = await standin({ latency: slow });
    const first = backend([s]);
    const ctx = context('a');
    const original = first.generate(request(), ctx);
    await until(() => ctx.states.length === 1 && s.executions.length === 1);
    const again = backend([s]);
    const resumed = await again.generate(request(), { ...context('b'), savedState: ctx.states[0] });
    assert.equal(s.prompts.length, 1);
    assert.deepEqual(Buffer.from(resumed.images[0]!.data), Buffer.from((await original).images[0]!.data));
    // ComfyUI sends a prompt's messages only to the socket that queued it: the end is seen in /history.
    assert.equal((resumed.providerMetadata as any).resumed, true);
    assert.ok(s.requests.some((r) => r === `GET /history/${s.prompts[0]!.id}`));
  });

  test('a handle the host no longer knows (restarted host) is submitted afresh', async () => {
    const s = await standin();
    const b = backend([s]);
    const stale = { backend: 'comfyui', host: b.pool.hosts[0]!.name, promptId: 'gone-0000', seed: 7, batchIndex: 0, batchSize: 1 };
    const res = await b.generate(request(), { ...context(), savedState: stale });
    assert.equal(res.images.length, 1);
    assert.equal(s.prompts.length, 1);
    assert.notEqual((res.providerMetadata as any).resumed, true);
  });

  test('a host that dies mid-job: the job runs on the other host and completes once', async () => {
    const dying = await standin({ latency: { ...slow, msPerStep: 3200 } });
    const other = await standin({ latency: slow });
    const b = backend([dying, other], { maxBatchSize: 1 });
    await b.pool.probeAll();
    // Keep `other` busy so the job lands on `dying`.
    const busy = b.generate(request({ prompt: 'busy', steps: 5 }), context());
    await until(() => other.executions.length + dying.executions.length === 1);
    const victimHost = dying.executions.length ? other : dying;
    const ctx = context('victim');
    const p = b.generate(request({ prompt: 'victim', steps: 30 }), ctx);
    await until(() => victimHost.executions.some((e) => e.prompt === 'victim'), 5000, 'victim running');
    await victimHost.die();
    const res = await p;
    assert.equal(pngText(res.images[0]!.data).prompt, 'victim');
    const survivor = victimHost === dying ? other : dying;
    assert.equal(survivor.executions.filter((e) => e.prompt === 'victim' && e.outcome === 'success').length, 1);
    assert.equal(victimHost.executions.filter((e) => e.outcome === 'success' && e.prompt === 'victim').length, 0);
    await busy;
    const stats = b.pool.stats();
    assert.equal(stats.hosts.find((h) => h.url === victimHost.url)!.status, 'down');
    assert.equal(stats.hostRetries, 1);

    // It is probed until it returns, then rejoins and takes work again.
    await victimHost.revive();
    await until(() => b.pool.stats().hosts.find((h) => h.url === victimHost.url)!.status === 'up', 3000, 'rejoin');
    const h = await b.health();
    assert.match(h.message!, /2\/2 hosts up/);
  });

  test('5xx on submit moves the job to another host; health down when no host answers', async () => {
    const a = await standin();
    const c = await standin();
    const b = backend([a, c], { maxBatchSize: 1 });
    await b.pool.probeAll();
    a.failNext(1, 500, '/prompt');
    c.failNext(1, 500, '/prompt');
    const res = await b.generate(request(), context());
    assert.equal(res.images.length, 1);
    await a.die();
    await c.die();
    await until(async () => !(await b.health()).ok, 3000, 'health down');
    assert.match((await b.health()).message!, /0\/2 hosts up/);
  });

  test('img2img and inpaint: inputs go up through /upload/image and into LoadImage', async () => {
    const s = await standin();
    const b = backend([s]);
    const input = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 10, g: 20, b: 30 } } }).png().toBuffer();
    const mask = await sharp({ create: { width: 64, height: 48, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    const res = await b.generate(
      request({ kind: 'edit', size: undefined, inputImages: [{ data: input, mediaType: 'image/png' }], mask: { data: mask, mediaType: 'image/png' } }),
      context(),
    );
    assert.equal(res.images.length, 1);
    const g = s.prompts[0]!.prompt as any;
    assert.equal(g['11'].class_type, 'LoadImage');
    assert.match(g['11'].inputs.image, /^easel\/easel-[0-9a-f]+\.png$/);
    assert.equal(g['12'].class_type, 'VAEEncode');
    assert.deepEqual(g['15'], { class_type: 'SetLatentNoiseMask', inputs: { samples: ['12', 0], mask: ['14', 1] } });
    assert.equal(g['3'].inputs.denoise, 0.75);
    assert.equal(s.requests.filter((r) => r === 'POST /upload/image').length, 2);
    const m = pngText(res.images[0]!.data);
    assert.ok(m);
    assert.equal(s.executions[0]!.width, 64);
  });

  test('FLUX-style and SDXL templates', async () => {
    assert.equal(guessFamily('flux1-dev-fp8.safetensors'), 'flux');
    assert.equal(guessFamily('sd_xl_base_1.0.safetensors'), 'sdxl');
    assert.equal(guessFamily('v1-5-pruned-emaonly.safetensors'), 'sd15');
    const s = await standin();
    const b = backend([s]);
    await b.generate(request({ model: 'flux1-dev-fp8.safetensors', guidanceScale: 3 }), context());
    const g = s.prompts[0]!.prompt as any;
    assert.equal(g['5'].class_type, 'EmptySD3LatentImage');
    assert.deepEqual(g['10'].inputs, { conditioning: ['6', 0], guidance: 3 });
    assert.equal(g['3'].inputs.cfg, 1);
    assert.deepEqual(g['3'].inputs.positive, ['10', 0]);
    await b.generate(request({ model: 'sd_xl_base_1.0.safetensors', size: undefined, steps: undefined }), context());
    const x = s.prompts[1]!.prompt as any;
    assert.equal(x['5'].inputs.width, 1024);
    assert.equal(x['3'].inputs.sampler_name, 'dpmpp_2m');
    assert.equal(x['3'].inputs.steps, 25);
  });

  test('user workflow: file + mapping, exposed by name, batchable when seed and batch size are mapped', async () => {
    const s = await standin({ latency: slow });
    const dir = mkdtempSync(join(tmpdir(), 'easel-wf-'));
    const graph = buildTemplate({
      family: 'sd15', checkpoint: 'sd15.safetensors', prompt: 'PLACEHOLDER', negativePrompt: '', width: 512, height: 512, batchSize: 1, seed: 0,
      steps: 20, cfg: 7, sampler: 'euler', scheduler: 'normal', denoise: 1, filenamePrefix: 'mine',
    });
    const file = join(dir, 'wf.json');
    writeFileSync(file, JSON.stringify(graph));
    const b = backend([s], {
      workflows: [
        {
          name: 'my-style',
          file,
          inputs: { prompt: '6.text', seed: '3.seed', steps: '3.steps', width: '5.width', height: '5.height', batchSize: '5.batch_size' },
          set: { '7.text': 'watermark, text' },
          defaults: { steps: 4 },
        },
      ],
    });
    const blocker = b.generate(request({ prompt: 'first' }), context());
    await until(() => s.executions.length === 1);
    const rs = await Promise.all([b.generate(request({ model: 'my-style', steps: undefined }), context()), b.generate(request({ model: 'my-style', steps: undefined }), context())]);
    await blocker;
    const sent = s.prompts[1]!.prompt as any;
    assert.equal(sent['6'].inputs.text, 'a lighthouse at dusk');
    assert.equal(sent['7'].inputs.text, 'watermark, text');
    assert.equal(sent['3'].inputs.steps, 4);
    assert.equal(sent['5'].inputs.batch_size, 2, 'the two calls were batched');
    assert.equal(sent['9'].inputs.filename_prefix, 'mine');
    assert.deepEqual(rs.map((r) => pngText(r.images[0]!.data).index), [0, 1]);

    assert.throws(
      () => new ComfyUIBackend({ type: 'comfyui', name: 'x', hosts: [s.url], workflows: [{ name: 'bad', graph, inputs: { prompt: '6.txt' } }] }),
      /node "6" \(CLIPTextEncode\) has no input "txt"/,
    );
    assert.throws(
      () => new ComfyUIBackend({ type: 'comfyui', name: 'x', hosts: [s.url], workflows: [{ name: 'ui', graph: { nodes: [], links: [] } }] }),
      /UI workflow; export it from ComfyUI with "Save \(API\)"/,
    );
  });

  test('health reports free VRAM and checkpoints through the pool details', async () => {
    const s = await standin({ vramTotal: 8 * 1024 ** 3 });
    const b = backend([s]);
    const h = await b.health();
    assert.equal(h.ok, true);
    const host = (h.details as any).hosts[0];
    assert.equal(host.freeVramBytes, 8 * 1024 ** 3);
    assert.equal(b.pool.hosts[0]!.checkpoints!.includes('sd15.safetensors'), true);
  });

  test('images are painted per (prompt, seed, index), so a test can check whose they are', () => {
    assert.notDeepEqual(imageColor('a', 1, 0), imageColor('a', 1, 1));
  });

  test('hostile provider options never reach the host: checkpoint, batch, size, steps and prompt stay easel’s', async () => {
    const s = await standin();
    const b = backend([s]);
    const providerOptions = hostileOptions({
      checkpoint: 'hostile.safetensors',
      ckpt_name: 'hostile.safetensors',
      batch_size: 4,
      width: 2048,
      steps: 150,
      cfg: 30,
      sampler: 'dpmpp_2m',
    });
    const res = await b.generate(request({ seed: 5, providerOptions }), context());
    assert.equal(res.images.length, 1);
    const g = s.prompts[0]!.prompt as any;
    assert.equal(g['4'].inputs.ckpt_name, 'sd15.safetensors');
    assert.equal(g['6'].inputs.text, 'a lighthouse at dusk');
    assert.deepEqual([g['5'].inputs.width, g['5'].inputs.height, g['5'].inputs.batch_size], [64, 64, 1]);
    assert.deepEqual([g['3'].inputs.steps, g['3'].inputs.cfg, g['3'].inputs.seed], [10, 7, 5]);
    assert.equal(g['3'].inputs.sampler_name, 'dpmpp_2m', 'a declared option still goes through');
    assert.doesNotMatch(JSON.stringify(g), HOSTILE);
    assertWarnsAbout(res.warnings, ['n', 'model', 'size', 'prompt', 'image', 'input.prompt', '__proto__', 'checkpoint', 'ckpt_name', 'batch_size', 'width', 'steps', 'cfg']);
  });

  test('specs: a checkpoint takes every kind of job on the latent grid; a workflow takes what its mapping and declared options say', async () => {
    const { capabilityProblem, completeSpec, providerOptionsProblem, requestProblem } = await import('../../src/backends/model-spec.ts');
    const s = await standin();
    const graph = buildTemplate({
      family: 'sd15', checkpoint: 'sd15.safetensors', prompt: 'x', negativePrompt: '', width: 64, height: 64, batchSize: 1, seed: 1,
      steps: 5, cfg: 7, sampler: 'euler', scheduler: 'normal', denoise: 1, filenamePrefix: 'wf',
    });
    const b = backend([s], {
      workflows: [
        { name: 'plain', graph, inputs: { prompt: '6.text' } },
        { name: 'tuned', graph, inputs: { prompt: '6.text', sampler: '3.sampler_name', width: '5.width', height: '5.height' }, options: { denoise_level: { to: '3.denoise', type: 'number', min: 0, max: 1 } } },
      ],
    });
    const ckpt = completeSpec(b.modelSpec('sd15.safetensors'), 'sd15.safetensors');
    assert.deepEqual(ckpt.capabilities, { generate: true, edit: true, mask: true, variation: true, maxInputImages: 1 });
    assert.equal(requestProblem('c', ckpt, { prompt: 'x', size: { width: 100, height: 64 } }, 'generation')?.param, 'size');
    assert.equal(providerOptionsProblem('c', ckpt, { sampler_name: 'euler', scheduler: 'karras', denoise: 0.5, batch_index: 2 }), undefined);
    assert.equal(providerOptionsProblem('c', ckpt, { checkpoint: 'x' })?.code, 'provider_option_not_allowed');
    assert.equal(completeSpec(b.modelSpec('flux1-dev.safetensors'), 'flux1-dev.safetensors').textInImage, true);

    const plain = completeSpec(b.modelSpec('plain'), 'plain');
    assert.equal(capabilityProblem('plain', plain, { kind: 'edit', inputImages: 1, mask: false })?.code, 'unsupported_capability');
    assert.equal(plain.maxImagesPerCall, 1, 'no batch-size input: one image per call');
    assert.equal(plain.sizes, undefined);
    assert.equal(providerOptionsProblem('plain', plain, { sampler_name: 'euler' })?.code, 'unknown_parameter');
    const tuned = completeSpec(b.modelSpec('tuned'), 'tuned');
    assert.equal(providerOptionsProblem('tuned', tuned, { sampler_name: 'euler', denoise_level: 0.4 }), undefined);
    assert.equal(providerOptionsProblem('tuned', tuned, { denoise_level: 4 })?.code, 'invalid_value');

    await b.generate(request({ model: 'tuned', providerOptions: { denoise_level: 0.4, sampler_name: 'heun' } }), context());
    const g = s.prompts[0]!.prompt as any;
    assert.equal(g['3'].inputs.denoise, 0.4);
    assert.equal(g['3'].inputs.sampler_name, 'heun');
    assert.throws(
      () => new ComfyUIBackend({ type: 'comfyui', name: 'x', hosts: [s.url], workflows: [{ name: 'bad', graph, inputs: { prompt: '6.text' }, options: { steps: { to: '3.steps', type: 'integer' } } }] }),
      /steps/,
    );
  });
});
