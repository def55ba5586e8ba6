/**
 * GET /metrics — Prometheus text format (see src/observability/metrics.ts for what is exported). Open like a
 * health check unless `metrics.bearerToken` is set; off with `metrics.enabled: false`.
 */
import type { FastifyInstance } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import { DomainError } from '../../core/errors.ts';
import type { CostMetrics } from '../../observability/metrics.ts';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses } from '../schemas/common.ts';
import { noQuery } from '../schemas/compile.ts';

export function tokenMatches(header: string | undefined, token: string): boolean {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (!m) return false;
  const a = Buffer.from(m[1]!);
  const b = Buffer.from(token);
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function metricsRoutes(app: FastifyInstance, opts: { metrics: CostMetrics; bearerToken?: string }) {
  app.withTypeProvider<ZodTypeProvider>().get('/metrics', {
    schema: {
      summary: 'Prometheus metrics (with the metrics bearer token when one is configured)',
      operationId: 'metrics',
      tags: ['service'],
      security: [],
      querystring: noQuery,
      response: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: z.string() } } }, ...errorResponses },
    },
  }, async (req, reply) => {
    if (opts.bearerToken && !tokenMatches(req.headers.authorization, opts.bearerToken)) {
      throw new DomainError('unauthenticated', 'GET /metrics needs the metrics bearer token (metrics.bearerToken).', { code: 'invalid_api_key' });
    }
    const text = await opts.metrics.text();
    return reply.header('content-type', opts.metrics.contentType).header('cache-control', 'no-store').send(text);
  });
}
