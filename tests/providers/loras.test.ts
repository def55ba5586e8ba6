/**
 * LoRAs on hosted providers (PROTOCOLS.md §11 B3, B4): a model that takes them says so, offers only
 * what `models[].loras` names (references nobody can list), and each stand-in receives exactly the
 * adapters asked, under the model's own input names.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplicateBackend } from '../../src/backends/replicate/replicate-backend.ts';
import { FalBackend } from '../../src/backends/fal/fal-backend.ts';
import { completeSpec, loraProblem } from '../../src/backends/model-spec.ts';
import { REPLICATE_TOKEN, startReplicateStandin } from '../support/replicate-standin.ts';
import type { ReplicateStandin } from '../support/replicate-standin.ts';
import { FAL_KEY, startFalStandin } from '../support/fal-standin.ts';
import type { FalStandin } from '../support/fal-standin.ts';
import { context, request } from './helpers.ts';

describe('Replicate LoRA inputs', () => {
  let standin: ReplicateStandin;
  before(async () => {
    standin = await startReplicateStandin();
  });
  after(() => standin.close());
  const make = () => new ReplicateBackend({ type: 'replicate', name: 'rep', baseUrl: standin.url, apiKey: REPLICATE_TOKEN, pollIntervalMs: 10, maxPollIntervalMs: 30 });

  test('flux-dev-lora takes two (lora_weights + extra_lora), only the ones config names, weights −1..3', () => {
    const b = make();
    const spec = completeSpec(b.modelSpec('black-forest-labs/flux-dev-lora'), 'flux-dev-lora', {
      loras: [{ name: 'ghibli', ref: 'huggingface.co/owner/ghibli-lora' }, { name: 'ink', ref: 'https://example.com/ink.safetensors' }],
    });
    assert.deepEqual(spec.loras, { source: 'configured', max: 2, minWeight: -1, maxWeight: 3, available: [{ name: 'ghibli', ref: 'huggingface.co/owner/ghibli-lora' }, { name: 'ink', ref: 'https://example.com/ink.safetensors' }] });
    assert.equal(loraProblem('flux-dev-lora', spec, [{ name: 'owner/anything', weight: 1 }])?.param, 'loras[0].name', 'a reference config did not name is refused');
    assert.equal(loraProblem('flux-dev-lora', spec, [{ name: 'ghibli', weight: 3.5 }])?.param, 'loras[0].weight');
    assert.equal(loraProblem('flux-dev-lora', spec, [{ name: 'ghibli', weight: 1 }, { name: 'ink', weight: 1 }, { name: 'ghibli', weight: 1 }])?.param, 'loras');
    const none = completeSpec(b.modelSpec('black-forest-labs/flux-dev-lora'), 'flux-dev-lora');
    assert.deepEqual(none.loras?.available, [], 'no models[].loras: nothing offered');
    assert.equal(make().modelSpec('black-forest-labs/flux-schnell').loras, undefined, 'flux-schnell takes none');
    assert.match(loraProblem('flux-schnell', completeSpec(make().modelSpec('black-forest-labs/flux-schnell'), 'flux-schnell'), [{ name: 'x', weight: 1 }])!.message, /Model 'flux-schnell' takes no LoRA adapters/);
  });

  test('the prediction carries exactly the adapters asked: lora_weights/lora_scale, extra_lora/extra_lora_scale', async () => {
    standin.requests.length = 0;
    await make().generate(
      request({ model: 'black-forest-labs/flux-dev-lora', loras: [{ name: 'ghibli', ref: 'huggingface.co/owner/ghibli-lora', weight: 0.9 }, { name: 'ink', ref: 'https://example.com/ink.safetensors', weight: -0.5 }] }),
      context(),
    );
    const [create] = standin.creates();
    assert.equal(create.path, '/v1/models/black-forest-labs/flux-dev-lora/predictions');
    assert.equal(create.json.input.lora_weights, 'huggingface.co/owner/ghibli-lora');
    assert.equal(create.json.input.lora_scale, 0.9);
    assert.equal(create.json.input.extra_lora, 'https://example.com/ink.safetensors');
    assert.equal(create.json.input.extra_lora_scale, -0.5);
  });

  test('lucataco/flux-dev-lora takes one, as hf_lora with lora_scale 0..1', async () => {
    standin.requests.length = 0;
    const b = make();
    assert.deepEqual({ ...b.modelSpec('lucataco/flux-dev-lora').loras, available: [] }, { source: 'configured', available: [], max: 1, minWeight: 0, maxWeight: 1 });
    await b.generate(request({ model: 'lucataco/flux-dev-lora', loras: [{ name: 'x', ref: 'owner/x-lora', weight: 0.8 }] }), context());
    const [create] = standin.creates();
    assert.equal(create.json.input.hf_lora, 'owner/x-lora');
    assert.equal(create.json.input.lora_scale, 0.8);
    assert.equal(create.json.input.extra_lora, undefined);
  });

  test('a model config maps: input.lora declares the fields for a model the profiles do not know', () => {
    const b = new ReplicateBackend({ type: 'replicate', name: 'rep', baseUrl: standin.url, apiKey: REPLICATE_TOKEN, input: { lora: { field: 'lora_weights', scaleField: 'lora_scale' } } });
    assert.equal(b.modelSpec('me/my-finetune').loras?.max, 1);
  });
});

describe('fal flux-lora', () => {
  let standin: FalStandin;
  before(async () => {
    standin = await startFalStandin();
  });
  after(() => standin.close());

  test('loras: [{path, scale}] with each adapter asked, in order; other endpoints take none', async () => {
    const b = new FalBackend({ type: 'fal', name: 'fal', queueUrl: standin.url, jwksUrl: standin.jwksUrl, apiKey: FAL_KEY, pollIntervalMs: 10, maxPollIntervalMs: 30 }, { retry: { baseDelayMs: 5 } });
    const spec = completeSpec(b.modelSpec('fal-ai/flux-lora'), 'fal-ai/flux-lora', { loras: [{ name: 'pixel', ref: 'https://example.com/pixel.safetensors' }, 'owner/hf-lora'] });
    assert.deepEqual(spec.loras?.available, [{ name: 'pixel', ref: 'https://example.com/pixel.safetensors' }, { name: 'owner/hf-lora', ref: 'owner/hf-lora' }]);
    assert.equal(b.modelSpec('fal-ai/flux/schnell').loras, undefined);
    await b.generate(
      request({ model: 'fal-ai/flux-lora', loras: [{ name: 'pixel', ref: 'https://example.com/pixel.safetensors', weight: 1 }, { name: 'owner/hf-lora', ref: 'owner/hf-lora', weight: 0.4 }] }),
      context(),
    );
    const [submit] = standin.submits();
    assert.equal(submit.path, '/fal-ai/flux-lora');
    assert.deepEqual(submit.json.loras, [{ path: 'https://example.com/pixel.safetensors', scale: 1 }, { path: 'owner/hf-lora', scale: 0.4 }]);
  });
});
