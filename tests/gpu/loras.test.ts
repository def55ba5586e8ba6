/**
 * LoRAs on the GPU backends against their stand-ins: discovery (ComfyUI's LoraLoader combo in both
 * forms, `/models/loras`; A1111's `/sdapi/v1/loras`), what each host receives (the LoraLoader chain
 * of PROTOCOLS.md §11 B1, `<lora:NAME:W>` tags), a second look on a miss, and warm-up.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ComfyUIBackend } from '../../src/backends/comfyui/comfyui-backend.ts';
import type { ComfyUIBackendConfigInput } from '../../src/backends/comfyui/options.ts';
import { A1111Backend, withLoraTags } from '../../src/backends/a1111/a1111-backend.ts';
import type { A1111BackendConfigInput } from '../../src/backends/a1111/options.ts';
import { buildTemplate } from '../../src/backends/comfyui/templates.ts';
import type { ResolvedLora } from '../../src/backends/model-spec.ts';
import { startComfyUIStandin } from '../support/comfyui-standin.ts';
import type { ComfyStandinOptions, ComfyUIStandin } from '../support/comfyui-standin.ts';
import { startA1111Standin } from '../support/a1111-standin.ts';
import type { A1111StandinOptions, A1111Standin } from '../support/a1111-standin.ts';
import { context, rejection, request, until } from './helpers.ts';

const open: Array<{ close(): Promise<void> }> = [];
after(async () => {
  for (const o of open.reverse()) await o.close().catch(() => {});
});

async function comfy(opts: ComfyStandinOptions = {}): Promise<ComfyUIStandin> {
  const s = await startComfyUIStandin({ loras: ['style.safetensors', 'chars/hero.safetensors', 'flux-ink.safetensors'], ...opts });
  open.push(s);
  return s;
}

function comfyBackend(hosts: ComfyUIStandin[], config: Partial<ComfyUIBackendConfigInput> = {}): ComfyUIBackend {
  const b = new ComfyUIBackend({ type: 'comfyui', name: 'comfy', hosts: hosts.map((h) => h.url), healthIntervalSeconds: 0.05, reconnectDelayMs: 20, historyPollMs: 20, queueAheadPerHost: 0, ...config });
  open.push(b);
  return b;
}

async function a1111(opts: A1111StandinOptions = {}): Promise<A1111Standin> {
  const s = await startA1111Standin({ loras: ['add_detail', 'pixel-art'], ...opts });
  open.push(s);
  return s;
}

function a1111Backend(hosts: A1111Standin[], config: Partial<A1111BackendConfigInput> = {}): A1111Backend {
  const b = new A1111Backend({ type: 'a1111', name: 'webui', hosts: hosts.map((h) => h.url), healthIntervalSeconds: 0.05, progressPollMs: 20, ...config });
  open.push(b);
  return b;
}

const lora = (name: string, ref: string, weight = 1): ResolvedLora => ({ name, ref, weight });

describe('ComfyUI LoRAs', () => {
  for (const comboV3 of [false, true]) {
    test(`discovered from /object_info/LoraLoader (${comboV3 ? '["COMBO", {options}]' : '[[…], {}]'} form), offered without the extension`, async () => {
      const s = await comfy({ comboV3 });
      const b = comfyBackend([s]);
      assert.deepEqual(b.modelSpec('sd15.safetensors').loras?.available, [], 'nothing known before the hosts answered');
      await b.refreshLoras();
      assert.deepEqual(b.modelSpec('sd15.safetensors').loras, {
        source: 'discovered',
        available: [
          { name: 'chars/hero', ref: 'chars/hero.safetensors' },
          { name: 'flux-ink', ref: 'flux-ink.safetensors' },
          { name: 'style', ref: 'style.safetensors' },
        ],
      });
      assert.ok(s.requests.includes('GET /object_info/LoraLoader'));
    });
  }

  test('the template chains one LoraLoader per LoRA: the sampler and both text encoders read the last, the VAE stays the checkpoint’s', async () => {
    const s = await comfy();
    const b = comfyBackend([s]);
    await b.generate(request({ negativePrompt: 'blurry', loras: [lora('style', 'style.safetensors', 0.8), lora('chars/hero', 'chars/hero.safetensors', 1)] }), context());
    const g = s.prompts[0]!.prompt as any;
    assert.deepEqual(g['20'], { class_type: 'LoraLoader', inputs: { model: ['4', 0], clip: ['4', 1], lora_name: 'style.safetensors', strength_model: 0.8, strength_clip: 0.8 } });
    assert.deepEqual(g['21'], { class_type: 'LoraLoader', inputs: { model: ['20', 0], clip: ['20', 1], lora_name: 'chars/hero.safetensors', strength_model: 1, strength_clip: 1 } });
    assert.deepEqual(g['3'].inputs.model, ['21', 0]);
    assert.deepEqual(g['6'].inputs.clip, ['21', 1]);
    assert.deepEqual(g['7'].inputs.clip, ['21', 1]);
    assert.deepEqual(g['8'].inputs.vae, ['4', 2]);
    assert.deepEqual(s.executions[0]!.loras, [{ name: 'style.safetensors', strength: 0.8 }, { name: 'chars/hero.safetensors', strength: 1 }]);
  });

  test('FLUX graphs patch the model only (LoraLoaderModelOnly); CLIP stays the checkpoint’s', () => {
    const g = buildTemplate({
      family: 'flux', checkpoint: 'flux1-dev-fp8.safetensors', prompt: 'x', negativePrompt: '', width: 64, height: 64, batchSize: 1, seed: 1,
      steps: 4, cfg: 3.5, sampler: 'euler', scheduler: 'simple', denoise: 1, filenamePrefix: 'f', loras: [{ ref: 'flux-ink.safetensors', weight: 0.6 }],
    }) as any;
    assert.deepEqual(g['20'], { class_type: 'LoraLoaderModelOnly', inputs: { model: ['4', 0], lora_name: 'flux-ink.safetensors', strength_model: 0.6 } });
    assert.deepEqual(g['3'].inputs.model, ['20', 0]);
    assert.deepEqual(g['6'].inputs.clip, ['4', 1]);
  });

  test('a workflow fills its declared LoRA slots in order; slots left over get weight 0; without slots it takes none', async () => {
    const s = await comfy();
    const graph = buildTemplate({
      family: 'sd15', checkpoint: 'sd15.safetensors', prompt: 'x', negativePrompt: '', width: 64, height: 64, batchSize: 1, seed: 1,
      steps: 2, cfg: 7, sampler: 'euler', scheduler: 'normal', denoise: 1, filenamePrefix: 'wf',
      loras: [{ ref: 'style.safetensors', weight: 1 }, { ref: 'style.safetensors', weight: 1 }],
    }) as any;
    const b = comfyBackend([s], {
      workflows: [
        { name: 'slots', graph, inputs: { prompt: '6.text' }, loras: [{ name: '20.lora_name', weight: ['20.strength_model', '20.strength_clip'] }, { name: '21.lora_name', weight: ['21.strength_model', '21.strength_clip'] }] },
        { name: 'plain', graph, inputs: { prompt: '6.text' } },
      ],
    });
    await b.refreshLoras();
    assert.equal(b.modelSpec('slots').loras?.max, 2);
    assert.equal(b.modelSpec('plain').loras, undefined, 'a workflow without slots takes no LoRAs');
    await b.generate(request({ model: 'slots', loras: [lora('chars/hero', 'chars/hero.safetensors', 0.7)] }), context());
    const g = s.prompts[0]!.prompt as any;
    assert.equal(g['20'].inputs.lora_name, 'chars/hero.safetensors');
    assert.equal(g['20'].inputs.strength_model, 0.7);
    assert.equal(g['20'].inputs.strength_clip, 0.7);
    assert.equal(g['21'].inputs.strength_model, 0);
    assert.equal(g['21'].inputs.strength_clip, 0);
  });

  test('a LoRA copied onto the host later is found by the next look; one no host has is refused before any prompt', async () => {
    const s = await comfy();
    const b = comfyBackend([s], { loraRefreshSeconds: 0.2 });
    await b.refreshLoras();
    s.loras.push('fresh.safetensors');
    assert.ok(!b.modelSpec('sd15.safetensors').loras!.available.some((l) => l.name === 'fresh'));
    await new Promise((r) => setTimeout(r, 250)); // past the refresh throttle (loraRefreshSeconds)
    await b.refreshLoras();
    assert.ok(b.modelSpec('sd15.safetensors').loras!.available.some((l) => l.name === 'fresh'));
    const before = s.prompts.length;
    const err = await rejection(b.generate(request({ loras: [lora('gone', 'gone.safetensors')] }), context()));
    assert.equal(err.code, 'invalid_request');
    assert.match(err.message, /no host has all of the LoRAs gone\.safetensors/);
    assert.equal(s.prompts.length, before);
  });

  test('hosts with different LoRA folders: a call goes to one that has its LoRA', async () => {
    const plain = await comfy({ loras: [] });
    const rich = await comfy({ loras: ['style.safetensors'] });
    const b = comfyBackend([plain, rich], { maxBatchSize: 1 });
    await b.refreshLoras();
    for (let i = 0; i < 3; i++) await b.generate(request({ prompt: `p${i}`, loras: [lora('style', 'style.safetensors')] }), context());
    assert.equal(plain.prompts.length, 0);
    assert.equal(rich.prompts.length, 3);
  });

  test('warm-up: each host runs one small prompt before it takes work and is warming meanwhile', async () => {
    const s = await comfy({ latency: { msPerStep: 4000, overheadMs: 5, batchFactor: 0.6, switchMs: 30 } });
    const b = comfyBackend([s], { warmup: { model: 'sd15.safetensors', prompt: 'warm', steps: 2, width: 64, height: 64 } });
    const h = await b.health();
    assert.equal(h.ok, false);
    assert.equal(h.warming, true);
    const job = b.generate(request({ prompt: 'real work' }), context());
    await until(() => s.executions.length >= 1 && s.executions[0]!.prompt !== '');
    assert.equal(s.executions[0]!.prompt, 'warm');
    assert.equal((await b.health()).warming, true, 'still warming while its prompt runs');
    await job;
    assert.deepEqual(s.executions.map((e) => e.prompt), ['warm', 'real work']);
    assert.equal((await b.health()).ok, true);
  });
});

describe('A1111 LoRAs', () => {
  test('discovered from /sdapi/v1/loras and sent as <lora:NAME:WEIGHT> tags after the prompt', async () => {
    const s = await a1111();
    const b = a1111Backend([s]);
    await b.refreshLoras();
    assert.deepEqual(b.modelSpec('sd15.safetensors').loras?.available, [{ name: 'add_detail', ref: 'add_detail' }, { name: 'pixel-art', ref: 'pixel-art' }]);
    await b.generate(request({ loras: [lora('add_detail', 'add_detail', 0.6), lora('pixel-art', 'pixel-art', 1)] }), context());
    const ex = s.executions[0]!;
    assert.equal(ex.body.prompt, 'a lighthouse at dusk <lora:add_detail:0.6> <lora:pixel-art:1>');
    assert.deepEqual(ex.loras, [{ name: 'add_detail', weight: 0.6 }, { name: 'pixel-art', weight: 1 }]);
    assert.deepEqual(ex.missingLoras, []);
    assert.equal(withLoraTags('', [{ ref: 'x', weight: -0.5 }]), '<lora:x:-0.5>');
  });

  test('a miss makes each host rescan (POST /sdapi/v1/refresh-loras) and list again', async () => {
    const s = await a1111();
    const b = a1111Backend([s], { loraRefreshSeconds: 0.2 });
    await b.refreshLoras();
    s.loras.push('new_style');
    await new Promise((r) => setTimeout(r, 250));
    await b.refreshLoras();
    assert.ok(s.requests.includes('POST /sdapi/v1/refresh-loras'));
    assert.ok(b.modelSpec('x').loras!.available.some((l) => l.name === 'new_style'));
  });

  test('warm-up runs one small txt2img on the loaded checkpoint before the host takes work', async () => {
    const s = await a1111();
    s.loaded = 'dreamshaper_8.safetensors';
    const b = a1111Backend([s], { warmup: { prompt: 'warm', steps: 1, width: 64, height: 64 } });
    await b.generate(request({ model: 'dreamshaper_8' }), context());
    assert.equal(s.executions[0]!.prompt, 'warm');
    assert.equal(s.executions[0]!.checkpoint, 'dreamshaper_8.safetensors');
    assert.equal(s.executions[1]!.prompt, 'a lighthouse at dusk');
  });
});
