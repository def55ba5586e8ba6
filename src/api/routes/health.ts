/**
 * /health: the process is alive. /ready: it can do useful work (for load balancers and k8s probes).
 * Both answer without a key, so they say which check failed, never why in detail (internal addresses,
 * connection errors): that is in the logs, and in /v1/system for admin keys.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';

export interface Readiness {
  ready: boolean;
  /** `message` goes to the logs; `public` (no internal detail) is what /ready may show anyone. */
  checks: Record<string, { ok: boolean; message?: string; public?: string }>;
}

export async function healthRoutes(app: FastifyInstance, opts: { readiness: () => Promise<Readiness>; log: Logger }) {
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/ready', async (req, reply) => {
    const r = await opts.readiness();
    if (!r.ready) opts.log.warn({ checks: r.checks, reqId: req.id }, 'not ready');
    const checks = Object.fromEntries(Object.entries(r.checks).map(([name, c]) => [name, c.ok ? { ok: true } : { ok: false, message: c.public ?? PUBLIC_REASON[name] ?? 'failing' }]));
    return reply.status(r.ready ? 200 : 503).send({ status: r.ready ? 'ready' : 'not_ready', checks });
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
