/** The parameter-table mapper and the provider-option screen every request builder uses. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import { easelParams, mapParams, notTaken } from '../../src/backends/http/param-table.ts';
import type { ParamRow } from '../../src/backends/http/param-table.ts';
import { acceptedOptions } from '../../src/backends/provider-options.ts';
import { declaredOptionsObject, declaredOptionsSchema } from '../../src/backends/declared-options.ts';
import { BackendError } from '../../src/backends/image-backend.ts';
import type { BackendRequest } from '../../src/backends/image-backend.ts';

const request = (over: Partial<BackendRequest> = {}): BackendRequest => ({
  kind: 'generation',
  model: 'm',
  prompt: 'a fox',
  n: 2,
  outputFormat: 'png',
  inputImages: [],
  providerOptions: {},
  ...over,
});

describe('mapParams', () => {
  const rows: ParamRow[] = [
    { param: 'prompt', field: 'prompt' },
    { param: 'n', field: 'num_images', max: 4 },
    { param: 'size', field: 'dims.width', transform: (s) => s.width },
    { param: 'size', field: 'dims.height', transform: (s) => s.height },
    { param: 'steps', field: 'steps', min: 1, max: 50, default: 28 },
    { param: 'seed', field: 'seed', transform: (seed: number, t) => (seed > 100 ? (t.warn('seed wrapped'), seed % 100) : seed) },
    notTaken('negative_prompt', 'm', 'b'),
  ];

  test('maps, nests, clamps, defaults and warns; mapped fields win over options and extras', () => {
    const params = easelParams(request({ n: 6, size: { width: 64, height: 32 }, seed: 123, negativePrompt: 'x' }));
    const extras = { steps: 3, quality_hint: 'fine', prompt: 'extra prompt' };
    const options = { prompt: 'option prompt', num_images: 9, dims: { width: 1 }, strength: 0.5 };
    const { body, warnings } = mapParams(rows, params, { base: extras, options });
    assert.deepEqual(body, { steps: 28, quality_hint: 'fine', prompt: 'a fox', num_images: 4, dims: { width: 64, height: 32 }, strength: 0.5, seed: 23 });
    assert.deepEqual(options.dims, { width: 1 }, 'an options object is never written into');
    assert.deepEqual(warnings, [
      { type: 'compatibility', setting: 'n', detail: 'n 6 sent as 4 (the provider takes …–4)' },
      { type: 'compatibility', setting: 'seed', detail: 'seed wrapped' },
      { type: 'unsupported', setting: 'negative_prompt', detail: 'negative_prompt is not supported by m on backend "b"; ignored' },
    ]);
  });

  test('a prototype key in a layer is never copied', () => {
    const options = JSON.parse('{"__proto__": {"prompt": "evil"}, "a": 1}');
    const { body } = mapParams([], easelParams(request()), { options });
    assert.deepEqual(Object.keys(body), ['a']);
    assert.equal(Object.getPrototypeOf(body), Object.prototype);
    assert.equal((body as { prompt?: string }).prompt, undefined);
  });

  test('easelParams takes per-call overrides (a call’s count, its seed) and drops unset ones', () => {
    const p = easelParams(request({ seed: 5, steps: 4 }), { n: 1, seed: undefined });
    assert.equal(p.n, 1);
    assert.equal('seed' in p, false);
    assert.equal(p.steps, 4);
  });
});

describe('acceptedOptions', () => {
  const schema = z.object({ strength: z.number().min(0).max(1).optional(), mode: z.enum(['a', 'b']).optional() }).strict();
  const where = { backend: 'b', model: 'm' };

  test('keeps declared options; drops guarded (at any depth), prototype and unknown keys with structured warnings', () => {
    const raw = { ...JSON.parse('{"__proto__": {"x": 1}}'), strength: 0.4, n: 3, input: { prompt: 'evil' }, extra: true, mode: undefined };
    const { options, warnings } = acceptedOptions(raw, schema, where);
    assert.deepEqual(options, { strength: 0.4 });
    assert.deepEqual(warnings.map((w) => [w.type, w.setting]), [
      ['unsupported', 'provider_options.__proto__'],
      ['unsupported', 'provider_options.n'],
      ['unsupported', 'provider_options.input.prompt'],
      ['unsupported', 'provider_options.extra'],
    ]);
  });

  test('a declared option with a bad value fails the call as invalid_request naming it', () => {
    assert.throws(() => acceptedOptions({ mode: 'c' }, schema, where), (e: unknown) => e instanceof BackendError && e.code === 'invalid_request' && /provider_options\.mode/.test(e.message));
  });
});

describe('declared options', () => {
  test('a declaration becomes a strict schema; guarded names and easel’s own fields cannot be declared', () => {
    const decl = declaredOptionsSchema.parse({ level: { type: 'integer', min: 1, max: 3 }, look: { type: 'string', values: ['a', 'b'] }, fast: 'boolean' });
    const schema = declaredOptionsObject(decl);
    assert.equal(schema.safeParse({ level: 2, look: 'a', fast: true }).success, true);
    assert.equal(schema.safeParse({ level: 4 }).success, false);
    assert.equal(schema.safeParse({ look: 'c' }).success, false);
    assert.equal(schema.safeParse({ other: 1 }).success, false);
    for (const name of ['num_images', 'negativePrompt', 'safety_tolerance', 'seed', 'guidance_scale', 'constructor']) {
      assert.equal(declaredOptionsSchema.safeParse({ [name]: 'string' }).success, false, name);
    }
    assert.deepEqual(Object.getOwnPropertyNames(declaredOptionsSchema.parse(JSON.parse('{"__proto__": "string"}'))), [], 'a prototype key is dropped');
  });
});
