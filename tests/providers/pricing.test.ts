import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PriceTable, billedQuality, priceFor } from '../../src/pricing/price-table.ts';
import { priceRules, pricingConfigSchema } from '../../src/pricing/schema.ts';
import { configSchema } from '../../src/config/schema.ts';

describe('price table defaults', () => {
  test('OpenAI: dall-e-3, dall-e-2 and the gpt-image family by size and quality', () => {
    assert.equal(priceFor('openai', 'dall-e-3', '1024x1024', 'standard'), 0.04);
    assert.equal(priceFor('openai', 'dall-e-3', '1024x1024', 'hd'), 0.08);
    assert.equal(priceFor('openai', 'dall-e-3', '1792x1024', 'standard'), 0.08);
    assert.equal(priceFor('openai', 'dall-e-3', { width: 1024, height: 1792 }, 'hd'), 0.12);
    assert.equal(priceFor('openai', 'dall-e-3', undefined, undefined), 0.04, 'defaults: 1024², standard');
    assert.equal(priceFor('openai', 'dall-e-2', '256x256'), 0.016);
    assert.equal(priceFor('openai', 'dall-e-2', '512x512'), 0.018);
    assert.equal(priceFor('openai', 'dall-e-2', '1024x1024'), 0.02);
    assert.equal(priceFor('openai', 'gpt-image-1', '1024x1024', 'low'), 0.011);
    assert.equal(priceFor('openai', 'gpt-image-1', '1024x1024', 'medium'), 0.02);
    assert.equal(priceFor('openai', 'gpt-image-1', '1024x1024', 'high'), 0.04);
    assert.equal(priceFor('openai', 'gpt-image-1', '1536x1024', 'low'), 0.016);
    assert.equal(priceFor('openai', 'gpt-image-1', '1024x1024', 'auto'), 0.04, 'auto is priced as high (never under-count)');
    assert.equal(priceFor('openai', 'gpt-image-1-mini', '1024x1024', 'low'), 0.005, 'mini beats the gpt-image-* glob');
    assert.equal(priceFor('openai', 'gpt-image-2', '2048x1024', 'medium'), 0.04, 'free sizes: the square price per megapixel');
  });

  test('quality words are billed as the provider bills them', () => {
    assert.equal(billedQuality('openai', 'dall-e-3', 'high'), 'hd');
    assert.equal(billedQuality('openai', 'dall-e-3', 'low'), 'standard');
    assert.equal(billedQuality('openai', 'gpt-image-1', 'hd'), 'high');
    assert.equal(billedQuality('openai', 'gpt-image-1', 'standard'), 'medium');
    assert.equal(billedQuality('openai', 'dall-e-2', 'hd'), 'standard');
  });

  test('hosted providers', () => {
    assert.equal(priceFor('replicate', 'black-forest-labs/flux-schnell'), 0.003);
    assert.equal(priceFor('replicate', 'black-forest-labs/flux-pro'), 0.05);
    assert.equal(priceFor('replicate', `stability-ai/sdxl:${'a'.repeat(64)}`), 0.0023, 'versions are ignored');
    assert.equal(priceFor('fal', 'fal-ai/flux/schnell', '1024x1024'), 0.003);
    assert.equal(priceFor('fal', 'fal-ai/flux/schnell', '2048x1024'), 0.006, 'per megapixel');
    assert.equal(priceFor('bfl', 'flux-pro-1.1'), 0.04);
    assert.equal(priceFor('stability', 'ultra'), 0.08);
    assert.equal(priceFor('stability', 'sd3.5-large-turbo'), 0.04);
    assert.equal(priceFor('imagen', 'imagen-4.0-fast-generate-001'), 0.02);
    assert.equal(priceFor('imagen', 'imagen-4.0-ultra-generate-001'), 0.06);
    assert.equal(priceFor('imagen', 'imagen-4.0-generate-001'), 0.04);
  });

  test('n multiplies; unknown models and local backends have no price', () => {
    assert.equal(priceFor('openai', 'dall-e-3', '1024x1024', 'hd', 3), 0.24);
    assert.equal(priceFor('replicate', 'black-forest-labs/flux-schnell', undefined, undefined, 4), 0.012);
    assert.equal(priceFor('openai', 'sd-turbo'), undefined);
    assert.equal(priceFor('comfyui', 'sdxl'), undefined);
  });
});

describe('price overrides from config', () => {
  test('an override beats the default; a backend name beats a backend type', () => {
    const table = new PriceTable(
      priceRules(
        pricingConfigSchema.parse({
          overrides: [
            { backend: 'openai', model: 'dall-e-3', quality: 'hd', usdPerImage: 0.1 },
            { backend: 'azure-openai', model: '*', usdPerImage: 0.5 },
            { backend: 'local-gpu', usdPerImage: 0.001 },
            { backend: 'fal', model: 'fal-ai/flux/*', usdPerMegapixel: 0.002 },
          ],
        }),
      ),
    );
    assert.equal(table.priceFor({ type: 'openai', name: 'oai' }, 'dall-e-3', '1792x1024', 'hd'), 0.1);
    assert.equal(table.priceFor({ type: 'openai', name: 'oai' }, 'dall-e-3', '1024x1024', 'standard'), 0.04, 'defaults fill in the rest');
    assert.equal(table.priceFor({ type: 'openai', name: 'azure-openai' }, 'dall-e-3', '1024x1024', 'hd'), 0.5);
    assert.equal(table.priceFor({ type: 'comfyui', name: 'local-gpu' }, 'anything', '512x512', undefined, 2), 0.002);
    assert.equal(table.priceFor({ type: 'fal', name: 'fal' }, 'fal-ai/flux/dev', '1024x1024'), 0.002);
  });

  test('the config section is validated, naming the problem', () => {
    assert.throws(() => pricingConfigSchema.parse({ overrides: [{ backend: 'x', usdPerImage: 1, usdPerMegapixel: 1 }] }), /exactly one/);
    assert.throws(() => pricingConfigSchema.parse({ overrides: [{ backend: 'x', usdPerImage: -1 }] }));
    assert.throws(() => pricingConfigSchema.parse({ overrides: [{ backend: 'x', usdPerImage: 1, typo: 1 }] }));
    const cfg = configSchema.parse({ pricing: { overrides: [{ backend: 'openai', model: 'dall-e-3', size: ['1024x1024'], usdPerImage: 0.05 }] } });
    assert.equal(cfg.pricing.overrides[0]!.model, 'dall-e-3');
    assert.deepEqual(configSchema.parse({}).pricing, { overrides: [] });
  });

  test('every hosted backend type is a valid config entry', () => {
    const cfg = configSchema.parse({
      backends: [
        { type: 'replicate', name: 'r' },
        { type: 'fal', name: 'f' },
        { type: 'bfl', name: 'b' },
        { type: 'stability', name: 's' },
        { type: 'imagen', name: 'i' },
        { type: 'ai-sdk', name: 'a', package: '@ai-sdk/openai' },
      ],
    });
    assert.deepEqual(cfg.backends.map((b) => b.type), ['replicate', 'fal', 'bfl', 'stability', 'imagen', 'ai-sdk']);
    assert.throws(() => configSchema.parse({ backends: [{ type: 'replicate', name: 'r', pollIntervalMs: 'fast' }] }), /pollIntervalMs/);
  });
});
