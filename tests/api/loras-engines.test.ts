/**
 * LoRAs and the engine presets through easel's HTTP API, against loopback stand-ins of vLLM-Omni,
 * SGLang Diffusion, LocalAI, stable-diffusion.cpp's sd-server and ComfyUI: `GET /v1/models` lists
 * each model's LoRAs, a request's LoRAs reach the engine under its own names (JSON, multipart JSON
 * text, the openai SDK's bracketed fields, a batch), are shown on the job and the image, refused
 * before any work when unknown, looked for again on a miss; the exact-cache key tells LoRA sets
 * apart; readiness says when GPU backends are warming.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';
import { startEasel, standinBackendConfig, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { startEngineStandin } from '../support/engine-standins.ts';
import type { EngineStandin } from '../support/engine-standins.ts';
import { startComfyUIStandin } from '../support/comfyui-standin.ts';
import type { ComfyUIStandin } from '../support/comfyui-standin.ts';
import { cacheKeys } from '../../src/cache/image-cache.ts';
import type { ImageRequest } from '../../src/core/image-request.ts';
import { makePng } from '../support/png.ts';
import { until } from '../support/until.ts';

let easel: TestEasel;
let openai: OpenAIStandin;
let vllm: EngineStandin;
let sglang: EngineStandin;
let localai: EngineStandin;
let sdcpp: EngineStandin;
let comfy: ComfyUIStandin;

before(async () => {
  openai = await startOpenAIStandin({ strict: false });
  vllm = await startEngineStandin('vllm-omni', { model: 'Qwen/Qwen-Image', loras: ['/srv/loras/ghibli'] });
  sglang = await startEngineStandin('sglang');
  localai = await startEngineStandin('localai');
  sdcpp = await startEngineStandin('sdcpp', { loraDir: '/models/loras', loras: ['style.safetensors'] });
  comfy = await startComfyUIStandin({ loras: ['style.safetensors', 'chars/hero.safetensors'] });
  const base = standinBackendConfig(openai);
  easel = await startEasel({
    existingStandin: openai,
    overrides: {
      backends: [
        ...base.backends,
        { type: 'openai', name: 'vllm', preset: 'vllm-omni', baseUrl: `${vllm.url}/v1`, maxRetries: 0 },
        { type: 'openai', name: 'sglang', preset: 'sglang', baseUrl: `${sglang.url}/v1`, maxRetries: 0 },
        { type: 'openai', name: 'localai', preset: 'localai', baseUrl: `${localai.url}/v1`, maxRetries: 0 },
        { type: 'openai', name: 'sdcpp', preset: 'sdcpp', baseUrl: `${sdcpp.url}/v1`, loraDir: '/models/loras', loraRefreshSeconds: 0.1, maxRetries: 0 },
        { type: 'comfyui', name: 'comfy', hosts: [comfy.url], healthIntervalSeconds: 0.1, loraRefreshSeconds: 0.1, queueAheadPerHost: 0, maxBatchSize: 1 },
      ],
      models: [
        ...base.models,
        { name: 'qwen', backend: 'vllm', model: 'Qwen/Qwen-Image', loras: [{ name: 'ghibli', ref: '/srv/loras/ghibli' }] },
        { name: 'sglang-flux', backend: 'sglang', model: 'black-forest-labs/FLUX.1-dev' },
        { name: 'localai-sd', backend: 'localai', model: 'stablediffusion' },
        { name: 'sdcpp', backend: 'sdcpp', model: 'sd-cpp-local' },
        { name: 'comfy-sd15', backend: 'comfy', model: 'sd15.safetensors' },
        // An allowlist that renames a file the hosts have, and leaves the rest out.
        { name: 'comfy-curated', backend: 'comfy', model: 'sd15.safetensors', loras: [{ name: 'hero', ref: 'chars/hero.safetensors' }] },
      ],
    },
  });
});
after(async () => {
  await easel?.close();
  for (const s of [openai, vllm, sglang, localai, sdcpp, comfy]) await s?.close();
});

const post = (path: string, json: unknown) => easel.api(path, { method: 'POST', json });
const models = async () => ((await (await easel.api('/v1/models')).json()) as any).data as Array<{ id: string; loras?: string[] }>;

describe('GET /v1/models', () => {
  test('lists each model’s LoRAs: configured, discovered, allowlisted; none where a model takes none', async () => {
    await until('the hosts’ LoRA lists', async () => {
      const list = await models();
      return list.find((m) => m.id === 'comfy-sd15')?.loras?.length === 2 && list.find((m) => m.id === 'sdcpp')?.loras?.length === 1;
    });
    const byId = Object.fromEntries((await models()).map((m) => [m.id, m.loras]));
    assert.deepEqual(byId.qwen, ['ghibli']);
    assert.deepEqual(byId['comfy-sd15'], ['chars/hero', 'style']);
    assert.deepEqual(byId['comfy-curated'], ['hero']);
    assert.deepEqual(byId.sdcpp, ['style']);
    assert.equal(byId['dall-e-2'], undefined);
    assert.equal(byId['localai-sd'], undefined);
    assert.equal(byId['sglang-flux'], undefined);
    const one = (await (await easel.api('/v1/models/qwen')).json()) as any;
    assert.deepEqual(one.loras, ['ghibli']);
  });
});

describe('a request’s LoRAs, door to engine', () => {
  test('vLLM-Omni: the LoRA reaches the engine as {name, path, scale}; the job and the image show it', async () => {
    const res = await post('/v1/images/generations', { model: 'qwen', prompt: 'a harbour', size: '512x512', steps: 20, seed: 4, negative_prompt: 'fog', loras: [{ name: 'ghibli', weight: 0.7 }] });
    assert.equal(res.status, 200, await res.clone().text());
    const call = vllm.generations.at(-1)!;
    assert.deepEqual(call.body.lora, { name: 'ghibli', path: '/srv/loras/ghibli', scale: 0.7 });
    assert.equal(call.body.num_inference_steps, 20);
    assert.equal(call.body.negative_prompt, 'fog');
    const jobs = (await (await easel.api('/v1/images/jobs?limit=1')).json()) as any;
    assert.deepEqual(jobs.data[0].request.loras, [{ name: 'ghibli', weight: 0.7 }]);
    const images = (await (await easel.api('/v1/images?limit=1')).json()) as any;
    assert.deepEqual(images.data[0].request.loras, [{ name: 'ghibli', weight: 0.7 }]);
  });

  test('ComfyUI: the template chains the LoRAs asked, the allowlist’s name mapped to its file', async () => {
    const before = comfy.prompts.length;
    const res = await post('/v1/images/generations', { model: 'comfy-curated', prompt: 'a knight', size: '64x64', loras: [{ name: 'hero' }] });
    assert.equal(res.status, 200, await res.clone().text());
    const g = comfy.prompts[before]!.prompt as any;
    assert.equal(g['20'].class_type, 'LoraLoader');
    assert.equal(g['20'].inputs.lora_name, 'chars/hero.safetensors');
    assert.equal(g['20'].inputs.strength_model, 1);
    const refused = await post('/v1/images/generations', { model: 'comfy-curated', prompt: 'a knight', size: '64x64', loras: [{ name: 'style' }] });
    assert.equal(refused.status, 400, 'a file the hosts have but the allowlist leaves out');
    assert.equal(((await refused.json()) as any).error.param, 'loras[0].name');
    assert.equal(comfy.prompts.length, before + 1);
  });

  test('sd-server: unknown LoRA → 400 before any work; a file copied there since is found on the miss', async () => {
    const before = sdcpp.generations.length;
    const res = await post('/v1/images/generations', { model: 'sdcpp', prompt: 'a fox', size: '512x512', loras: [{ name: 'late' }] });
    assert.equal(res.status, 400);
    const err = ((await res.json()) as any).error;
    assert.equal(err.param, 'loras[0].name');
    assert.equal(err.code, 'unknown_lora');
    assert.equal(sdcpp.generations.length, before, 'the engine received nothing');
    sdcpp.loras.push('late.safetensors');
    await new Promise((r) => setTimeout(r, 150));
    const again = await post('/v1/images/generations', { model: 'sdcpp', prompt: 'a fox', size: '512x512', steps: 12, loras: [{ name: 'late', weight: 0.5 }] });
    assert.equal(again.status, 200, await again.clone().text());
    assert.deepEqual(sdcpp.generations.at(-1)!.parsed!.loras, [{ path: '/models/loras/late.safetensors', weight: 0.5 }]);
    assert.equal(sdcpp.generations.at(-1)!.parsed!.steps, 12);
  });

  test('edits: loras as JSON text, and as the openai SDK sends an array of objects (loras[][name], loras[][weight])', async () => {
    const png = await makePng(64, 64);
    const form = new FormData();
    form.append('image', new File([new Uint8Array(png)], 'in.png', { type: 'image/png' }));
    form.append('prompt', 'ink it');
    form.append('model', 'sdcpp');
    form.append('loras', JSON.stringify([{ name: 'style', weight: 0.25 }]));
    const res = await easel.api('/v1/images/edits', { method: 'POST', body: form });
    assert.equal(res.status, 200, await res.clone().text());
    assert.deepEqual(sdcpp.generations.at(-1)!.parsed!.loras, [{ path: '/models/loras/style.safetensors', weight: 0.25 }]);

    const client = new OpenAI({ apiKey: easel.adminKey, baseURL: `${easel.url}/v1`, maxRetries: 0 });
    await client.images.edit({ image: await toFile(png, 'in.png', { type: 'image/png' }), prompt: 'ink it again', model: 'sdcpp', loras: [{ name: 'style', weight: 0.5 }, { name: 'late' }] } as any);
    const call = sdcpp.generations.at(-1)!;
    assert.equal(call.path, '/v1/images/edits');
    assert.deepEqual(call.parsed!.loras, [
      { path: '/models/loras/style.safetensors', weight: 0.5 },
      { path: '/models/loras/late.safetensors', weight: 1 },
    ]);
  });

  test('a batch request’s LoRAs reach the engine', async () => {
    const res = await post('/v1/images/batches', { requests: [{ model: 'qwen', prompt: 'a batch harbour', size: '512x512', loras: [{ name: 'ghibli', weight: 1.5 }] }] });
    assert.equal(res.status, 201, await res.clone().text());
    const id = ((await res.json()) as any).id;
    await until('the batch to complete', async () => ((await (await easel.api(`/v1/images/batches/${id}`)).json()) as any).status === 'completed');
    assert.deepEqual(vllm.generations.find((c) => c.body.prompt === 'a batch harbour')!.body.lora, { name: 'ghibli', path: '/srv/loras/ghibli', scale: 1.5 });
  });

  test('request bounds: weight −4..4, at most 8, a name; a model that takes none names itself; the engine’s own limit (vLLM-Omni: one)', async () => {
    const bad = async (body: unknown, param: string, message?: RegExp) => {
      const res = await post('/v1/images/generations', body);
      assert.equal(res.status, 400);
      const err = ((await res.json()) as any).error;
      assert.equal(err.param, param, JSON.stringify(err));
      if (message) assert.match(err.message, message);
    };
    await bad({ model: 'qwen', prompt: 'x', loras: [{ name: 'ghibli', weight: 5 }] }, 'loras[0].weight');
    await bad({ model: 'qwen', prompt: 'x', loras: [{ name: '' }] }, 'loras[0].name');
    await bad({ model: 'qwen', prompt: 'x', loras: Array.from({ length: 9 }, (_, i) => ({ name: `l${i}` })) }, 'loras');
    await bad({ model: 'qwen', prompt: 'x', loras: [{ name: 'ghibli', scale: 1 }] }, 'loras[0].scale');
    await bad({ model: 'qwen', prompt: 'x', loras: [{ name: 'ghibli' }, { name: 'ghibli' }] }, 'loras', /at most 1 LoRA adapter per request/);
    await bad({ model: 'localai-sd', prompt: 'x', loras: [{ name: 'ghibli' }] }, 'loras', /Model 'localai-sd' takes no LoRA adapters/);
    await bad({ model: 'sglang-flux', prompt: 'x', loras: [{ name: 'ghibli' }] }, 'loras', /Model 'sglang-flux' takes no LoRA adapters/);
  });
});

describe('engines through the API', () => {
  test('SGLang: width/height and b64_json; LocalAI: step and prompt|negative; both costed by GPU time', async () => {
    const a = await post('/v1/images/generations', { model: 'sglang-flux', prompt: 'a lake', size: '768x512', steps: 30, guidance_scale: 3.5, seed: 2 });
    assert.equal(a.status, 200, await a.clone().text());
    const s = sglang.generations.at(-1)!;
    assert.equal(s.body.response_format, 'b64_json');
    assert.deepEqual([s.body.width, s.body.height, s.body.num_inference_steps, s.body.guidance_scale, s.body.seed], [768, 512, 30, 3.5, 2]);
    const b = await post('/v1/images/generations', { model: 'localai-sd', prompt: 'a lake', size: '512x512', steps: 10, negative_prompt: 'people', async: true });
    assert.equal(b.status, 202);
    const job = await waitForJob(easel, ((await b.json()) as any).id);
    assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
    const l = localai.generations.at(-1)!;
    assert.equal(l.body.prompt, 'a lake|people');
    assert.equal(l.body.step, 10);
    const resolved = easel.runtime.backends.resolve('localai-sd')!;
    assert.equal(resolved.spec.pricing, 'gpu-time');
  });
});

describe('the exact-cache key', () => {
  test('differs by LoRA set and weight; the same set gives the same key', () => {
    const base: ImageRequest = { prompt: 'a fox', n: 1, responseFormat: 'url', outputFormat: 'png' };
    const key = (loras?: ImageRequest['loras']) => cacheKeys('m', { ...base, ...(loras ? { loras } : {}) }).cacheKey;
    const none = key();
    const a = key([{ name: 'style', weight: 1 }]);
    assert.notEqual(none, a);
    assert.notEqual(a, key([{ name: 'style', weight: 0.5 }]));
    assert.notEqual(a, key([{ name: 'other', weight: 1 }]));
    assert.notEqual(key([{ name: 'a', weight: 1 }, { name: 'b', weight: 1 }]), key([{ name: 'b', weight: 1 }, { name: 'a', weight: 1 }]), 'stacking order counts');
    assert.equal(a, key([{ name: 'style', weight: 1 }]));
    assert.equal(none, key([]), 'an empty list is no LoRAs');
  });
});

describe('warm-up and readiness', () => {
  test('/ready says the GPU backends are warming up until the engine’s first generation ends; /v1/system shows it', async () => {
    const slow = await startEngineStandin('sglang', { latencyMs: 1500 });
    const e = await startEasel({
      overrides: {
        backends: [{ type: 'openai', name: 'gpu', preset: 'sglang', baseUrl: `${slow.url}/v1`, maxRetries: 0, warmup: { prompt: 'warm', width: 256, height: 256 } }],
        models: [{ name: 'flux', backend: 'gpu', model: 'flux', default: true }],
      },
    });
    try {
      const ready = await e.api('/ready');
      const body = (await ready.json()) as any;
      assert.equal(ready.status, 503, JSON.stringify(body));
      assert.deepEqual(body.checks.backends, { ok: false, message: 'the GPU backends are warming up' });
      const system = (await (await e.api('/v1/system')).json()) as any;
      assert.equal(system.backends[0].warming, true);
      await until('the warm-up to end', async () => (await e.api('/ready')).status === 200, 10_000);
      assert.equal(slow.generations[0]!.parsed!.prompt, 'warm');
    } finally {
      await e.close();
      await slow.close();
    }
  });
});
