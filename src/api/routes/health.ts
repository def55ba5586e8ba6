/** /health: the process is alive. /ready: it can do useful work (for load balancers and k8s probes). */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses, json } from '../schemas/common.ts';
import { noQuery } from '../schemas/compile.ts';

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; message?: string }>;
}

const readinessSchema = z.object({
  status: z.enum(['ready', 'not_ready']),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), message: z.string().optional() })).describe('database, queue, storage, disk, backends'),
});

export async function healthRoutes(app: FastifyInstance, opts: { readiness: () => Promise<Readiness> }) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get('/health', {
    schema: {
      summary: 'Liveness: the process is up',
      operationId: 'health',
      tags: ['service'],
      security: [],
      querystring: noQuery,
      response: { 200: json('Alive', z.object({ status: z.literal('ok') })), ...errorResponses },
    },
  }, async () => ({ status: 'ok' as const }));
  r.get('/ready', {
    schema: {
      summary: 'Readiness: database, queue, storage, disk and a healthy backend',
      operationId: 'ready',
      tags: ['service'],
      security: [],
      querystring: noQuery,
      response: { 200: json('Ready', readinessSchema), 503: json('Not ready; `checks` says why', readinessSchema), ...errorResponses },
    },
  }, async (_req, reply) => {
    const ready = await opts.readiness();
    return reply.status(ready.ready ? 200 : 503).send({ status: ready.ready ? 'ready' : 'not_ready', checks: ready.checks });
  });
}
