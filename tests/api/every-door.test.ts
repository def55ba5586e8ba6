/**
 * Every door, same rules. Each way work enters easel (generations, edits, variations, drafts,
 * refine, retry of an earlier job, a request of a batch) is tried against each promise admission
 * makes: a budget cannot be overspent, moderation runs before any work, provider options cannot
 * change what is priced or moderated, the generations rate limit holds, unknown models (including
 * names every JavaScript object has) are 404s, a model's capabilities are respected, a LoRA the model
 * does not offer is refused naming it, and an idempotency key cannot be reused for another request. For every refusal the backend stand-in must
 * have received nothing of the refused request, and no key's spend may exceed its budget.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { newJobId } from '../../src/core/ids.ts';
import { imageKey } from '../../src/images/keys.ts';
import { newImageId } from '../../src/core/ids.ts';
import { uniformSpec } from '../../src/backends/model-spec.ts';
import type { BackendModelSpec } from '../../src/backends/model-spec.ts';
import type { BackendCallContext, BackendRequest, BackendResult, ImageBackend } from '../../src/backends/image-backend.ts';
import type { BackendConfig } from '../../src/config/schema.ts';
import type { ImageRequest } from '../../src/core/image-request.ts';
import { OpenAIBackend } from '../../src/backends/openai/openai-backend.ts';
import { startEasel, standinBackendConfig } from '../support/easel.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import type { TestEasel } from '../support/easel.ts';
import { makePng } from '../support/png.ts';
import { until } from '../support/until.ts';

const DOORS = ['generations', 'edits', 'variations', 'drafts', 'refine', 'retry', 'batch'] as const;
type Door = (typeof DOORS)[number];

/** A backend whose models can each do only one thing (for the capability rule). */
function restrictedBackend(config: BackendConfig): ImageBackend {
  const caps = { generate: false, edit: false, mask: false, variation: false, maxInputImages: 0, maxImagesPerCall: 1 };
  return {
    name: config.name,
    type: 'restricted',
    capabilities: { ...caps, edit: true, mask: true, variation: true, maxInputImages: 1 },
    modelSpec(model: string): BackendModelSpec {
      if (model === 'inpaint-only') return uniformSpec({ ...caps, edit: true, mask: true, maxInputImages: 1 }, 'gpu-time');
      return uniformSpec({ ...caps, variation: true, maxInputImages: 1 }, 'gpu-time');
    },
    async health() {
      return { ok: true };
    },
    async generate(_r: BackendRequest, _c: BackendCallContext): Promise<BackendResult> {
      throw new Error('the restricted backend is never called in these tests');
    },
  };
}

/** A backend whose one model can do everything and offers one LoRA, `known` (for the LoRA rule); it records calls. */
const loraCalls: BackendRequest[] = [];
function loraBackend(config: BackendConfig): ImageBackend {
  const caps = { generate: true, edit: true, mask: true, variation: true, maxInputImages: 1, maxImagesPerCall: 4 };
  return {
    name: config.name,
    type: 'lora-test',
    capabilities: caps,
    modelSpec(): BackendModelSpec {
      return { ...uniformSpec(caps, 'gpu-time'), loras: { source: 'discovered', available: [{ name: 'known', ref: 'known.safetensors' }] } };
    },
    async health() {
      return { ok: true };
    },
    async generate(r: BackendRequest): Promise<BackendResult> {
      loraCalls.push(r);
      throw new Error('the LoRA test backend is only ever asked for refused requests');
    },
  };
}

let easel: TestEasel;
let standin: OpenAIStandin;
let image: Buffer;
const keys: Record<string, string> = {};
const keyIds: Record<string, string> = {};

