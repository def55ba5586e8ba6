/** /health: the process is alive. /ready: it can do useful work (for load balancers and k8s probes). */
import type { FastifyInstance } from 'fastify';

export interface Readiness {
  ready: boolean;
  checks: Record<string, { ok: boolean; message?: string }>;
}

export async function healthRoutes(app: FastifyInstance, opts: { readiness: () => Promise<Readiness> }) {
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/ready', async (_req, reply) => {
    const r = await opts.readiness();
    return reply.status(r.ready ? 200 : 503).send({ status: r.ready ? 'ready' : 'not_ready', checks: r.checks });
  });
}
