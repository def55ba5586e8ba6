/**
 * Errors the domain raises: a kind (what went wrong, in the domain's words), a stable code, and the
 * request field at fault. How a kind becomes an HTTP status and OpenAI's error shape is decided in
 * `src/api/http-errors.ts` only; nothing below the API knows about HTTP.
 */
export type ErrorKind =
  /** The request is malformed or asks for something the model or server does not offer. */
  | 'invalid'
  /** No credentials, or credentials that are not valid. */
  | 'unauthenticated'
  /** Valid credentials without the right to do this. */
  | 'forbidden'
  /** The thing does not exist (or belongs to another key, which reads the same). */
  | 'not_found'
  /** The thing is in a state that does not allow this now. */
  | 'conflict'
  /** The thing existed and is gone for good. */
  | 'gone'
  | 'too_large'
  /** A byte range outside the thing asked for. */
  | 'range_not_satisfiable'
  | 'unsupported_media'
  /** Understood and well-formed, but refused: an idempotency key reused with another request. */
  | 'unprocessable'
  /** A budget would be exceeded. */
  | 'quota'
  /** Too many requests in a window. */
  | 'rate_limited'
  /** Refused by moderation. */
  | 'policy'
  /** Something easel depends on cannot take work now; trying again later may work. */
  | 'unavailable'
  | 'timeout'
  /** A backend failed the work. */
  | 'upstream'
  | 'internal';

export interface DomainErrorOptions {
  param?: string | null;
  code?: string | null;
  /** Whether the same request may succeed later (`x-should-retry`); unset: the kind's default. */
  retryable?: boolean;
  /** Seconds until a retry may succeed. */
  retryAfterSeconds?: number;
  /** The job concerned, when the error is about one that exists (a timeout, a failed job). */
  jobId?: string;
  /** A budget refusal: what is left of the tightest limit, and when it resets. */
  budget?: { remainingUsd: number; resetsAt: Date };
  cause?: unknown;
}

export class DomainError extends Error {
  readonly kind: ErrorKind;
  readonly param: string | null;
  readonly code: string | null;
  readonly retryable: boolean | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly jobId: string | undefined;
  readonly budget: DomainErrorOptions['budget'];

  constructor(kind: ErrorKind, message: string, opts: DomainErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'DomainError';
    this.kind = kind;
    this.param = opts.param ?? null;
    this.code = opts.code ?? null;
    this.retryable = opts.retryable;
    this.retryAfterSeconds = opts.retryAfterSeconds;
    this.jobId = opts.jobId;
    this.budget = opts.budget;
  }
}

export const invalidParam = (param: string, message: string, code: string | null = 'invalid_value'): DomainError =>
  new DomainError('invalid', message, { param, code });

/** A key sees only its own things: another key's answers exactly like a missing one. */
export const notFound = (what: string, id: string, param: string | null = 'id', code = `${what}_not_found`): DomainError =>
  new DomainError('not_found', `No ${what} with id '${id.length > 80 ? `${id.slice(0, 80)}…` : id}'.`, { param, code });
