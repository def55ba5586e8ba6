/** GET /v1/models in OpenAI's list shape. */
import type { FastifyInstance } from 'fastify';
import { DomainError } from '../../core/errors.ts';
import type { ApiDeps } from '../server.ts';

const START = Math.floor(Date.now() / 1000);

export async function modelRoutes(app: FastifyInstance, deps: ApiDeps) {
  const view = (m: ReturnType<ApiDeps['backends']['listModels']>[number]) => ({
    id: m.name,
    object: 'model',
    created: START,
    owned_by: 'easel',
    backend: m.backend,
    backend_type: m.type,
    default: m.isDefault,
    ...(m.description ? { description: m.description } : {}),
  });
  app.get('/models', async () => ({ object: 'list', data: deps.backends.listModels().map(view) }));
  app.get<{ Params: { id: string } }>('/models/:id', async (req) => {
    const m = deps.backends.listModels().find((x) => x.name === req.params.id);
    if (!m) throw new DomainError('not_found', `The model '${req.params.id}' does not exist.`, { param: 'model', code: 'model_not_found' });
    return view(m);
  });
}
