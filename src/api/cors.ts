/**
 * CORS: browsers may call the API only from configured origins (none by default). The console easel
 * serves is same-origin and needs no entry. A refused preflight is a clear 403, not a silent 204.
 */
import cors from '@fastify/cors';
import type { FastifyInstance } from 'fastify';
import { DomainError } from '../core/errors.ts';

export function originAllowed(origins: string[], origin: string | undefined): boolean {
  if (!origin) return false;
  return origins.includes('*') || origins.includes(origin.replace(/\/+$/, ''));
}

export function registerCors(app: FastifyInstance, origins: string[]): void {
  app.addHook('onRequest', async (req) => {
    const origin = req.headers.origin;
    if (req.method === 'OPTIONS' && origin && req.headers['access-control-request-method'] && !originAllowed(origins, origin)) {
      throw new DomainError('forbidden', `Origin ${origin} may not call this API from a browser; add it to cors.origins in the config.`, { code: 'cors_origin_refused' });
    }
  });
  // @fastify/cors is not encapsulated: registered on the root it covers every route.
  app.register(cors, {
    origin: (origin, cb) => cb(null, originAllowed(origins, origin)),
    methods: ['GET', 'POST', 'DELETE'],
    allowedHeaders: ['authorization', 'content-type', 'idempotency-key', 'prefer', 'last-event-id', 'x-request-id'],
    exposedHeaders: ['location', 'x-request-id', 'idempotent-replayed', 'retry-after', 'ratelimit', 'ratelimit-policy', 'x-easel-job-id'],
    maxAge: 600,
    strictPreflight: false,
  });
}
