/**
 * Resumable, verified downloads from Hugging Face's file endpoint (`/{repo}/resolve/{rev}/{path}`).
 * Bytes go to `<dest>.part`; a cut connection is retried with `Range: bytes=<have>-`, a restart of
 * the command resumes the same way. The file is accepted only when its size and SHA-256 match what
 * the catalog says or, where the catalog says nothing, what the server says (`x-linked-size` and
 * `x-linked-etag`, which Hugging Face sets to the SHA-256 of LFS files). Then it is renamed into
 * place with a `<dest>.sha256` beside it, so a later pull skips it without rehashing.
 */
import { createReadStream, existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

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
  retryDelayMs?: number;
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
  constructor(message: string, code: DownloadError['code'], status?: number, cause?: unknown) {
    super(message, { cause });
    this.name = 'DownloadError';
    this.code = code;
    this.status = status;
  }
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
  const retries = opts.retries ?? 5;
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
  for (let attempt = 0; ; attempt++) {
    if (opts.signal?.aborted) throw new DownloadError(`download of ${spec.url} aborted`, 'aborted');
    const have = fileSize(part);
    try {
      const outcome = await fetchOnce(doFetch, spec, part, have, remote, opts);
      if (outcome === 'restart') {
        rmSync(part, { force: true });
        continue;
      }
      if (have > 0) resumedAny = true;
      break;
    } catch (err) {
      if (err instanceof DownloadError && err.code !== 'network') throw err;
      if (opts.signal?.aborted) throw new DownloadError(`download of ${spec.url} aborted`, 'aborted', undefined, err);
      if (attempt >= retries) {
        throw new DownloadError(`download of ${spec.url} failed after ${attempt + 1} attempts: ${(err as Error).message}`, 'network', undefined, err);
      }
      opts.onRetry?.(attempt + 1, err as Error);
      await sleep((opts.retryDelayMs ?? 500) * 2 ** Math.min(attempt, 5));
    }
  }

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
  let url = spec.url;
  let res: Response;
  // Follow redirects by hand: Hugging Face puts x-linked-etag/size on the 302 of LFS files, and the
  // token must not travel to the CDN the redirect points at.
  for (let hop = 0; ; hop++) {
    try {
      res = await doFetch(url, { headers, redirect: 'manual', signal: opts.signal });
    } catch (err) {
      throw new DownloadError(`${url}: ${(err as Error).message}`, 'network', undefined, err);
    }
    noteRemote(res, remote);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location && hop < 10) {
      await res.body?.cancel().catch(() => {});
      const next = new URL(location, url);
      if (next.origin !== new URL(url).origin) delete headers.authorization;
      url = next.toString();
      continue;
    }
    break;
  }
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
    throw new DownloadError(`${url}: HTTP ${res.status}`, 'network', res.status);
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
      writeSync(fd, chunk);
      received += chunk.byteLength;
      opts.onProgress?.({ received, total: remote.size ?? spec.size, resumedFrom: offset });
    }
  } catch (err) {
    if (err instanceof DownloadError) throw err;
    throw new DownloadError(`${url}: connection lost after ${received} bytes (${(err as Error).message})`, 'network', undefined, err);
  } finally {
    closeSync(fd);
  }
  const total = remote.size ?? spec.size;
  if (total !== undefined && received < total) throw new DownloadError(`${url}: connection closed at ${received} of ${total} bytes`, 'network');
  return 'done';
}

function noteRemote(res: Response, remote: Remote): void {
  remote.sha256 ??= headerEtag(res.headers.get('x-linked-etag')) ?? headerEtag(res.headers.get('etag'));
  const linked = Number(res.headers.get('x-linked-size') ?? NaN);
  if (Number.isFinite(linked) && linked >= 0) remote.size ??= linked;
}
