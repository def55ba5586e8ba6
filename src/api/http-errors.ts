/**
 * The one place domain errors become HTTP: status, OpenAI's error shape
 * (`{"error":{"message","type","param","code"}}`) and the headers that go with them.
 */
import { DomainError } from '../core/errors.ts';
import type { ErrorKind } from '../core/errors.ts';

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

const STATUS: Record<ErrorKind, number> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  gone: 410,
  too_large: 413,
  range_not_satisfiable: 416,
  unsupported_media: 415,
  unprocessable: 422,
  quota: 429,
  rate_limited: 429,
  policy: 400,
  unavailable: 503,
  timeout: 504,
  upstream: 502,
  internal: 500,
};

const TYPE: Record<ErrorKind, string> = {
  invalid: 'invalid_request_error',
  unauthenticated: 'authentication_error',
  forbidden: 'permission_error',
  not_found: 'not_found_error',
  conflict: 'invalid_request_error',
  gone: 'invalid_request_error',
  too_large: 'invalid_request_error',
  range_not_satisfiable: 'invalid_request_error',
  unsupported_media: 'invalid_request_error',
  unprocessable: 'invalid_request_error',
  // OpenAI's own type for a spent quota; its SDKs and clients branch on it.
  quota: 'insufficient_quota',
  rate_limited: 'rate_limit_error',
  policy: 'invalid_request_error',
  unavailable: 'service_unavailable',
  timeout: 'timeout_error',
  upstream: 'server_error',
  internal: 'server_error',
};

/** Kinds whose requests must not be retried as they are, unless the error says otherwise. */
const FINAL: ReadonlySet<ErrorKind> = new Set(['quota', 'policy', 'unprocessable', 'timeout', 'conflict']);

export interface HttpError {
  status: number;
  headers: Record<string, string>;
  body: ErrorBody;
}

export function statusOf(kind: ErrorKind): number {
  return STATUS[kind];
}

export function toHttp(err: DomainError, location?: (jobId: string) => string): HttpError {
  const headers: Record<string, string> = {};
  const retryable = err.retryable ?? (FINAL.has(err.kind) ? false : undefined);
  if (retryable !== undefined) headers['x-should-retry'] = String(retryable);
  if (err.retryAfterSeconds !== undefined) headers['retry-after'] = String(Math.max(1, Math.ceil(err.retryAfterSeconds)));
  if (err.jobId) {
    headers['x-easel-job-id'] = err.jobId;
    if (location) headers.location = location(err.jobId);
  }
  if (err.budget) {
    headers['x-easel-budget-remaining-usd'] = err.budget.remainingUsd.toFixed(6);
    headers['x-easel-budget-resets-at'] = err.budget.resetsAt.toISOString();
  }
  return { status: STATUS[err.kind], headers, body: errorBody(err) };
}

export function errorBody(err: DomainError): ErrorBody {
  return { error: { message: err.message, type: TYPE[err.kind], param: err.param, code: err.code } };
}

/** An error body for a status the API answers without a domain error (Fastify's own failures). */
export function bodyFor(kind: ErrorKind, message: string, code: string, param: string | null = null): ErrorBody {
  return errorBody(new DomainError(kind, message, { code, param }));
}
