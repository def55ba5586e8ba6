/**
 * `Idempotency-Key` (as Stripe and the IETF draft define it): a retried submission with the same key
 * returns the job the first one created; the same key with a different request is refused. Keys are
 * scoped to the API key, so two tenants may use the same value.
 */
import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { ApiError } from '../core/errors.ts';

export function idempotencyKeyOf(req: FastifyRequest): string | undefined {
  const raw = req.headers['idempotency-key'];
  if (raw === undefined) return undefined;
  const value = Array.isArray(raw) ? raw[0]! : raw;
  if (!/^[\x21-\x7e]{1,255}$/.test(value)) {
    throw new ApiError(400, "Invalid 'Idempotency-Key' header: use 1 to 255 visible ASCII characters.", { param: 'Idempotency-Key', code: 'invalid_idempotency_key' });
  }
  return value;
}

/** JSON with sorted keys, so the same request always digests the same. */
function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export function fingerprint(parts: unknown): string {
  return createHash('sha256').update(stableJson(parts)).digest('hex');
}

export function idempotencyMismatch(key: string, jobId: string): ApiError {
  return new ApiError(
    422,
    `Idempotency-Key '${key}' was already used for job ${jobId} with a different request. Use a new key for a new request.`,
    { param: 'Idempotency-Key', code: 'idempotency_key_reused', headers: { 'x-should-retry': 'false' } },
  );
}
