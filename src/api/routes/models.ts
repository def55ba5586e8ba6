/**
 * GET /v1/models in OpenAI's list shape, each model with what it takes (`spec`: capabilities, sizes,
 * qualities, images per call, tier, pricing and the JSON Schema of its `provider_options`), the same
 * spec admission checks requests against.
 */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DomainError } from '../../core/errors.ts';
import { errorResponses, json, listOf } from '../schemas/common.ts';
import { noQuery } from '../schemas/compile.ts';
import type { ApiDeps } from '../server.ts';
import type { ModelSpec } from '../../backends/model-spec.ts';

const START = Math.floor(Date.now() / 1000);

const modelSchema = z
  .object({
    id: z.string(),
    object: z.literal('model'),
    created: z.int(),
    owned_by: z.string(),
    backend: z.string().describe('The backend that serves it'),
    backend_type: z.string(),
    default: z.boolean().describe('Used when a request names no model'),
    description: z.string().optional(),
    spec: z
      .object({
        capabilities: z.object({ generate: z.boolean(), edit: z.boolean(), mask: z.boolean(), variation: z.boolean(), max_input_images: z.int() }),
        max_images_per_call: z.int(),
        sizes: z
          .union([
            z.object({ kind: z.literal('list'), sizes: z.array(z.string()), auto: z.boolean().optional() }),
            z.object({ kind: z.literal('range'), min_side: z.int(), max_side: z.int(), multiple_of: z.int().optional(), max_pixels: z.int().optional(), max_aspect: z.number().optional() }),
          ])
          .nullable()
          .describe('null: any size within the server’s limits'),
        qualities: z.array(z.string()).nullable(),
        styles: z.array(z.string()).nullable(),
        max_prompt_chars: z.int().nullable(),
        tier: z.string(),
        text_in_image: z.boolean(),
        pricing: z.enum(['price-table', 'provider-reported', 'gpu-time']),
        provider_options: z.record(z.string(), z.unknown()).nullable().describe('JSON Schema of the provider options it accepts'),
      })
      .optional()
      .describe('What the model takes; requests it cannot take are refused at admission'),
    loras: z.array(z.string()).optional().describe("easel: the LoRA adapters requests may name in `loras` (absent: the model takes none); a backend's own lists are refreshed as it finds more"),
  })
  .meta({ id: 'Model', description: 'A model this server serves' });

/** A provider-options schema as JSON Schema, for clients (undefined when zod cannot say). */
function optionsSchema(schema: z.ZodType): Record<string, unknown> | null {
  try {
    return z.toJSONSchema(schema, { unrepresentable: 'any', io: 'input' }) as Record<string, unknown>;
  } catch {
    return null;
  }
}

function specView(spec: ModelSpec) {
  const s = spec.sizes;
  return {
    capabilities: { generate: spec.capabilities.generate, edit: spec.capabilities.edit, mask: spec.capabilities.mask, variation: spec.capabilities.variation, max_input_images: spec.capabilities.maxInputImages },
    max_images_per_call: spec.maxImagesPerCall,
    sizes: !s ? null : s.kind === 'list' ? { kind: 'list' as const, sizes: [...s.sizes], ...(s.auto !== undefined ? { auto: s.auto } : {}) } : { kind: 'range' as const, min_side: s.minSide, max_side: s.maxSide, ...(s.multipleOf ? { multiple_of: s.multipleOf } : {}), ...(s.maxPixels ? { max_pixels: s.maxPixels } : {}), ...(s.maxAspect ? { max_aspect: s.maxAspect } : {}) },
    qualities: spec.qualities ? [...spec.qualities] : null,
    styles: spec.styles ? [...spec.styles] : null,
    max_prompt_chars: spec.maxPromptChars ?? null,
    tier: spec.tier,
    text_in_image: spec.textInImage,
    pricing: spec.pricing,
    provider_options: optionsSchema(spec.providerOptions),
  };
}

export async function modelRoutes(app: FastifyInstance, deps: ApiDeps) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const view = (m: ReturnType<ApiDeps['backends']['listModels']>[number]) => {
    const resolved = deps.backends.resolve(m.name);
    return {
    id: m.name,
    object: 'model' as const,
    created: START,
    owned_by: 'easel',
    backend: m.backend,
    backend_type: m.type,
    default: m.isDefault,
    ...(m.description ? { description: m.description } : {}),
    ...(resolved ? { spec: specView(resolved.spec) } : {}),
    ...loras(m.name),
    };
  };
  const loras = (name: string) => {
    const names = deps.backends.lorasOf(name);
    return names ? { loras: names } : {};
  };
  r.get('/models', {
    schema: { summary: 'List the models this server serves', operationId: 'listModels', tags: ['models'], querystring: noQuery, response: { 200: json('Models', listOf(modelSchema, 'none')), ...errorResponses } },
  }, async () => ({ object: 'list' as const, data: deps.backends.listModels().map(view) }));
  r.get('/models/:id', {
    schema: {
      summary: 'A model',
      operationId: 'getModel',
      tags: ['models'],
      params: z.object({ id: z.string().describe('The public model name') }),
      querystring: noQuery,
      response: { 200: json('The model', modelSchema), ...errorResponses },
    },
  }, async (req) => {
    const m = deps.backends.listModels().find((x) => x.name === req.params.id);
    if (!m) throw new DomainError('not_found', `The model '${req.params.id.slice(0, 200)}' does not exist.`, { param: 'model', code: 'model_not_found' });
    return view(m);
  });
}
