/**
 * Resumable, verified downloads from Hugging Face's file endpoint (`/{repo}/resolve/{rev}/{path}`).
 * Bytes go to `<dest>.part`; a cut connection is retried with `Range: bytes=<have>-`, a restart of
 * the command resumes the same way. The file is accepted only when its size and SHA-256 match what
 * the catalog says or, where the catalog says nothing, what the server says (`x-linked-size` and
 * `x-linked-etag`, which Hugging Face sets to the SHA-256 of LFS files). Then it is renamed into
 * place with a `<dest>.sha256` beside it, so a later pull skips it without rehashing.
 *
 * A server that stops sending (or never answers) is given up on after `idleTimeoutMs` without a byte,
 * not after undici's 300 s header timeout; retries back off exponentially up to `maxRetryDelayMs`;
 * a host name that does not resolve is not retried at all. Errors carry the real cause
 * (`getaddrinfo ENOTFOUND huggingface.co`, `connect ECONNREFUSED …`), not fetch's `fetch failed`.
 */
import { createReadStream, existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { networkCause } from '../net/network-cause.ts';

export interface DownloadSpec {
  url: string;
  dest: string;
  /** Expected byte size and SHA-256 (hex), when known. */
  size?: number;
  sha256?: string;
  headers?: Record<string, string>;
}

export interface DownloadProgress {
  received: number;
  total: number | undefined;
  /** Bytes that were already on disk when this attempt started. */
  resumedFrom: number;
}

export interface DownloadOptions {
  fetch?: typeof globalThis.fetch;
  /** Attempts per file after a network failure (default 5). */
  retries?: number;
  /** First retry delay (default 500 ms); each later one doubles, up to `maxRetryDelayMs` (default 8 s). */
  retryDelayMs?: number;
  maxRetryDelayMs?: number;
  /** Give up on an attempt after this long without a byte (waiting for the answer or mid-body; default 30 s). */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  onProgress?(p: DownloadProgress): void;
  /** Told about each retry (the CLI prints it). */
  onRetry?(attempt: number, error: Error): void;
}

export interface DownloadResult {
  size: number;
  sha256: string;
  /** `cached`: already complete on disk; `resumed`: continued a partial file. */
  status: 'downloaded' | 'resumed' | 'cached';
  /** Whether a SHA-256 was known to check against (catalog or server). */
  verified: boolean;
}

export class DownloadError extends Error {
  readonly code: 'not_found' | 'checksum' | 'size' | 'http' | 'network' | 'aborted';
  readonly status?: number;
  /** A network failure that retrying will not cure (a host name that does not resolve, a bad certificate). */
  readonly permanent: boolean;
  constructor(message: string, code: DownloadError['code'], status?: number, cause?: unknown, permanent = false) {
    super(message, { cause });
    this.name = 'DownloadError';
    this.code = code;
    this.status = status;
    this.permanent = permanent;
  }
}

export const DEFAULT_IDLE_TIMEOUT_MS = 30_000;

/** Error codes of failures a retry will not cure. */
const PERMANENT_CODES = new Set(['ENOTFOUND', 'ERR_INVALID_URL', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']);

function isPermanent(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | undefined, d = 0; e && d < 8; e = e.cause as typeof e, d++) {
    if (typeof e.code === 'string' && PERMANENT_CODES.has(e.code)) return true;
  }
  return false;
}

/** Thrown into an attempt when its idle timer fires. */
class IdleTimeout extends Error {
  constructor(ms: number) {
    super(`no data for ${Math.round(ms / 1000)} s`);
    this.name = 'IdleTimeout';
  }
}

/**
 * One attempt's abort signal and its idle timer: `touch()` on every sign of life; when `ms` pass
 * without one, the attempt is aborted with an IdleTimeout.
 */
function attemptSignal(outer: AbortSignal | undefined, ms: number): { signal: AbortSignal; touch(): void; idle(): IdleTimeout | undefined; done(): void } {
  const controller = new AbortController();
  let fired: IdleTimeout | undefined;
  const timer = setTimeout(() => {
    fired = new IdleTimeout(ms);
    controller.abort(fired);
  }, ms);
  return {
    signal: outer ? AbortSignal.any([outer, controller.signal]) : controller.signal,
    touch: () => void timer.refresh(),
    idle: () => fired,
    done: () => clearTimeout(timer),
  };
}

/** Runs `fn` again after network failures, backing off exponentially up to a bound. */
async function withRetries<T>(url: string, opts: DownloadOptions, fn: (attempt: number) => Promise<T>): Promise<T> {
  const retries = opts.retries ?? 5;
  for (let attempt = 0; ; attempt++) {
    if (opts.signal?.aborted) throw new DownloadError(`download of ${url} aborted`, 'aborted');
    try {
      return await fn(attempt);
    } catch (err) {
      if (err instanceof DownloadError && err.code !== 'network') throw err;
      if (opts.signal?.aborted) throw new DownloadError(`download of ${url} aborted`, 'aborted', undefined, err);
      const permanent = err instanceof DownloadError && err.permanent;
      if (permanent || attempt >= retries) {
        const tries = attempt + 1;
        throw new DownloadError(`${(err as Error).message}${tries > 1 ? ` (gave up after ${tries} attempts)` : ''}`, 'network', undefined, err, permanent);
      }
      opts.onRetry?.(attempt + 1, err as Error);
      await sleep(Math.min(opts.maxRetryDelayMs ?? 8000, (opts.retryDelayMs ?? 500) * 2 ** attempt), undefined, { signal: opts.signal }).catch(() => {});
    }
  }
}

/** A fetch failure as a DownloadError naming the host and the real cause. */
function fetchFailure(url: string, err: unknown, idle: IdleTimeout | undefined): DownloadError {
  if (idle) return new DownloadError(`${new URL(url).origin}: ${idle.message} (idle timeout)`, 'network', undefined, err);
  const cause = networkCause(err);
  return new DownloadError(`${new URL(url).origin}: ${cause.message}`, 'network', undefined, err, isPermanent(err));
}

const SHA256_HEX = /^[0-9a-f]{64}$/;

function headerEtag(v: string | null): string | undefined {
  if (!v) return undefined;
  const s = v.replace(/^W\//, '').replace(/"/g, '').trim().toLowerCase();
  return SHA256_HEX.test(s) ? s : undefined;
}

function fileSize(path: string): number {
  return existsSync(path) ? statSync(path).size : 0;
}

async function hashFile(path: string, hash: Hash): Promise<void> {
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
}

/** Server facts about the file, from the first response of an attempt (redirects included). */
interface Remote {
  sha256?: string;
  size?: number;
}

export async function downloadFile(spec: DownloadSpec, opts: DownloadOptions = {}): Promise<DownloadResult> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  const part = `${spec.dest}.part`;
  const sidecar = `${spec.dest}.sha256`;
  const expectSha = spec.sha256?.toLowerCase();

  if (existsSync(spec.dest) && existsSync(sidecar)) {
    const sha = readFileSync(sidecar, 'utf8').trim();
    const size = fileSize(spec.dest);
    if ((!expectSha || expectSha === sha) && (spec.size === undefined || spec.size === size)) {
      return { size, sha256: sha, status: 'cached', verified: true };
    }
  }
  mkdirSync(dirname(spec.dest), { recursive: true });

  const remote: Remote = {};
  let resumedAny = false;
  await withRetries(spec.url, opts, async () => {
    for (let restarts = 0; ; restarts++) {
      const have = fileSize(part);
      const outcome = await fetchOnce(doFetch, spec, part, have, remote, opts);
      if (outcome === 'restart') {
        rmSync(part, { force: true });
        if (restarts >= 2) throw new DownloadError(`${spec.url}: the server neither resumes nor restarts the download`, 'http');
        continue;
      }
      if (have > 0) resumedAny = true;
      return;
    }
  });

  const size = fileSize(part);
  const wantSize = spec.size ?? remote.size;
  if (wantSize !== undefined && size !== wantSize) {
    rmSync(part, { force: true });
    throw new DownloadError(`${spec.url}: got ${size} bytes, expected ${wantSize}; the partial file was removed, run the pull again`, 'size');
  }
  const hash = createHash('sha256');
  await hashFile(part, hash);
  const sha = hash.digest('hex');
  const wantSha = expectSha ?? remote.sha256;
  if (wantSha && sha !== wantSha) {
    rmSync(part, { force: true });
    throw new DownloadError(`${spec.url}: checksum mismatch (sha256 ${sha}, expected ${wantSha}); the file was discarded`, 'checksum');
  }
  rmSync(spec.dest, { force: true });
  renameSync(part, spec.dest);
  writeFileSync(sidecar, `${sha}\n`);
  return { size, sha256: sha, status: resumedAny ? 'resumed' : 'downloaded', verified: Boolean(wantSha) };
}

/**
 * One HTTP attempt, appending to the part file. Returns `restart` when the server will not resume
 * (no 206, or the part is longer than the file).
 */
async function fetchOnce(
  doFetch: typeof globalThis.fetch,
  spec: DownloadSpec,
  part: string,
  have: number,
  remote: Remote,
  opts: DownloadOptions,
): Promise<'done' | 'restart'> {
  const headers: Record<string, string> = { ...spec.headers, 'accept-encoding': 'identity' };
  if (have > 0) headers.range = `bytes=${have}-`;
  const timer = attemptSignal(opts.signal, opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
  try {
    const { res, url } = await request(doFetch, spec.url, headers, 'GET', remote, timer);
    return await readAnswer(res, url, spec, part, have, remote, opts, timer);
  } finally {
    timer.done();
  }
}

/**
 * Sends one request, following redirects by hand: Hugging Face puts x-linked-etag/size on the 302 of
 * LFS files, and the token must not travel to the CDN the redirect points at.
 */
async function request(
  doFetch: typeof globalThis.fetch,
  start: string,
  headers: Record<string, string>,
  method: 'GET' | 'HEAD',
  remote: Remote,
  timer: ReturnType<typeof attemptSignal>,
): Promise<{ res: Response; url: string }> {
  let url = start;
  for (let hop = 0; ; hop++) {
    let res: Response;
    try {
      res = await doFetch(url, { method, headers, redirect: 'manual', signal: timer.signal });
    } catch (err) {
      throw fetchFailure(url, err, timer.idle());
    }
    timer.touch();
    noteRemote(res, remote);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location && hop < 10) {
      await res.body?.cancel().catch(() => {});
      const next = new URL(location, url);
      if (next.origin !== new URL(url).origin) delete headers.authorization;
      url = next.toString();
      continue;
    }
    return { res, url };
  }
}

async function readAnswer(
  res: Response,
  url: string,
  spec: DownloadSpec,
  part: string,
  have: number,
  remote: Remote,
  opts: DownloadOptions,
  timer: ReturnType<typeof attemptSignal>,
): Promise<'done' | 'restart'> {
  if (res.status === 404 || res.status === 401 || res.status === 403) {
    await res.body?.cancel().catch(() => {});
    const hint = res.status === 404 ? 'not found' : 'refused (gated repository? set HF_TOKEN)';
    throw new DownloadError(`${spec.url}: ${res.status} ${hint}`, 'not_found', res.status);
  }
  if (res.status === 416) {
    await res.body?.cancel().catch(() => {});
    const total = remote.size ?? spec.size;
    return total !== undefined && have === total ? 'done' : 'restart';
  }
  if (res.status >= 500 || res.status === 429 || res.status === 408) {
    await res.body?.cancel().catch(() => {});
    throw new DownloadError(`${new URL(url).origin}: HTTP ${res.status}`, 'network', res.status);
  }
  if (res.status !== 200 && res.status !== 206) {
    await res.body?.cancel().catch(() => {});
    throw new DownloadError(`${url}: HTTP ${res.status}`, 'http', res.status);
  }
  let offset = 0;
  if (res.status === 206) {
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
    if (!m || Number(m[1]) !== have) {
      await res.body?.cancel().catch(() => {});
      return 'restart';
    }
    offset = have;
    if (m[3] !== '*') remote.size ??= Number(m[3]);
  } else if (have > 0) {
    // The server sent the whole file: start over rather than append.
    rmSync(part, { force: true });
  }
  if (res.status === 200) {
    const len = Number(res.headers.get('content-length') ?? NaN);
    if (Number.isFinite(len)) remote.size ??= len;
  }
  const fd = openSync(part, offset > 0 ? 'a' : 'w');
  let received = offset;
  try {
    if (!res.body) throw new DownloadError(`${url}: empty body`, 'network');
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      timer.touch();
      writeSync(fd, chunk);
      received += chunk.byteLength;
      opts.onProgress?.({ received, total: remote.size ?? spec.size, resumedFrom: offset });
    }
  } catch (err) {
    if (err instanceof DownloadError) throw err;
    const why = timer.idle() ? `${timer.idle()!.message} (idle timeout)` : networkCause(err).message;
    throw new DownloadError(`${new URL(url).origin}: connection lost after ${received} bytes: ${why}`, 'network', undefined, err);
  } finally {
    closeSync(fd);
  }
  const total = remote.size ?? spec.size;
  if (total !== undefined && received < total) throw new DownloadError(`${new URL(url).origin}: connection closed at ${received} of ${total} bytes`, 'network');
  return 'done';
}

function noteRemote(res: Response, remote: Remote): void {
  remote.sha256 ??= headerEtag(res.headers.get('x-linked-etag')) ?? headerEtag(res.headers.get('etag'));
  const linked = Number(res.headers.get('x-linked-size') ?? NaN);
  if (Number.isFinite(linked) && linked >= 0) remote.size ??= linked;
}

export interface RemoteFile {
  /** False when the server answered 404. */
  exists: boolean;
  size?: number;
  sha256?: string;
}

/**
 * What the server says about a file without its body (a HEAD, redirects followed by hand as for the
 * download), so a pull can show one percentage over all its files. Retried like a download; a 401 or
 * 403 is an error, a 404 is `exists: false`.
 */
export async function probeFile(spec: Pick<DownloadSpec, 'url' | 'headers'>, opts: DownloadOptions = {}): Promise<RemoteFile> {
  const doFetch = opts.fetch ?? globalThis.fetch;
  return withRetries(spec.url, opts, async () => {
    const remote: Remote = {};
    const timer = attemptSignal(opts.signal, opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
    try {
      const { res, url } = await request(doFetch, spec.url, { ...spec.headers, 'accept-encoding': 'identity' }, 'HEAD', remote, timer);
      await res.body?.cancel().catch(() => {});
      if (res.status === 404) return { exists: false };
      if (res.status === 401 || res.status === 403) throw new DownloadError(`${spec.url}: ${res.status} refused (gated repository? set HF_TOKEN)`, 'not_found', res.status);
      if (res.status >= 500 || res.status === 429 || res.status === 408) throw new DownloadError(`${new URL(url).origin}: HTTP ${res.status}`, 'network', res.status);
      // A server without HEAD support: the size comes with the download.
      if (res.status !== 200) return { exists: true };
      const len = Number(res.headers.get('content-length') ?? NaN);
      return { exists: true, size: remote.size ?? (Number.isFinite(len) ? len : undefined), sha256: remote.sha256 };
    } finally {
      timer.done();
    }
  });
}
