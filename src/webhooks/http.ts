/**
 * One webhook POST over node:http(s), with the SSRF guard at connect time: IP-literal hosts are
 * checked before the request, names through a `lookup` that refuses non-public answers (so DNS
 * rebinding between submission and delivery is caught). No redirects are followed (a 3xx is just a
 * non-2xx answer), no connection is reused, and the whole exchange has one deadline.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { UnsafeUrlError, assertPublicHost, guardedLookup, urlHost } from '../net/ssrf.ts';
import type { GuardOptions } from '../net/ssrf.ts';

export interface PostOptions extends GuardOptions {
  timeoutMs: number;
  /** Most response-body bytes read before the connection is dropped (default 64 KiB). */
  maxResponseBytes?: number;
  /** Aborts the exchange (a stopping process); the result then has `aborted`. */
  signal?: AbortSignal;
}

export interface PostResult {
  /** The HTTP status when an answer came. */
  statusCode?: number;
  /** Why no answer came (connection error, timeout, refused address). */
  error?: string;
  /** The guard refused the destination: retrying cannot help. */
  refused?: boolean;
  /** Cut short by `signal`: the attempt does not count. */
  aborted?: boolean;
  /** From a `retry-after` header (seconds or an HTTP date), in ms from now. */
  retryAfterMs?: number;
  durationMs: number;
}

export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  const trimmed = v.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

export function postWebhook(target: string, body: string, headers: Record<string, string>, opts: PostOptions): Promise<PostResult> {
  const started = performance.now();
  const elapsed = () => performance.now() - started;
  let url: URL;
  try {
    url = new URL(target);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new UnsafeUrlError('protocol', `scheme "${url.protocol}" is not allowed`);
    assertPublicHost(urlHost(url), opts);
  } catch (err) {
    const refused = err instanceof UnsafeUrlError;
    return Promise.resolve({ error: refused ? `refused: ${(err as Error).message}` : `invalid URL: ${(err as Error).message}`, refused, durationMs: elapsed() });
  }
  const maxBytes = opts.maxResponseBytes ?? 64 * 1024;
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;

  return new Promise<PostResult>((resolve) => {
    let settled = false;
    let response: IncomingMessage | undefined;
    const onAbort = () => finish({ error: 'aborted: easel is stopping', aborted: true });
    const finish = (result: Omit<PostResult, 'durationMs'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      resolve({ ...result, durationMs: elapsed() });
      req.destroy();
    };
    const req = send(url, {
      method: 'POST',
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      agent: false,
      lookup: guardedLookup(opts),
    });
    const timer = setTimeout(() => {
      // An answer's status counts even if its body is slow; no answer at all is a timeout.
      if (response) finish(answer(response));
      else finish({ error: `timed out after ${Math.round(opts.timeoutMs)} ms` });
    }, opts.timeoutMs);

    const answer = (res: IncomingMessage): Omit<PostResult, 'durationMs'> => {
      const code = res.statusCode ?? 0;
      const throttled = code === 429 || code === 503;
      const retryAfterMs = throttled ? parseRetryAfter(res.headers['retry-after']) : undefined;
      return { statusCode: code, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) };
    };

    req.on('response', (res) => {
      response = res;
      // Read (and drop) a bounded body so the receiver sees a clean exchange.
      let seen = 0;
      res.on('data', (chunk: Buffer) => {
        seen += chunk.length;
        if (seen > maxBytes) finish(answer(res));
      });
      res.on('end', () => finish(answer(res)));
      res.on('error', () => finish(answer(res)));
      res.on('close', () => finish(answer(res)));
    });
    req.on('error', (err) => {
      if (response) return finish(answer(response));
      if (err instanceof UnsafeUrlError) return finish({ error: `refused: ${err.message}`, refused: true });
      const code = (err as NodeJS.ErrnoException).code;
      finish({ error: code && !err.message.includes(code) ? `${code}: ${err.message}` : err.message });
    });
    if (opts.signal?.aborted) return onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    req.end(body);
  });
}
