/** What actually went wrong under a failed fetch. */

/**
 * The innermost useful message of a network error: fetch throws `TypeError('fetch failed')` with the
 * system error in `cause` (`getaddrinfo ENOTFOUND huggingface.co`), or an AggregateError of one error
 * per address tried (`connect ECONNREFUSED ::1:443`, `… 127.0.0.1:443`), whose own message is empty.
 */
export function networkCause(err: unknown): { message: string; code?: string } {
  let best: { message: string; code?: string } = { message: err instanceof Error ? err.message : String(err) };
  let e: unknown = err;
  for (let depth = 0; e && depth < 8; depth++) {
    const x = e as { message?: unknown; code?: unknown; errors?: unknown; cause?: unknown };
    const code = typeof x.code === 'string' ? x.code : undefined;
    const message = typeof x.message === 'string' ? x.message : '';
    if (Array.isArray(x.errors) && x.errors.length) {
      const inner = x.errors.map((i) => networkCause(i).message).filter(Boolean);
      best = { message: [...new Set(inner)].join('; ') || message || code || best.message, code: code ?? best.code };
      break;
    }
    if (message && message !== 'fetch failed' && !/^(terminated|other side closed)$/.test(message)) best = { message, code: code ?? best.code };
    else if (code && !message) best = { message: code, code };
    else if (code) best = { ...best, code };
    e = x.cause;
  }
  return best;
}
