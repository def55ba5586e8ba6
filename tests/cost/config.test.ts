/** The cost-control config sections: shipped defaults, and errors that name the bad key. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load.ts';

const base = {
  backends: [{ type: 'openai', name: 'oa' }],
  models: [{ name: 'dall-e-3', backend: 'oa' }, { name: 'dall-e-2', backend: 'oa', tier: 'preview', fallback: ['dall-e-3'] }],
};

function problems(overrides: Record<string, unknown>): string[] {
  try {
    loadConfig({ env: {}, overrides: { ...base, ...overrides } });
    return [];
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems;
  }
}

describe('cost-control config', () => {
  test('defaults', () => {
    const c = loadConfig({ env: {}, overrides: base });
    assert.deepEqual(c.budgets.keys, {});
    assert.equal(c.budgets.unpricedImageUsd, 0.1);
    assert.equal(c.cache.exact.enabled, true);
    assert.equal(c.cache.semantic.enabled, false);
    assert.equal(c.cache.semantic.threshold, 0.95);
    assert.deepEqual(c.cache.shareGroups, {}, 'no key is answered with another key’s images unless a group says so');
    assert.deepEqual(c.rateLimits.generations, { perKey: 10, perAddress: 30, windowSeconds: 60 });
    assert.deepEqual(c.rateLimits.batches, { perKey: 2, perAddress: 5, windowSeconds: 60 });
    assert.equal(c.rateLimits.exemptAdmin, true);
    assert.equal(c.batches.maxRequests, 1000);
    assert.equal(c.batches.defaultPriority, 'low');
    assert.equal(c.batches.capWindowSeconds, 3600);
    assert.equal(c.costModel.defaultUsdPerGpuHour, 1);
    assert.deepEqual(c.costModel.selfHostedTypes, ['onnx', 'comfyui', 'a1111']);
    assert.deepEqual(c.routing.circuit, { failureThreshold: 5, openSeconds: 30 });
    assert.equal(c.metrics.enabled, true);
  });

  test('a full example parses', () => {
    const c = loadConfig({
      env: {},
      overrides: {
        ...base,
        budgets: { default: { dailyUsd: 5 }, keys: { 'ci-bot': { dailyUsd: 1, monthlyUsd: 20 } }, groups: { marketing: { keys: ['web', 'ads'], monthlyUsd: 300 } } },
        routing: { aliases: { cheap: { models: ['dall-e-2'] }, thumbnail: { tier: 'preview', size: '128x128' }, print: null }, fallback: { 'dall-e-3': ['dall-e-2'] } },
        cache: { semantic: { enabled: true, embedder: { type: 'openai', model: 'text-embedding-3-small' }, threshold: 0.97 }, optOutKeys: ['legal'] },
        rateLimits: { generations: { perKey: 60 }, keys: { 'ci-bot': { generations: 600 } } },
        costModel: { backends: { oa: { usdPerGpuHour: 1.5, hosts: { 'gpu-1': 2 } } } },
      },
    });
    assert.equal(c.routing.aliases.print, null);
    assert.equal(c.rateLimits.generations.perKey, 60);
    assert.equal(c.rateLimits.generations.perAddress, 30, 'unset fields keep their defaults');
  });

  test('errors name the key', () => {
    assert.deepEqual(problems({ routing: { aliases: { cheap: { models: ['nope'] } } } }), ['routing.aliases.cheap.models.0: no model named "nope"']);
    assert.deepEqual(problems({ routing: { fallback: { 'dall-e-3': ['gone'] } } }), ['routing.fallback.dall-e-3.0: no model named "gone"']);
    assert.deepEqual(problems({ models: [{ name: 'm', backend: 'oa', fallback: ['x'] }] }), ['models.0.fallback.0: no model named "x"']);
    assert.deepEqual(problems({ costModel: { backends: { gpux: { usdPerGpuHour: 1 } } } }), ['costModel.backends.gpux: no backend named "gpux"']);
    assert.match(problems({ routing: { aliases: { bad: { size: '256' } } } })[0]!, /routing\.aliases\.bad/);
    assert.match(problems({ budgets: { keys: { a: { dailyUsd: -1 } } } })[0]!, /^budgets\.keys\.a\.dailyUsd/);
    assert.match(problems({ rateLimits: { generations: { perKey: 'ten' } } })[0]!, /^rateLimits\.generations\.perKey/);
    assert.match(problems({ cache: { semantic: { embedder: { type: 'magic' } } } })[0]!, /^cache\.semantic\.embedder/);
  });
});
