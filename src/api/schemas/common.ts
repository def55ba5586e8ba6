/**
 * Pieces every route's schema is made of: OpenAI's error shape and the error answers, query
 * parameters (numbers coerced from their strings, sent once), ids in paths, lists.
 *
 * Query parameters follow the body's rules: a parameter a route does not take is refused
 * (`unknown_parameter`), one sent twice is refused (it arrives as an array: "send it once"), numbers
 * are parsed from their text with a 400 that names the parameter, and an empty value (`?limit=`)
 * counts as absent.
 */
import { z } from 'zod';
import { CACHE_POLICIES } from '../../cache/image-cache.ts';
import type { CachePolicy } from '../../cache/image-cache.ts';

export const errorSchema = z
  .object({
    error: z.object({
      message: z.string(),
      type: z.string().describe('invalid_request_error, authentication_error, permission_error, not_found_error, rate_limit_error, insufficient_quota, server_error, …'),
      param: z.string().nullable().describe('The request field at fault, when there is one'),
      code: z.string().nullable(),
    }),
  })
  .meta({ id: 'Error', description: "OpenAI's error shape" });

/** A JSON answer with its description (the form that keeps a registered schema a `$ref` in the document). */
export function json<T extends z.ZodType>(description: string, schema: T) {
  return { description, content: { 'application/json': { schema } } };
}

/** The error answers every route can give (4xx: the request; 5xx: the server or a backend). */
export const errorResponses = {
  '4xx': json('The request was refused; `error.param` names the field at fault, `error.code` says why', errorSchema),
  '5xx': json('The server or a backend failed; `x-should-retry` says whether the same request may succeed later', errorSchema),
};

const present = (v: unknown) => (v === '' ? undefined : v);
const numeric = (v: unknown) => (v === '' ? undefined : typeof v === 'string' && /^\s*[+-]?\d+(\.\d+)?\s*$/.test(v) ? Number(v) : v);

/** An optional integer query parameter from `min` to `max`. */
export function queryInt(min: number, max: number, fallback: number, description: string) {
  const msg = `expected an integer from ${min} to ${max}`;
  return z.preprocess(numeric, z.int(msg).min(min, msg).max(max, msg).default(fallback)).describe(description);
}

/** An optional number query parameter (Unix seconds and the like). */
export function queryNumber(check: (n: z.ZodNumber) => z.ZodNumber, description: string) {
  return z.preprocess(numeric, check(z.number()).optional()).describe(description);
}

/** An optional text query parameter; empty counts as absent. */
export function queryString(description: string, max = 1000) {
  return z.preprocess(present, z.string().max(max, `at most ${max} characters`).optional()).describe(description);
}

/** An optional query parameter that is one of `values`. */
export function queryEnum<const T extends readonly [string, ...string[]]>(values: T, description: string) {
  return z.preprocess(present, z.enum(values, { error: `expected one of ${values.join(', ')}` }).optional()).describe(description);
}

export const JOB_ID = /^job_[0-9A-Z]{26}$/;
export const IMAGE_ID = /^img_[0-9A-Z]{26}$/;
export const KEY_ID = /^key_[0-9A-Z]{26}$/;
export const BATCH_ID = /^batch_[0-9A-Z]{26}$/;

/** OpenAI's list envelope around `item`. */
export function listOf<T extends z.ZodType>(item: T, cursor: 'ids' | 'none' = 'ids') {
  const base = z.object({ object: z.literal('list'), data: z.array(item) });
  return cursor === 'ids'
    ? base.extend({ has_more: z.boolean(), first_id: z.string().nullable(), last_id: z.string().nullable() })
    : base;
}

/** `Prefer` and `Idempotency-Key`, read by the submission routes (documented; the handlers read them). */
export const submissionHeaders = z.object({
  prefer: z.string().optional().describe('`respond-async` answers 202 with the job at once instead of waiting for the images'),
  'idempotency-key': z.string().max(255).optional().describe('Retries with the same key return the job the first request created; the same key with another request is a 422'),
  'easel-cache': z.enum(CACHE_POLICIES as [CachePolicy, ...CachePolicy[]]).optional().describe('How this request may use the image cache (`off` skips it)'),
});
