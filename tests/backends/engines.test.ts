/**
 * The `openai` backend's engine presets against loopback stand-ins of vLLM-Omni, SGLang Diffusion,
 * LocalAI and stable-diffusion.cpp's sd-server (PROTOCOLS.md §11): each engine receives easel's
 * fields under its own names, LoRAs where it takes them, is asked for its health on its own route,
 * and is costed by measured GPU time; warm-up holds readiness until its first generation ends.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { OpenAIBackend } from '../../src/backends/openai/openai-backend.ts';
import type { OpenAIBackendConfigInput } from '../../src/backends/openai/options.ts';
import type { BackendCallContext, BackendRequest } from '../../src/backends/image-backend.ts';
import { completeSpec, loraProblem } from '../../src/backends/model-spec.ts';
import { startEngineStandin } from '../support/engine-standins.ts';
import type { EngineKind, EngineStandin, EngineStandinOptions } from '../support/engine-standins.ts';
import { makePng } from '../support/png.ts';

const open: Array<{ close(): Promise<void> }> = [];
after(async () => {
  for (const o of open.reverse()) await o.close().catch(() => {});
});

async function engine(kind: EngineKind, opts: EngineStandinOptions = {}): Promise<EngineStandin> {
  const s = await startEngineStandin(kind, opts);
  open.push(s);
  return s;
}

function backend(s: EngineStandin, config: Partial<OpenAIBackendConfigInput> = {}): OpenAIBackend {
  return new OpenAIBackend({ type: 'openai', name: s.kind, baseUrl: `${s.url}/v1`, preset: s.kind, maxRetries: 0, ...config } as OpenAIBackendConfigInput, { healthCacheMs: 0 });
}

function request(overrides: Partial<BackendRequest> = {}): BackendRequest {
  return { kind: 'generation', model: '', prompt: 'a red fox', n: 1, size: { width: 512, height: 384 }, outputFormat: 'png', inputImages: [], providerOptions: {}, ...overrides };
}

function ctx(): BackendCallContext {
  return { jobId: 'job_engine', signal: new AbortController().signal, reportProgress: () => {}, savedState: undefined, saveState: async () => {} };
}

const full = { negativePrompt: 'blurry', steps: 28, guidanceScale: 4.5, seed: 7 };

describe('vLLM-Omni preset', () => {
  test('negative_prompt, num_inference_steps, guidance_scale, seed and b64_json; one LoRA as {name, path, scale}; costed by GPU time', async () => {
    const s = await engine('vllm-omni', { model: 'Qwen/Qwen-Image', loras: ['/srv/loras/ghibli'] });
    const b = backend(s);
    const spec = completeSpec(b.modelSpec('Qwen/Qwen-Image'), 'qwen', { loras: [{ name: 'ghibli', ref: '/srv/loras/ghibli' }] });
    assert.equal(spec.pricing, 'gpu-time');
    assert.deepEqual(spec.loras, { source: 'configured', max: 1, available: [{ name: 'ghibli', ref: '/srv/loras/ghibli' }] });
    assert.equal(loraProblem('qwen', spec, [{ name: 'ghibli', weight: 1 }, { name: 'other', weight: 1 }])?.param, 'loras', 'one per request');
    const res = await b.generate(request({ model: 'Qwen/Qwen-Image', ...full, loras: [{ name: 'ghibli', ref: '/srv/loras/ghibli', weight: 0.8 }] }), ctx());
    assert.equal(res.images.length, 1);
    const [call] = s.generations;
    assert.equal(call!.status, 200);
    assert.deepEqual(
      { ...call!.body, prompt: undefined },
      { prompt: undefined, model: 'Qwen/Qwen-Image', n: 1, size: '512x384', output_format: 'png', response_format: 'b64_json', negative_prompt: 'blurry', num_inference_steps: 28, guidance_scale: 4.5, seed: 7, lora: { name: 'ghibli', path: '/srv/loras/ghibli', scale: 0.8 } },
    );
    assert.deepEqual(call!.parsed!.loras, [{ path: '/srv/loras/ghibli', weight: 0.8 }]);
  });

  test('edits: multipart with the LoRA as a JSON string; steps past its 200 are clamped with a warning', async () => {
    const s = await engine('vllm-omni', { loras: ['/srv/loras/ink'] });
    const b = backend(s);
    assert.equal(b.capabilities.mask, false, 'its mask field is mask_image, which OpenAI multipart does not send');
    assert.equal(b.capabilities.variation, false);
    const image = { data: await makePng(64, 64), mediaType: 'image/png' };
    const res = await b.generate(request({ kind: 'edit', inputImages: [image], steps: 300, loras: [{ name: 'ink', ref: '/srv/loras/ink', weight: 1 }] }), ctx());
    const [call] = s.generations;
    assert.equal(call!.path, '/v1/images/edits');
    assert.equal(call!.status, 200);
    assert.deepEqual(JSON.parse(call!.body.lora), { name: 'ink', path: '/srv/loras/ink', scale: 1 });
    assert.equal(call!.body.num_inference_steps, '200');
    assert.ok(res.warnings.some((w) => w.setting === 'steps' && /outside vLLM-Omni's 1–200/.test(w.detail)));
  });

  test('health is GET /health on the server’s origin; 503 there is unhealthy', async () => {
    const s = await engine('vllm-omni');
    const b = backend(s);
    assert.equal((await b.health()).ok, true);
    s.unhealthy = true;
    assert.equal((await b.health()).ok, false);
    assert.ok(s.calls.every((c) => c.path !== '/v1/models'));
    assert.equal(s.calls.filter((c) => c.path === '/health').length, 2);
  });
});

describe('SGLang Diffusion preset', () => {
  test('width/height besides size, response_format b64_json always, the sampling fields by their names; no LoRAs', async () => {
    const s = await engine('sglang');
    const b = backend(s);
    assert.equal(b.modelSpec('sglang-diffusion').loras, undefined, 'set_lora is server state: no per-request LoRA');
    await b.generate(request({ ...full, n: 2 }), ctx());
    const [call] = s.generations;
    assert.equal(call!.status, 200, JSON.stringify(call!.body));
    assert.equal(call!.body.response_format, 'b64_json');
    assert.equal(call!.body.width, 512);
    assert.equal(call!.body.height, 384);
    assert.deepEqual(call!.parsed, { prompt: 'a red fox', negative: 'blurry', steps: 28, cfg: 4.5, seed: 7, width: 512, height: 384, loras: [] });
    assert.ok(!s.calls.some((c) => c.path === '/v1/set_lora'));
  });

  test('edits with a mask; health on /health', async () => {
    const s = await engine('sglang');
    const b = backend(s);
    const png = await makePng(64, 64);
    await b.generate(request({ kind: 'edit', inputImages: [{ data: png, mediaType: 'image/png' }], mask: { data: png, mediaType: 'image/png' }, seed: 3 }), ctx());
    const [call] = s.generations;
    assert.equal(call!.path, '/v1/images/edits');
    assert.deepEqual(call!.files.sort(), ['image', 'mask']);
    assert.equal(call!.body.seed, '3');
    assert.equal((await b.health()).ok, true);
    assert.ok(s.calls.some((c) => c.path === '/health'));
  });
});

describe('LocalAI preset', () => {
  test('step, the negative prompt after |, seed, b64_json; guidance said to be the YAML’s; no edits, no variations, no LoRAs', async () => {
    const s = await engine('localai');
    const b = backend(s);
    assert.equal(b.capabilities.edit, false);
    assert.equal(b.capabilities.variation, false);
    assert.equal(b.modelSpec('stablediffusion').loras, undefined);
    const res = await b.generate(request({ model: 'stablediffusion', ...full, quality: 'high' }), ctx());
    const [call] = s.generations;
    assert.equal(call!.body.prompt, 'a red fox|blurry');
    assert.equal(call!.body.step, 28);
    assert.equal(call!.body.steps, undefined);
    assert.equal(call!.body.quality, undefined, 'a numeric quality would be read as steps: never sent');
    assert.equal(call!.body.response_format, 'b64_json');
    assert.deepEqual(call!.parsed, { prompt: 'a red fox', negative: 'blurry', steps: 28, seed: 7, width: 512, height: 384, loras: [] });
    assert.ok(res.warnings.some((w) => w.setting === 'guidance_scale'));
    assert.ok(res.warnings.some((w) => w.setting === 'quality'));
  });

  test('health is /readyz: 503 while it preloads', async () => {
    const s = await engine('localai');
    const b = backend(s);
    s.unhealthy = true;
    assert.equal((await b.health()).ok, false);
    s.unhealthy = false;
    assert.equal((await b.health()).ok, true);
    assert.equal(s.calls.filter((c) => c.path === '/readyz').length, 2);
  });
});

describe('stable-diffusion.cpp sd-server preset', () => {
  test('<sd_cpp_extra_args> carries negative prompt, seed, steps, cfg and the LoRAs (paths under loraDir), discovered at /sdapi/v1/loras', async () => {
    const s = await engine('sdcpp', { loraDir: '/models/loras', loras: ['style.safetensors', 'chars/hero.safetensors'] });
    const b = backend(s, { loraDir: '/models/loras' });
    await b.refreshLoras();
    const spec = b.modelSpec('sd-cpp-local');
    assert.deepEqual(spec.loras, { source: 'discovered', available: [{ name: 'style', ref: '/models/loras/style.safetensors' }, { name: 'hero', ref: '/models/loras/chars/hero.safetensors' }] });
    await b.generate(request({ ...full, loras: [{ name: 'hero', ref: '/models/loras/chars/hero.safetensors', weight: 0.7 }] }), ctx());
    const [call] = s.generations;
    assert.equal(call!.status, 200, JSON.stringify(call!.body));
    assert.deepEqual(Object.keys(call!.body).sort(), ['n', 'output_format', 'prompt', 'size']);
    assert.deepEqual(call!.parsed, { prompt: 'a red fox', negative: 'blurry', steps: 28, cfg: 4.5, seed: 7, width: 512, height: 384, loras: [{ path: '/models/loras/chars/hero.safetensors', weight: 0.7 }] });
  });

  test('without loraDir only models[].loras entries are offered; health is /v1/models', async () => {
    const s = await engine('sdcpp');
    const b = backend(s);
    assert.deepEqual(b.modelSpec('x').loras, { source: 'configured', available: [] });
    await b.generate(request(), ctx());
    assert.equal(s.generations[0]!.body.prompt, 'a red fox', 'nothing to add: the prompt goes as is');
    assert.equal((await b.health()).ok, true);
    assert.ok(s.calls.some((c) => c.path === '/v1/models'));
  });
});

describe('engine warm-up', () => {
  test('the first healthy answer starts one small generation; until it ends the backend is warming, not ready', async () => {
    const s = await engine('sglang', { latencyMs: 300 });
    const b = backend(s, { warmup: { prompt: 'warm', steps: 2, width: 256, height: 256 } });
    const first = await b.health();
    assert.equal(first.ok, false);
    assert.equal(first.warming, true);
    assert.match(first.message!, /SGLang Diffusion is warming up/);
    const deadline = Date.now() + 5000;
    while (!(await b.health()).ok) {
      assert.ok(Date.now() < deadline, 'warm-up ended');
      await new Promise((r) => setTimeout(r, 20));
    }
    const warm = s.generations[0]!;
    assert.deepEqual({ prompt: warm.parsed!.prompt, steps: warm.parsed!.steps, width: warm.parsed!.width }, { prompt: 'warm', steps: 2, width: 256 });
    assert.equal(s.generations.length, 1, 'once');
  });
});
