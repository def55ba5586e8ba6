/**
 * GET /metrics — Prometheus text format (see src/observability/metrics.ts for what is exported). Open like a
 * health check unless `metrics.bearerToken` is set; off with `metrics.enabled: false`.
 */
import type { FastifyInstance } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { DomainError } from '../../core/errors.ts';
import type { CostMetrics } from '../../observability/metrics.ts';

export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function metricsRoutes(app: FastifyInstance, opts: { metrics: CostMetrics; bearerToken?: string }) {
  app.get('/metrics', async (req, reply) => {
    if (opts.bearerToken && !tokenMatches(req.headers.authorization, opts.bearerToken)) {
      throw new DomainError('unauthenticated', 'GET /metrics needs the metrics bearer token (metrics.bearerToken).', { code: 'invalid_api_key' });
    }
    const text = await opts.metrics.text();
    return reply.header('content-type', opts.metrics.contentType).header('cache-control', 'no-store').send(text);
  });
}
