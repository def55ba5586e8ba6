/** GET /v1/models in OpenAI's list shape. */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DomainError } from '../../core/errors.ts';
import { errorResponses, json, listOf } from '../schemas/common.ts';
import { noQuery } from '../schemas/compile.ts';
import type { ApiDeps } from '../server.ts';

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
    loras: z.array(z.string()).optional().describe("easel: the LoRA adapters requests may name in `loras` (absent: the model takes none); a backend's own lists are refreshed as it finds more"),
  })
  .meta({ id: 'Model', description: 'A model this server serves' });

export async function modelRoutes(app: FastifyInstance, deps: ApiDeps) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const view = (m: ReturnType<ApiDeps['backends']['listModels']>[number]) => ({
    id: m.name,
    object: 'model' as const,
    created: START,
    owned_by: 'easel',
    backend: m.backend,
    backend_type: m.type,
    default: m.isDefault,
    ...(m.description ? { description: m.description } : {}),
    ...loras(m.name),
  });
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