before(async () => {
  const limited = Object.fromEntries(DOORS.map((d) => [`limited-${d}`, d === 'batch' ? { batches: 1 } : { generations: 1 }]));
  standin = await startOpenAIStandin({ strict: false });
  const base = standinBackendConfig(standin);
  easel = await startEasel({
    existingStandin: standin,
    // A backend entry named `restricted` is built by the test's factory (config types are a closed list).
    runtime: {
      backendFactories: {
        openai: (config) => (config.name === 'restricted' ? restrictedBackend(config) : config.name === 'loras' ? loraBackend(config) : new OpenAIBackend(config as never)),
      },
    },
    overrides: {
      backends: [...base.backends, { type: 'openai', name: 'restricted', baseUrl: 'http://127.0.0.1:9/v1' }, { type: 'openai', name: 'loras', baseUrl: 'http://127.0.0.1:9/v1' }],
      models: [
        ...base.models,
        { name: 'inpaint-only', backend: 'restricted', model: 'inpaint-only' },
        { name: 'vary-only', backend: 'restricted', model: 'vary-only' },
        { name: 'with-loras', backend: 'loras', model: 'with-loras' },
      ],
      budgets: { keys: { poor: { dailyUsd: 0 } } },
      moderation: { blocklist: ['forbiddenword'] },
      rateLimits: {
        enabled: true,
        exemptAdmin: true,
        generations: { perKey: 1000, perAddress: 0 },
        batches: { perKey: 1000, perAddress: 0 },
        reads: { perKey: 0, perAddress: 0 },
        keys: limited,
      },
      batches: { pumpIntervalMs: 50 },
    },
  });
  const names = ['rich', 'poor', ...DOORS.map((d) => `limited-${d}`)];
  for (const name of names) {
    const k = await createApiKey(easel.runtime.keys, { name });
    keys[name] = k.secret;
    keyIds[name] = k.key.id;
  }
  image = await makePng(256, 256);
});
after(async () => {
  await easel?.close();
  await standin?.close();
});

interface Outcome {
  status: number;
  body: any;
  headers: Headers;
}

const json = async (res: Response): Promise<Outcome> => ({ status: res.status, body: await res.json().catch(() => null), headers: res.headers });

/** A finished draft owned by `key`, made directly in the store (so a poor key has one to refine). */
async function seedDraft(key: string): Promise<string> {
  const rt = easel.runtime;
  const id = newJobId();
  const request: ImageRequest = { prompt: 'a seeded draft', n: 1, responseFormat: 'url', outputFormat: 'png' };
  await rt.store.createJob({ id, keyId: keyIds[key]!, kind: 'generation', priority: 'normal', model: 'dall-e-2', request, metadata: null, webhookUrl: null, idempotencyKey: null });
  const started = (await rt.store.startAttempt(id, 'standin'))!;
  const storageKey = imageKey(id, 0, 'png');
  await rt.storage.put(storageKey, image, 'image/png');
  const img = { id: newImageId(), jobId: id, keyId: keyIds[key]!, index: 0, storageKey, mediaType: 'image/png', width: 256, height: 256, bytes: image.length, sha256: 'x', revisedPrompt: null, createdAt: new Date() };
  await rt.store.completeJob(id, started.attempt, { result: { images: [{ imageId: img.id }] }, images: [img], costUsd: 0 });
  return id;
}

/** A canceled job owned by `key` whose request (as stored) is what a retry submits again. */
async function seedCanceled(key: string, model: string, request: Partial<ImageRequest>, kind: 'generation' | 'edit' | 'variation' = 'generation'): Promise<string> {
  const rt = easel.runtime;
  const id = newJobId();
  const full: ImageRequest = { prompt: 'a canceled job', n: 1, responseFormat: 'url', outputFormat: 'png', ...request };
  await rt.store.createJob({ id, keyId: keyIds[key]!, kind, priority: 'normal', model, request: full, metadata: null, webhookUrl: null, idempotencyKey: null });
  await rt.store.cancelJob(id);
  return id;
}

interface Ask {
  key: string;
  model?: string;
  prompt?: string;
  size?: string;
  n?: number;
  providerOptions?: Record<string, unknown>;
  idempotencyKey?: string;
  loras?: Array<{ name: string; weight?: number }>;
}

