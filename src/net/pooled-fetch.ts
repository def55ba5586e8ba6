/**
 * A `fetch` for API calls to a configured endpoint (an OpenAI-compatible images API), over node:http
 * with keep-alive connection pools.
 *
 * Node's global fetch (undici behind WHATWG streams) costs a few hundred microseconds of main-thread
 * time per call; a small JSON request answered by a small JSON body needs a fraction of that. The
 * answer is read whole (up to `maxBodyBytes`) and handed back as a standard `Response`, so SDKs that
 * take a `fetch` option work unchanged; a `text/event-stream` answer is streamed instead. Anything this does not handle plainly (a streamed or
 * multipart request body, an unusual method) goes to the global fetch instead.
 *
 * Redirects are not followed (an API endpoint answers directly); use it only for operator-configured
 * URLs, never for user-supplied ones (those go through the SSRF guard in src/net/ssrf.ts).
 */
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';

export interface PooledFetchOptions {
  /** Largest answer read into memory; a bigger one fails the call. Default 64 MiB. */
  maxBodyBytes?: number;
  /** Idle keep-alive sockets kept per host. Default 64. */
  maxFreeSockets?: number;
}

type FetchLike = typeof globalThis.fetch;

const SIMPLE_METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD']);

function abortError(signal: AbortSignal): unknown {
  const reason: unknown = signal.reason;
  if (reason instanceof Error && reason.name === 'AbortError') return reason;
  return new DOMException(reason instanceof Error ? reason.message : 'This operation was aborted', 'AbortError');
}

/** The body as bytes, or undefined when it is not a plain one (streams, FormData, Blob…). */
function plainBody(body: unknown): Buffer | string | null | undefined {
  if (body === undefined || body === null) return null;
  if (typeof body === 'string') return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  return undefined;
}

function headerRecord(init: RequestInit["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  if (!init) return out;
  if (init instanceof Headers || Array.isArray(init)) {
    for (const [k, v] of init instanceof Headers ? init.entries() : init) out[k.toLowerCase()] = v;
    return out;
  }
  for (const [k, v] of Object.entries(init)) if (v !== undefined && v !== null) out[k.toLowerCase()] = String(v);
  return out;
}

function headersOf(raw: string[]): Headers {
  const headers = new Headers();
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  return headers;
}

export function createPooledFetch(options: PooledFetchOptions = {}): FetchLike & { close(): void } {
  const maxBody = options.maxBodyBytes ?? 64 * 1024 * 1024;
  const agentOpts = { keepAlive: true, maxFreeSockets: options.maxFreeSockets ?? 64, scheduling: 'lifo' as const };
  const agents = { 'http:': new http.Agent(agentOpts), 'https:': new https.Agent(agentOpts) };

  const pooledFetch = ((input: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    const method = (init.method ?? 'GET').toUpperCase();
    const body = plainBody(init.body);
    const url = typeof input === 'string' ? new URL(input) : input instanceof URL ? input : undefined;
    if (!url || body === undefined || !SIMPLE_METHODS.has(method) || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      return globalThis.fetch(input, init);
    }
    const signal = init.signal ?? undefined;
    if (signal?.aborted) return Promise.reject(abortError(signal));

    return new Promise<Response>((resolve, reject) => {
      const headers = headerRecord(init.headers);
      if (body !== null) headers['content-length'] = String(Buffer.byteLength(body));
      const mod = url.protocol === 'https:' ? https : http;
      const req = mod.request(url, { method, headers, agent: agents[url.protocol as 'http:' | 'https:'] });
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      const onAbort = () => {
        const err = abortError(signal!);
        req.destroy(err as Error);
        fail(err);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err) => fail(Object.assign(new TypeError('fetch failed'), { cause: err })));
      req.on('response', (res) => {
        const status = res.statusCode ?? 502;
        if (status >= 200 && status < 300 && /^text\/event-stream/i.test(String(res.headers['content-type'] ?? ''))) {
          // A stream of events (OpenAI's `stream: true`) is handed over as it arrives, not read whole;
          // an abort from now on destroys the request, which ends the body with an error.
          settled = true;
          res.once('close', () => signal?.removeEventListener('abort', onAbort));
          try {
            const response = new Response(Readable.toWeb(res) as ReadableStream<Uint8Array>, { status, statusText: res.statusMessage ?? '', headers: headersOf(res.rawHeaders) });
            Object.defineProperty(response, 'url', { value: url.href });
            resolve(response);
          } catch (err) {
            req.destroy();
            reject(err);
          }
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBody) {
            res.destroy();
            fail(new TypeError(`fetch failed: the answer from ${url.host} is larger than ${maxBody} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', (err) => fail(Object.assign(new TypeError('fetch failed'), { cause: err })));
        res.on('end', () => {
          if (settled) return;
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          const responseHeaders = headersOf(res.rawHeaders);
          const noBody = method === 'HEAD' || status === 204 || status === 205 || status === 304;
          const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
          try {
            const response = new Response(noBody ? null : buf, { status: status < 200 || status > 599 ? 502 : status, statusText: res.statusMessage ?? '', headers: responseHeaders });
            Object.defineProperty(response, 'url', { value: url.href });
            resolve(response);
          } catch (err) {
            reject(err);
          }
        });
      });
      req.end(body ?? undefined);
    });
  }) as FetchLike & { close(): void };
  pooledFetch.close = () => {
    agents['http:'].destroy();
    agents['https:'].destroy();
  };
  return pooledFetch;
}
