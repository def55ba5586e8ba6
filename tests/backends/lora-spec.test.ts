/** The pure LoRA rules: config narrowing a model's list, the admission check, resolution, and multipart's forms. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { configuredLoras, loraProblem, loraSetKey, resolveLoras } from '../../src/backends/model-spec.ts';
import type { LoraSupport } from '../../src/backends/model-spec.ts';
import { formToBody } from '../../src/api/routes/edits.ts';
import { comfyLoras } from '../../src/backends/comfyui/models.ts';
import { DomainError } from '../../src/core/errors.ts';

const found: LoraSupport = { source: 'discovered', available: [{ name: 'style', ref: 'style.safetensors' }, { name: 'chars/hero', ref: 'chars/hero.safetensors' }] };

describe('models[].loras', () => {
  test('on a discovered list: an allowlist by name or file, renaming allowed; what the hosts lack is left out until they have it', () => {
    assert.deepEqual(configuredLoras(found, undefined), found);
    assert.deepEqual(configuredLoras(found, ['style', { name: 'hero', ref: 'chars/hero.safetensors' }, 'missing']).available, [
      { name: 'style', ref: 'style.safetensors' },
      { name: 'hero', ref: 'chars/hero.safetensors' },
    ]);
    assert.deepEqual(configuredLoras(found, []).available, []);
  });

  test('on a configured model: the list is all it offers (references default to the name); none without one', () => {
    const hosted: LoraSupport = { source: 'configured', available: [], max: 2 };
    assert.deepEqual(configuredLoras(hosted, undefined), { ...hosted, available: [] });
    assert.deepEqual(configuredLoras(hosted, ['owner/repo', { name: 'ink', ref: 'https://x/ink.safetensors' }]).available, [
      { name: 'owner/repo', ref: 'owner/repo' },
      { name: 'ink', ref: 'https://x/ink.safetensors' },
    ]);
  });
});

describe('loraProblem', () => {
  test('names the entry at fault, the model that takes none, too many, twice, and weights out of the provider’s range', () => {
    assert.equal(loraProblem('m', { loras: found }, undefined), undefined);
    assert.equal(loraProblem('m', { loras: found }, []), undefined);
    assert.equal(loraProblem('m', {}, []), undefined, 'no LoRAs asked: nothing to say, whatever the model');
    assert.deepEqual(loraProblem('m', {}, [{ name: 'style', weight: 1 }]), { param: 'loras', code: 'unsupported_capability', message: "Model 'm' takes no LoRA adapters." });
    const unknown = loraProblem('m', { loras: found }, [{ name: 'style', weight: 1 }, { name: 'nope', weight: 1 }])!;
    assert.equal(unknown.param, 'loras[1].name');
    assert.equal(unknown.code, 'unknown_lora');
    assert.match(unknown.message, /Unknown LoRA 'nope' for model 'm': it offers style, chars\/hero\./);
    assert.match(loraProblem('m', { loras: { source: 'discovered', available: [] } }, [{ name: 'x', weight: 1 }])!.message, /it offers none right now/);
    assert.equal(loraProblem('m', { loras: found }, [{ name: 'style', weight: 1 }, { name: 'style', weight: 0.5 }])?.param, 'loras[1].name');
    assert.equal(loraProblem('m', { loras: { ...found, max: 1 } }, [{ name: 'style', weight: 1 }, { name: 'chars/hero', weight: 1 }])?.param, 'loras');
    assert.equal(loraProblem('m', { loras: { ...found, minWeight: 0, maxWeight: 1 } }, [{ name: 'style', weight: -0.5 }])?.param, 'loras[0].weight');
  });

  test('resolution to the backend’s references, and the set key (order and weight count)', () => {
    assert.deepEqual(resolveLoras({ loras: found }, [{ name: 'chars/hero', weight: 0.5 }]), [{ name: 'chars/hero', weight: 0.5, ref: 'chars/hero.safetensors' }]);
    assert.equal(resolveLoras({ loras: found }, []), undefined);
    assert.equal(loraSetKey([{ ref: 'a', weight: 1 }, { ref: 'b', weight: 0.5 }]), 'a@1|b@0.5');
    assert.notEqual(loraSetKey([{ ref: 'a', weight: 1 }, { ref: 'b', weight: 0.5 }]), loraSetKey([{ ref: 'b', weight: 0.5 }, { ref: 'a', weight: 1 }]));
    assert.equal(loraSetKey(undefined), '');
  });

  test('ComfyUI files are offered without their extension, unless two would share a name', () => {
    assert.deepEqual(comfyLoras(['a.safetensors', 'sub/b.pt', 'c.safetensors', 'c.ckpt']), [
      { name: 'a', ref: 'a.safetensors' },
      { name: 'sub/b', ref: 'sub/b.pt' },
      { name: 'c.safetensors', ref: 'c.safetensors' },
      { name: 'c.ckpt', ref: 'c.ckpt' },
    ]);
  });
});

describe('loras in a multipart form', () => {
  const allowed = new Set(['prompt', 'loras']);
  const seq = (pairs: Array<[string, string]>) => ({ fields: new Map(pairs.map(([k]) => [k, pairs.filter(([x]) => x === k).map(([, v]) => v)])), sequence: pairs });

  test('the openai SDK’s form: each entry’s fields together, a repeated field starting the next', () => {
    const { fields, sequence } = seq([['prompt', 'p'], ['loras[][name]', 'a'], ['loras[][weight]', '0.8'], ['loras[][name]', 'b'], ['loras[][weight]', '-1'], ['loras[][name]', 'c']]);
    assert.deepEqual(formToBody(fields, allowed, sequence).loras, [{ name: 'a', weight: 0.8 }, { name: 'b', weight: -1 }, { name: 'c' }]);
    const wFirst = seq([['loras[][weight]', '0.5'], ['loras[][name]', 'a'], ['loras[][weight]', '1'], ['loras[][name]', 'b']]);
    assert.deepEqual(formToBody(wFirst.fields, allowed, wFirst.sequence).loras, [{ weight: 0.5, name: 'a' }, { weight: 1, name: 'b' }]);
  });

  test('indexed fields and JSON text; mixing forms, a bad weight or bad JSON is a 400 naming the field', () => {
    const indexed = seq([['loras[1][name]', 'b'], ['loras[0][name]', 'a'], ['loras[0][weight]', '2']]);
    assert.deepEqual(formToBody(indexed.fields, allowed, indexed.sequence).loras, [{ name: 'a', weight: 2 }, { name: 'b' }]);
    const json = seq([['loras', '[{"name":"a","weight":0.3}]']]);
    assert.deepEqual(formToBody(json.fields, allowed, json.sequence).loras, [{ name: 'a', weight: 0.3 }]);
    const param = (pairs: Array<[string, string]>) => {
      const f = seq(pairs);
      try {
        formToBody(f.fields, allowed, f.sequence);
      } catch (err) {
        assert.ok(err instanceof DomainError);
        return err.param;
      }
      assert.fail('expected a refusal');
    };
    assert.equal(param([['loras', '[]'], ['loras[][name]', 'a']]), 'loras');
    assert.equal(param([['loras[][name]', 'a'], ['loras[0][name]', 'b']]), 'loras');
    assert.equal(param([['loras[][name]', 'a'], ['loras[][weight]', 'heavy']]), 'loras[][weight]');
    assert.equal(param([['loras', '{"name":"a"}']]), 'loras');
    assert.equal(param([['loras[0][name]', 'a'], ['loras[0][name]', 'b']]), 'loras[0][name]');
  });
});