/** Submits through one door; the request is otherwise valid for that door. */
async function submit(door: Door, a: Ask): Promise<Outcome> {
  const headers: Record<string, string> = { prefer: 'respond-async' };
  if (a.idempotencyKey) headers['idempotency-key'] = a.idempotencyKey;
  const fields: Record<string, unknown> = {
    ...(a.model !== undefined ? { model: a.model } : {}),
    ...(a.prompt !== undefined ? { prompt: a.prompt } : {}),
    ...(a.size !== undefined ? { size: a.size } : {}),
    ...(a.n !== undefined ? { n: a.n } : {}),
    ...(a.providerOptions ? { provider_options: a.providerOptions } : {}),
    ...(a.loras ? { loras: a.loras } : {}),
  };
  const post = (path: string, body: unknown) => easel.api(path, { method: 'POST', key: keys[a.key], headers, json: body }).then(json);
  const multipart = (path: string, f: Record<string, unknown>) => {
    const form = new FormData();
    form.append('image', new File([new Uint8Array(image)], 'image.png', { type: 'image/png' }));
    for (const [k, v] of Object.entries(f)) form.append(k, typeof v === 'string' ? v : JSON.stringify(v));
    return easel.api(path, { method: 'POST', key: keys[a.key], headers, body: form }).then(json);
  };
  switch (door) {
    case 'generations':
      return post('/v1/images/generations', { prompt: 'a door test', model: 'dall-e-2', size: '256x256', ...fields });
    case 'drafts':
      return post('/v1/images/drafts', { prompt: 'a door test', model: 'dall-e-2', size: '256x256', n: 2, ...fields });
    case 'edits':
      return multipart('/v1/images/edits', { prompt: 'a door test', model: 'dall-e-2', size: '256x256', ...fields });
    case 'variations': {
      const { prompt: _p, ...rest } = fields;
      return multipart('/v1/images/variations', { model: 'dall-e-2', size: '256x256', ...rest });
    }
    case 'refine': {
      const draft = await seedDraft(a.key);
      return post('/v1/images/refine', { job_id: draft, model: 'dall-e-2', size: '256x256', ...fields, ...(a.n !== undefined ? {} : {}) });
    }
    case 'retry': {
      const { model, ...request } = {
        model: a.model ?? 'dall-e-2',
        prompt: a.prompt ?? 'a door test',
        size: a.size ? { width: Number(a.size.split('x')[0]), height: Number(a.size.split('x')[1]) } : { width: 256, height: 256 },
        ...(a.providerOptions ? { providerOptions: a.providerOptions } : {}),
        ...(a.n ? { n: a.n } : {}),
        ...(a.loras ? { loras: a.loras.map((l) => ({ name: l.name, weight: l.weight ?? 1 })) } : {}),
      };
      const id = await seedCanceled(a.key, model, request);
      return post(`/v1/images/jobs/${id}/retry`, {});
    }
    case 'batch': {
      const res = await post('/v1/images/batches', { requests: [{ prompt: 'a door test', model: 'dall-e-2', size: '256x256', ...fields }] });
      if (res.status !== 201 && res.status !== 200) return res;
      // Accepted: the request runs through the workers' pump; its outcome is the item's.
      const batchId = res.body.id;
      let item: any;
      await until('the batch request to be admitted or refused', async () => {
        const r = await easel.api(`/v1/images/batches/${batchId}/results`, { key: keys[a.key] });
        item = ((await r.json()) as any).data[0];
        return item.status !== 'pending' && item.status !== 'claimed';
      });
      return { status: item.status === 'failed' ? -1 : 201, body: { item, error: item.error }, headers: res.headers };
    }
  }
}

/** Nothing with this prompt (or marker in its provider options) reached the stand-in. */
async function standinSawNothing(marker: string): Promise<void> {
  await new Promise((r) => setTimeout(r, 150));
  const seen = easel.standin.requests.filter((r) => JSON.stringify(r.body ?? {}).includes(marker));
  assert.deepEqual(seen.map((r) => r.path), [], `the stand-in received nothing marked ${marker}`);
}

