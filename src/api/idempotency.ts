/**
 * The `Idempotency-Key` header (as Stripe and the IETF draft define it). The submission decides what
 * a key means (src/submissions): a retried submission with the same key returns the job the first
 * one created; the same key with a different request is refused. Keys are scoped to the API key.
 */
import type { FastifyRequest } from 'fastify';
import { DomainError } from '../core/errors.ts';

export function idempotencyKeyOf(req: FastifyRequest): string | undefined {
  const raw = req.headers['idempotency-key'];
  if (raw === undefined) return undefined;
  if (Array.isArray(raw)) throw new DomainError('invalid', "The 'Idempotency-Key' header was sent more than once; send it once.", { param: 'Idempotency-Key', code: 'invalid_idempotency_key' });
  if (!/^[\x21-\x7e]{1,255}$/.test(raw)) {
    throw new DomainError('invalid', "Invalid 'Idempotency-Key' header: use 1 to 255 visible ASCII characters.", { param: 'Idempotency-Key', code: 'invalid_idempotency_key' });
  }
  return raw;
}
