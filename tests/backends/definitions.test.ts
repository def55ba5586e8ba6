/** One definition per backend folder: the config union, the registry, prices and self-hosted types come from the list. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { BACKEND_DEFINITIONS, SELF_HOSTED_TYPES, backendDefinition } from '../../src/backends/definitions.ts';
import { BackendRegistry } from '../../src/backends/registry.ts';
import { configSchema } from '../../src/config/schema.ts';
import { DEFAULT_PRICES, PriceTable } from '../../src/pricing/price-table.ts';

const minimal: Record<string, Record<string, unknown>> = {
  'ai-sdk': { package: '@ai-sdk/openai' },
  comfyui: { hosts: ['http://127.0.0.1:9'] },
  a1111: { hosts: ['http://127.0.0.1:9'] },
};

describe('backend definitions', () => {
  test('every type is in the config union, in order; a bad key and an unknown type are named', () => {
    const types = BACKEND_DEFINITIONS.map((d) => d.type);
    assert.deepEqual(types, ['openai', 'replicate', 'fal', 'bfl', 'stability', 'imagen', 'ai-sdk', 'onnx', 'comfyui', 'a1111']);
    const cfg = configSchema.parse({ backends: types.map((type) => ({ type, name: `b-${type}`, ...minimal[type] })) });
    assert.deepEqual(cfg.backends.map((b) => b.type), types);
    const typo = configSchema.safeParse({ backends: [{ type: 'fal', name: 'f', queueURL: 'x' }] });
    assert.match(JSON.stringify(typo.error?.issues), /queueURL/);
    const unknown = configSchema.safeParse({ backends: [{ type: 'magic', name: 'x' }] });
    assert.deepEqual(unknown.error?.issues[0]?.path, ['backends', 0, 'type']);
  });

  test('the registry builds each type from its definition (code loaded only then); extra factories win', async () => {
    const backends = [
      { type: 'openai', name: 'o' },
      { type: 'replicate', name: 'r' },
      { type: 'onnx', name: 'x', modelsDir: '/nonexistent' },
    ].map((b) => configSchema.parse({ backends: [b] }).backends[0]!);
    const registry = BackendRegistry.fromConfig(backends, []);
    assert.deepEqual(registry.listBackends().map((b) => [b.name, b.type]), [['o', 'openai'], ['r', 'replicate'], ['x', 'onnx']]);
    await registry.close();
    const fake = { name: 'o', type: 'openai', capabilities: {} } as never;
    const replaced = BackendRegistry.fromConfig(backends.slice(0, 1), [], { openai: () => fake });
    assert.equal(replaced.listBackends()[0], fake);
    assert.throws(() => BackendRegistry.fromConfig([{ type: 'magic', name: 'm' } as never], []), /unknown type "magic"/);
  });

  test('prices come from the definitions, each under its own type; OpenAI bills its own quality words', () => {
    const fromDefinitions = BACKEND_DEFINITIONS.flatMap((d) => ('prices' in d ? [...d.prices] : []));
    assert.deepEqual([...DEFAULT_PRICES], fromDefinitions);
    for (const d of BACKEND_DEFINITIONS) for (const p of 'prices' in d ? d.prices : []) assert.equal(p.backend, d.type);
    const table = new PriceTable();
    assert.equal(table.priceFor('openai', 'dall-e-3', '1024x1024', 'high'), 0.08, 'high is billed as hd');
    assert.equal(table.priceFor('bfl', 'flux-pro-1.1', undefined, undefined, 2), 0.08);
    assert.equal(backendDefinition('fal')?.billedQuality, undefined);
  });

  test('self-hosted types (costed by GPU time) are the definitions that say so', () => {
    assert.deepEqual(SELF_HOSTED_TYPES, ['onnx', 'comfyui', 'a1111']);
    assert.deepEqual(configSchema.parse({}).costModel.selfHostedTypes, ['onnx', 'comfyui', 'a1111']);
  });
});
