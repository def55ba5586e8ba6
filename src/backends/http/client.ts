/**
 * The one HTTP path every hosted-provider backend uses: a per-attempt timeout (the body read
 * included), retries of 429/5xx with backoff honouring `retry-after`, and a bounded body read, so no
 * provider call can hang a worker or fill its memory.
 *
 * Requests that create billable work (a submission) are marked non-idempotent: they are retried on
 * 429/5xx (the provider refused them, nothing was created) and on connection failures that happened
 * before anything was sent, but never after a timeout, whose outcome is unknown — that would risk
 * paying twice.
 */
import { BackendError } from '../image-backend.ts';
import { backoffDelay, DEFAULT_RETRY_POLICY, parseRetryAfter, sleep } from './retry.ts';
import type { RetryPolicy } from './retry.ts';

export type FetchLike = typeof globalThis.fetch;

export interface HttpRequest {
  method?: string;
  headers?: Record<string, string>;
  body?: string | FormData | Uint8Array;
  signal: AbortSignal;
  /** Safe to send again after a timeout or a lost connection (GETs, synchronous generations). */
  idempotent: boolean;
  /** Overrides the client's per-attempt timeout. */
  timeoutMs?: number;
  /** Overrides the client's body cap. */
  maxBytes?: number;
  /** Statuses answered as they are, never retried (a poll's 404 while a task settles, …). */
  noRetryStatuses?: number[];
}

export interface HttpAnswer {
  status: number;
  headers: Headers;
  body: Buffer;
  /** The final URL (after redirects). */
  url: string;
  /** The body as JSON; undefined when it is not JSON. */
  json(): unknown;
  text(): string;
  ok: boolean;
}

export interface ProviderHttpOptions {
  /** Display name used in error messages. */
  provider: string;
  backend: string;
  fetch?: FetchLike;
  timeoutMs: number;
  retry?: Partial<RetryPolicy>;
  /** Largest body read (default 64 MiB). */
  maxBytes?: number;
  /** Told about each retry (for logs). */
  onRetry?: (info: { url: string; status?: number; error?: string; delayMs: number; retry: number }) => void;
}

/** Connection failures where the request certainly never reached the provider. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

function errorCode(err: unknown): string | undefined {
  let cur: unknown = err;
  for (let depth = 0; cur && depth < 4; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

function errorDetail(err: unknown): string {
  const code = errorCode(err);
  const cause = (err as { cause?: unknown })?.cause;
  const msg = cause instanceof Error ? cause.message : err instanceof Error ? err.message : String(err);
  return code && !msg.includes(code) ? `${msg} (${code})` : msg;
}

export class ProviderHttp {
  readonly provider: string;
  readonly backend: string;
  private readonly fetchImpl: FetchLike;
  private readonly timeoutMs: number;
  private readonly policy: RetryPolicy;
  private readonly maxBytes: number;
  private readonly onRetry: ProviderHttpOptions['onRetry'];

  constructor(opts: ProviderHttpOptions) {
    this.provider = opts.provider;
    this.backend = opts.backend;
    this.fetchImpl = opts.fetch ?? globalThis.fetch;
    this.timeoutMs = opts.timeoutMs;
    this.policy = { ...DEFAULT_RETRY_POLICY, ...opts.retry };
    this.maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
    this.onRetry = opts.onRetry;
  }

  get retryPolicy(): RetryPolicy {
    return this.policy;
  }

  /** Sends with retries; answers the final response whatever its status (callers map non-2xx). */
  async send(url: string | URL, req: HttpRequest): Promise<HttpAnswer> {
    const target = String(url);
    const timeoutMs = req.timeoutMs ?? this.timeoutMs;
    for (let retry = 0; ; retry++) {
      if (req.signal.aborted) throw this.abortError(req.signal);
      const canRetry = retry < this.policy.maxRetries;
      let answer: HttpAnswer;
      try {
        answer = await this.once(target, req, timeoutMs);
      } catch (err) {
        if (req.signal.aborted) throw this.abortError(req.signal, err);
        const timedOut = err instanceof Error && (err.name === 'TimeoutError' || errorCode(err) === 'UND_ERR_HEADERS_TIMEOUT');
        const notSent = NOT_SENT_CODES.has(errorCode(err) ?? '');
        if (err instanceof BackendError) throw err; // body too large
        if (canRetry && (req.idempotent || notSent)) {
          const delayMs = backoffDelay(retry, this.policy);
          this.onRetry?.({ url: target, error: errorDetail(err), delayMs, retry: retry + 1 });
          await sleep(delayMs, req.signal).catch(() => {});
          continue;
        }
        if (timedOut) {
          const unsure = req.idempotent ? '' : '; it may have been accepted, so easel does not send it again (that could pay twice)';
          throw new BackendError(`${this.provider} (backend "${this.backend}") did not answer within ${Math.round(timeoutMs / 1000)} s${unsure}`, {
            code: 'timeout',
            retryable: req.idempotent,
            cause: err,
          });
        }
        throw new BackendError(`${this.provider} (backend "${this.backend}") is unreachable: ${errorDetail(err)}`, {
          code: 'backend_unavailable',
          retryable: req.idempotent || notSent,
          cause: err,
        });
      }
      if (canRetry && isRetryableStatus(answer.status) && !req.noRetryStatuses?.includes(answer.status)) {
        const delayMs = backoffDelay(retry, this.policy, parseRetryAfter(answer.headers));
        this.onRetry?.({ url: target, status: answer.status, delayMs, retry: retry + 1 });
        await sleep(delayMs, req.signal).catch(() => {});
        continue;
      }
      return answer;
    }
  }

  private async once(url: string, req: HttpRequest, timeoutMs: number): Promise<HttpAnswer> {
    const signal = AbortSignal.any([req.signal, AbortSignal.timeout(timeoutMs)]);
    const res = await this.fetchImpl(url, {
      method: req.method ?? 'GET',
      headers: req.headers,
      body: req.body as RequestInit['body'],
      redirect: 'follow',
      signal,
    });
    const limit = req.maxBytes ?? this.maxBytes;
    const declared = Number(res.headers.get('content-length'));
    if (declared > limit) {
      await res.body?.cancel().catch(() => {});
      throw this.tooLarge(limit);
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    if (res.body) {
      for await (const chunk of res.body) {
        total += chunk.byteLength;
        if (total > limit) {
          await res.body.cancel().catch(() => {});
          throw this.tooLarge(limit);
        }
        chunks.push(chunk);
      }
    }
    const body = Buffer.concat(chunks, total);
    let parsed: { value: unknown } | undefined;
    return {
      status: res.status,
      headers: res.headers,
      body,
      url: res.url || url,
      ok: res.status >= 200 && res.status < 300,
      text: () => body.toString('utf8'),
      json: () => {
        if (!parsed) {
          try {
            parsed = { value: body.length ? JSON.parse(body.toString('utf8')) : undefined };
          } catch {
            parsed = { value: undefined };
          }
        }
        return parsed.value;
      },
    };
  }

  private tooLarge(limit: number): BackendError {
    return new BackendError(`${this.provider} (backend "${this.backend}") sent a body over ${limit} bytes`, { code: 'backend_error' });
  }

  abortError(signal: AbortSignal, cause?: unknown): BackendError {
    return new BackendError(`Call to backend "${this.backend}" was aborted`, { code: 'aborted', cause: cause ?? signal.reason });
  }
}
