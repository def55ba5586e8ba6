/**
 * HTTP to a pool host. Transport failures and 5xx become {@link HostFailure} (the call may run on
 * another host); a caller's abort becomes an `aborted` BackendError; other statuses are returned
 * for the caller to read.
 */
import { BackendError } from '../image-backend.ts';
import { HostFailure } from './host-pool.ts';

export interface HostHttp {
  backendName: string;
  /** Default limit of one request (ms). */
  timeoutMs: number;
  /** `user:pass` for HTTP Basic. */
  basicAuth?: string;
}

export interface HostRequestInit {
  method?: string;
  /** JSON body (sets content-type). */
  json?: unknown;
  body?: string | FormData | Uint8Array;
  signal?: AbortSignal;
  /** Overrides the default limit; `null` for none (a blocking generation call). */
  timeoutMs?: number | null;
  headers?: Record<string, string>;
}

export async function hostRequest(http: HostHttp, host: { name: string; url: string }, path: string, init: HostRequestInit = {}): Promise<Response> {
  const headers: Record<string, string> = { ...init.headers };
  if (http.basicAuth) headers['authorization'] = `Basic ${Buffer.from(http.basicAuth).toString('base64')}`;
  let body = init.body;
  if (init.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(init.json);
  }
  const limit = init.timeoutMs === null ? undefined : (init.timeoutMs ?? http.timeoutMs);
  const signals = [init.signal, limit !== undefined ? AbortSignal.timeout(limit) : undefined].filter((s): s is AbortSignal => !!s);
  let res: Response;
  try {
    res = await fetch(`${host.url}${path}`, {
      method: init.method ?? (body !== undefined ? 'POST' : 'GET'),
      headers,
      body,
      signal: signals.length ? AbortSignal.any(signals) : undefined,
    });
  } catch (err) {
    if (init.signal?.aborted) throw new BackendError(`Call to backend "${http.backendName}" was aborted`, { code: 'aborted', cause: err });
    if (err instanceof Error && err.name === 'TimeoutError') {
      throw new HostFailure(`host ${host.name} did not answer ${path} within ${Math.round((limit ?? 0) / 1000)} s`, { cause: err });
    }
    throw new HostFailure(`host ${host.name} is unreachable (${path}): ${transportMessage(err)}`, { cause: err });
  }
  if (res.status >= 500) {
    const text = await res.text().catch(() => '');
    throw new HostFailure(`host ${host.name} answered ${res.status} to ${path}${text ? `: ${text.slice(0, 300)}` : ''}`, {
      hostDown: false,
      status: res.status,
    });
  }
  return res;
}

/** A response body as JSON, or undefined when empty or not JSON. */
export async function readJson(res: Response): Promise<unknown> {
  const text = await res.text().catch(() => '');
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Reads a response body whole; a failure mid-body is the host's. */
export async function readBytes(res: Response, host: { name: string }, what: string, maxBytes = 100 * 1024 * 1024): Promise<Uint8Array> {
  const declared = Number(res.headers.get('content-length'));
  if (declared > maxBytes) throw new BackendError(`host ${host.name} returned ${what} over ${maxBytes} bytes`, { code: 'backend_error' });
  try {
    const buf = new Uint8Array(await res.arrayBuffer());
    if (buf.byteLength > maxBytes) throw new BackendError(`host ${host.name} returned ${what} over ${maxBytes} bytes`, { code: 'backend_error' });
    return buf;
  } catch (err) {
    if (err instanceof BackendError) throw err;
    throw new HostFailure(`host ${host.name} broke off while sending ${what}: ${transportMessage(err)}`, { cause: err });
  }
}

export function transportMessage(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = err.cause as { code?: string; message?: string } | undefined;
  if (cause?.code) return `${cause.code}${cause.message ? ` (${cause.message})` : ''}`;
  return cause?.message ?? err.message;
}

/** What the bytes are, by magic number. */
export function sniffImageType(data: Uint8Array): string | undefined {
  if (data.length >= 8 && data[0] === 0x89 && data[1] === 0x50 && data[2] === 0x4e && data[3] === 0x47) return 'image/png';
  if (data.length >= 3 && data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff) return 'image/jpeg';
  if (data.length >= 12 && data[0] === 0x52 && data[1] === 0x49 && data[2] === 0x46 && data[3] === 0x46 && data[8] === 0x57 && data[9] === 0x45) {
    return 'image/webp';
  }
  return undefined;
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
