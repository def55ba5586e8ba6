/**
 * Backoff arithmetic shared by every hosted-provider backend: waits that honour `retry-after`
 * (seconds or an HTTP date) and `retry-after-ms`, exponential growth with jitter otherwise, and
 * sleeps that end at once when the job's signal aborts.
 */

export interface RetryPolicy {
  /** Retries after the first attempt. */
  maxRetries: number;
  /** First backoff when the provider says nothing. */
  baseDelayMs: number;
  /** Cap on a computed backoff. */
  maxDelayMs: number;
  /** Cap on a provider-asked wait (a `retry-after` of an hour is not worth holding a worker for). */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxRetries: 3,
  baseDelayMs: 500,
  maxDelayMs: 8_000,
  maxRetryAfterMs: 60_000,
};

/** The wait a response asks for, in ms; undefined when it names none (or names nonsense). */
export function parseRetryAfter(headers: Headers, now: number = Date.now()): number | undefined {
  const ms = headers.get('retry-after-ms');
  if (ms !== null && /^\s*\d+(\.\d+)?\s*$/.test(ms)) return Number(ms);
  const value = headers.get('retry-after');
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (!Number.isNaN(date)) return Math.max(0, date - now);
  return undefined;
}

/** How long to wait before retry number `retry` (0-based). A provider-asked wait wins, capped. */
export function backoffDelay(retry: number, policy: RetryPolicy, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, policy.maxRetryAfterMs);
  const exp = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** retry);
  // Jitter in [50 %, 100 %] so a fleet of workers does not retry in lockstep.
  return Math.round(exp * (0.5 + Math.random() * 0.5));
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Poll intervals that start short and stretch out: a quick job is seen quickly, a slow one is not hammered. */
export class PollBackoff {
  private current: number;
  private readonly max: number;
  private readonly factor: number;

  constructor(initialMs: number, maxMs: number, factor = 1.5) {
    this.current = Math.max(1, initialMs);
    this.max = Math.max(this.current, maxMs);
    this.factor = factor;
  }

  next(): number {
    const value = this.current;
    this.current = Math.min(this.max, Math.round(this.current * this.factor));
    return value;
  }
}
