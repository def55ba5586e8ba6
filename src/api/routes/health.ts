/**
 * /health: the process is alive. /ready: it can do useful work (for load balancers and k8s probes).
 * Both answer without a key, so they say which check failed, never why in detail (internal addresses,
 * connection errors): that is in the logs, and in /v1/system for admin keys.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses, json } from '../schemas/common.ts';
import { noQuery } from '../schemas/compile.ts';

export interface Readiness {
  ready: boolean;
  /** `message` goes to the logs; `public` (no internal detail) is what /ready may show anyone. */
  checks: Record<string, { ok: boolean; message?: string; public?: string }>;
}

const readinessSchema = z.object({
  status: z.enum(['ready', 'not_ready']),
  checks: z.record(z.string(), z.object({ ok: z.boolean(), message: z.string().optional() })).describe('database, queue, storage, disk, backends, capacity, model: which check fails, never why in detail'),
});

export async function healthRoutes(app: FastifyInstance, opts: { readiness: () => Promise<Readiness>; log: Logger }) {
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
      response: { 200: json('Ready', readinessSchema), 503: json('Not ready; `checks` says which check fails (why is in the logs, and in /v1/system for admin keys)', readinessSchema), ...errorResponses },
    },
  }, async (req, reply) => {
    const ready = await opts.readiness();
    if (!ready.ready) opts.log.warn({ checks: ready.checks, reqId: req.id }, 'not ready');
    const checks = Object.fromEntries(Object.entries(ready.checks).map(([name, c]) => [name, c.ok ? { ok: true } : { ok: false, message: c.public ?? PUBLIC_REASON[name] ?? 'failing' }]));
    return reply.status(ready.ready ? 200 : 503).send({ status: ready.ready ? 'ready' : 'not_ready', checks });
  });
}

/** What /ready says about a failing check: which part, not the internals behind it. */
const PUBLIC_REASON: Record<string, string> = {
  database: 'the database is unreachable',
  queue: 'the job queue is unreachable',
  storage: 'image storage is unreachable',
  disk: 'the disk is nearly full',
  backends: 'no backend can take work',
  capacity: 'the backends are overloaded',
};