const marker = (door: Door, rule: string) => `door-${door}-${rule}-${Math.random().toString(36).slice(2, 8)}`;

describe('every door, same rules', () => {
  describe('budget exhausted → 429 insufficient_quota, and spend never exceeds the budget', () => {
    for (const door of DOORS) {
      test(door, async () => {
        const m = marker(door, 'budget');
        const out = await submit(door, { key: 'poor', prompt: m });
        if (door === 'batch') {
          assert.equal(out.body.item.status, 'failed');
          assert.equal(out.body.error.code, 'insufficient_quota');
        } else {
          assert.equal(out.status, 429, JSON.stringify(out.body));
          assert.equal(out.body.error.code, 'insufficient_quota');
          assert.equal(out.body.error.type, 'insufficient_quota');
          assert.equal(out.headers.get('x-should-retry'), 'false');
        }
        await standinSawNothing(m);
        const rows = easel.runtime.budgets.rows({ id: keyIds.poor!, name: 'poor' });
        for (const s of await easel.runtime.budgets.ledger.state(rows)) assert.ok(s.spentMicros + s.reservedMicros <= s.limitMicros, `${s.label} not overspent`);
      });
    }
  });

  describe('moderation → 400 content_policy_violation before any work', () => {
    for (const door of DOORS) {
      // A variation has no prompt to moderate.
      test(door, { skip: door === 'variations' }, async () => {
        const m = marker(door, 'moderation');
        const out = await submit(door, { key: 'rich', prompt: `${m} with a forbiddenword in it` });
        assert.equal(out.status, 400, JSON.stringify(out.body));
        assert.equal(out.body.error.code, 'content_policy_violation');
        assert.match(out.body.error.param, /prompt$/);
        await standinSawNothing(m);
      });
    }
  });

  describe('a provider option that changes model, n, size, quality or prompt → 400 naming it', () => {
    const hostile: [string, Record<string, unknown>][] = [
      ['model', { model: 'gpt-image-1' }],
      ['n', { n: 10 }],
      ['size', { size: '1536x1024' }],
      ['quality', { quality: 'high' }],
      ['prompt', { prompt: 'a forbiddenword scene' }],
      ['nested prompt', { input: { prompt: 'x' } }],
      ['num_images', { num_images: 4 }],
    ];
    for (const door of DOORS) {
      for (const [what, options] of hostile) {
        test(`${door}: ${what}`, async () => {
          const m = marker(door, 'options');
          const out = await submit(door, { key: 'rich', prompt: door === 'variations' ? undefined : m, providerOptions: { ...options, note: m } });
          assert.equal(out.status, 400, JSON.stringify(out.body));
          const param = door === 'batch' ? `requests[0].provider_options.` : 'provider_options.';
          assert.ok(out.body.error.param?.startsWith(param), `names ${param}…: ${out.body.error.param}`);
          const key = what === 'nested prompt' ? 'input.prompt' : Object.keys(options)[0]!;
          assert.ok(out.body.error.param.endsWith(key), `names the key: ${out.body.error.param}`);
          await standinSawNothing(m);
        });
      }
    }
  });

  describe('the rate limit of its group → 429 with Retry-After', () => {
    for (const door of DOORS) {
      test(door, async () => {
        const key = `limited-${door}`;
        const first = await submit(door, { key });
        assert.ok(first.status < 300 || first.status === -1, `the first is accepted: ${first.status} ${JSON.stringify(first.body)}`);
        const m = marker(door, 'rate');
        const second = await submit(door, { key, prompt: door === 'variations' ? undefined : m });
        assert.equal(second.status, 429, JSON.stringify(second.body));
        assert.equal(second.body.error.code, 'rate_limit_exceeded');
        assert.ok(Number(second.headers.get('retry-after')) >= 1);
        await standinSawNothing(m);
      });
    }
  });

  describe('an unknown model, or a name every object has → 404 model_not_found', () => {
    for (const door of DOORS) {
      for (const model of ['no-such-model', 'constructor', '__proto__', 'toString', 'hasOwnProperty']) {
        test(`${door}: ${model}`, async () => {
          const out = await submit(door, { key: 'rich', model });
          assert.equal(out.status, 404, JSON.stringify(out.body));
          assert.equal(out.body.error.code, 'model_not_found');
          assert.equal(out.body.error.param, door === 'batch' ? 'requests[0].model' : door === 'retry' ? 'model' : 'model');
        });
      }
    }
  });

  describe('a model without the capability → 400 naming the model and what it cannot do', () => {
    const cases: Record<Door, { model: string; says: RegExp }> = {
      generations: { model: 'inpaint-only', says: /cannot generate/ },
      drafts: { model: 'inpaint-only', says: /cannot generate/ },
      batch: { model: 'inpaint-only', says: /cannot generate/ },
      retry: { model: 'inpaint-only', says: /cannot generate/ },
      edits: { model: 'dall-e-3', says: /cannot do edits/ },
      variations: { model: 'dall-e-3', says: /cannot do variations/ },
      refine: { model: 'vary-only', says: /cannot generate/ },
    };
    for (const door of DOORS) {
      test(door, async () => {
        const { model, says } = cases[door];
        const out = await submit(door, { key: 'rich', model, size: door === 'edits' || door === 'variations' ? '1024x1024' : undefined });
        assert.equal(out.status, 400, JSON.stringify(out.body));
        assert.equal(out.body.error.code, 'unsupported_capability');
        assert.match(out.body.error.message, new RegExp(`'${model}'`));
        assert.match(out.body.error.message, says);
      });
    }
  });

  describe('a LoRA the model does not offer → 400 naming loras[0].name, before any work; a model that takes none → 400 naming the model', () => {
    for (const door of DOORS) {
      test(door, async () => {
        const before = loraCalls.length;
        const m = marker(door, 'lora');
        const out = await submit(door, { key: 'rich', model: 'with-loras', prompt: door === 'variations' ? undefined : m, loras: [{ name: 'no-such-lora' }, { name: 'known', weight: 0.5 }] });
        assert.equal(out.status, 400, JSON.stringify(out.body));
        assert.equal(out.body.error.param, door === 'batch' ? 'requests[0].loras[0].name' : 'loras[0].name');
        assert.equal(out.body.error.code, 'unknown_lora');
        assert.match(out.body.error.message, /Unknown LoRA 'no-such-lora' for model 'with-loras': it offers known/);
        const none = await submit(door, { key: 'rich', model: 'dall-e-2', prompt: door === 'variations' ? undefined : m, loras: [{ name: 'known' }] });
        assert.equal(none.status, 400, JSON.stringify(none.body));
        assert.equal(none.body.error.param, door === 'batch' ? 'requests[0].loras' : 'loras');
        assert.match(none.body.error.message, /Model 'dall-e-2' takes no LoRA adapters/);
        assert.equal(loraCalls.length, before, 'the backend was asked nothing');
        await standinSawNothing(m);
      });
    }
  });

  describe('an idempotency key reused with another request → 422', () => {
    for (const door of DOORS) {
      test(door, async () => {
        const idem = `idem-${door}-${Math.random().toString(36).slice(2)}`;
        const first = await submit(door, { key: 'rich', prompt: door === 'variations' ? undefined : 'the first request', idempotencyKey: idem });
        assert.ok(first.status < 300, JSON.stringify(first.body));
        const same = door === 'refine' || door === 'retry' ? undefined : await submit(door, { key: 'rich', prompt: door === 'variations' ? undefined : 'the first request', idempotencyKey: idem });
        if (same) assert.ok(same.status < 300 && same.headers.get('idempotent-replayed') === 'true', 'the same request replays');
        const other = await submit(door, { key: 'rich', prompt: door === 'variations' ? undefined : 'another request', n: door === 'variations' ? 2 : undefined, idempotencyKey: idem });
        assert.equal(other.status, 422, JSON.stringify(other.body));
        assert.equal(other.body.error.code, 'idempotency_key_reused');
      });
    }
  });
});

