/**
 * ImageStorage on a local folder: the default for a single-host install.
 *
 * Objects are plain files under `dir`, named by their key. Writes are atomic (temp file, fsync,
 * rename), so a crash never leaves a half-written image behind a valid key. URLs point at the API's
 * own `/files/*` route and carry an expiry and an HMAC signature; that route checks them with
 * `verifyFileSignature` before serving anything, so no API key is needed to fetch an image.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { mkdir, open, readFile, rm, stat, statfs, unlink, access } from 'node:fs/promises';
import path from 'node:path';
import type { ImageStorage, StoredObject } from './image-storage.ts';
import { FileWriter } from './file-writer.ts';

/** One pool of writer threads per process, started on the first write. */
let writer: FileWriter | undefined;

export interface LocalStorageOptions {
  /** Root folder; created on first write (or ping) when missing. */
  dir: string;
  /** Absolute base URL of the API as clients reach it, e.g. `https://img.example.com`. */
  publicBaseUrl: string | (() => string);
  /** HMAC key for `/files/*` URLs. Changing it invalidates every URL handed out before. */
  signingSecret: string | Buffer;
}

export class InvalidStorageKeyError extends Error {
  readonly key: string;
  constructor(key: string, reason: string) {
    super(`Invalid storage key ${JSON.stringify(key)}: ${reason}`);
    this.name = 'InvalidStorageKeyError';
    this.key = key;
  }
}

/**
 * Throws InvalidStorageKeyError unless `key` is a safe relative path: `/`-separated, no empty,
 * `.` or `..` segments, no `..` anywhere, no backslashes, no NUL or other control characters.
 */
export function assertValidKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new InvalidStorageKeyError(String(key), 'empty');
  if (key.length > 1024) throw new InvalidStorageKeyError(key.slice(0, 64) + '…', 'longer than 1024 characters');
  if (key.startsWith('/')) throw new InvalidStorageKeyError(key, 'must be relative');
  if (key.includes('\\')) throw new InvalidStorageKeyError(key, 'contains a backslash');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) throw new InvalidStorageKeyError(key, 'contains a control character');
  if (key.includes('..')) throw new InvalidStorageKeyError(key, 'contains ".."');
  for (const segment of key.split('/')) {
    if (segment === '') throw new InvalidStorageKeyError(key, 'contains an empty path segment');
    if (segment === '.') throw new InvalidStorageKeyError(key, 'contains a "." segment');
  }
}

const CONTENT_TYPES: Record<string, string> = {
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.webp': 'image/webp',
};

/** Media type from a key's extension; application/octet-stream for anything unknown. */
export function contentTypeForKey(key: string): string {
  return CONTENT_TYPES[path.posix.extname(key).toLowerCase()] ?? 'application/octet-stream';
}

/** base64url HMAC-SHA256 of `key + "\n" + expires`. */
export function signFileKey(secret: string | Buffer, key: string, expires: number): string {
  return createHmac('sha256', secret).update(`${key}\n${expires}`).digest('base64url');
}

/**
 * True when `signature` is the valid signature of (`key`, `expires`) and `expires` (unix seconds)
 * has not passed. `expires` may be the raw query-string value; anything but a plain non-negative
 * integer is refused. The comparison is constant-time.
 */
export function verifyFileSignature(
  secret: string | Buffer,
  key: string,
  expires: string | number | undefined | null,
  signature: string | undefined | null,
  nowSeconds: number = Math.floor(Date.now() / 1000),
): boolean {
  if (typeof signature !== 'string' || signature.length === 0) return false;
  let exp: number;
  if (typeof expires === 'number') exp = expires;
  else if (typeof expires === 'string' && /^\d{1,15}$/.test(expires)) exp = Number(expires);
  else return false;
  if (!Number.isSafeInteger(exp) || exp < 0) return false;
  if (nowSeconds > exp) return false;
  const expected = Buffer.from(signFileKey(secret, key, exp), 'utf8');
  const given = Buffer.from(signature, 'utf8');
  if (given.length !== expected.length) return false;
  return timingSafeEqual(given, expected);
}

/** Bytes available to an unprivileged user on the filesystem holding `dir`. */
export async function freeDiskBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return Number(s.bavail) * Number(s.bsize);
}

function errCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

function checkBaseUrl(url: string): void {
  let base: URL;
  try {
    base = new URL(url);
  } catch {
    throw new Error(`LocalStorage: publicBaseUrl must be an absolute URL, got ${JSON.stringify(url)}`);
  }
  if (base.protocol !== 'http:' && base.protocol !== 'https:') {
    throw new Error(`LocalStorage: publicBaseUrl must be http(s), got ${JSON.stringify(url)}`);
  }
}

export class LocalStorage implements ImageStorage {
  readonly kind = 'local' as const;
  readonly dir: string;
  readonly #base: () => string;
  readonly #secret: string | Buffer;

  constructor(options: LocalStorageOptions) {
    if (!options.dir) throw new Error('LocalStorage: dir is required');
    if (!options.signingSecret || options.signingSecret.length === 0) {
      throw new Error('LocalStorage: signingSecret must not be empty');
    }
    // A function lets the server supply its address once it listens (port 0 in tests).
    if (typeof options.publicBaseUrl === 'string') checkBaseUrl(options.publicBaseUrl);
    this.dir = path.resolve(options.dir);
    const base = options.publicBaseUrl;
    this.#base = typeof base === 'string' ? () => base : base;
    this.#secret = options.signingSecret;
  }

  get publicBaseUrl(): string {
    return this.#base().replace(/\/+$/, '');
  }

  /** Absolute file path for a key (validated, and checked to stay inside `dir`). */
  pathFor(key: string): string {
    assertValidKey(key);
    const full = path.resolve(this.dir, ...key.split('/'));
    if (!full.startsWith(this.dir + path.sep)) throw new InvalidStorageKeyError(key, 'escapes the storage folder');
    return full;
  }

  async put(key: string, data: Uint8Array, _contentType: string): Promise<void> {
    const target = this.pathFor(key);
    const folder = path.dirname(target);
    // Dot-prefixed so a listing never mistakes it for an image; random so concurrent puts of the
    // same key don't share a temp file (last rename wins, each rename is atomic). The writer threads
    // create the folder, write, fsync and rename (file-writer.ts).
    const tmp = path.join(folder, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
    await (writer ??= new FileWriter()).write(folder, tmp, target, data);
  }

  async get(key: string): Promise<StoredObject | undefined> {
    const file = this.pathFor(key);
    try {
      const data = await readFile(file);
      return { data, contentType: contentTypeForKey(key) };
    } catch (err) {
      const code = errCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return undefined;
      throw err;
    }
  }

  /**
   * A stored file to send as it is: its path, size and type, or undefined when there is none. What
   * /files streams from disk (with ranges) instead of reading whole images into memory.
   */
  async file(key: string): Promise<{ path: string; size: number; contentType: string } | undefined> {
    const file = this.pathFor(key);
    try {
      const info = await stat(file);
      if (!info.isFile()) return undefined;
      return { path: file, size: info.size, contentType: contentTypeForKey(key) };
    } catch (err) {
      const code = errCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    const file = this.pathFor(key);
    try {
      await unlink(file);
    } catch (err) {
      const code = errCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw err;
    }
  }

  async url(key: string, expiresInSeconds: number): Promise<string> {
    assertValidKey(key);
    if (!Number.isFinite(expiresInSeconds) || expiresInSeconds <= 0) {
      throw new RangeError(`LocalStorage.url: expiresInSeconds must be a positive number, got ${expiresInSeconds}`);
    }
    const expires = Math.floor(Date.now() / 1000) + Math.ceil(expiresInSeconds);
    const signature = signFileKey(this.#secret, key, expires);
    const encodedKey = key.split('/').map(encodeURIComponent).join('/');
    return `${this.publicBaseUrl}/files/${encodedKey}?expires=${expires}&signature=${signature}`;
  }

  /** Checks a `/files/*` request's signature with this store's secret. */
  verify(key: string, expires: string | number | undefined | null, signature: string | undefined | null, nowSeconds?: number): boolean {
    return verifyFileSignature(this.#secret, key, expires, signature, nowSeconds);
  }

  async ping(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await access(this.dir, fsConstants.W_OK);
    // access() trusts permission bits; a real write also catches read-only mounts and full disks.
    const probe = path.join(this.dir, `.ping.${randomBytes(6).toString('hex')}.tmp`);
    try {
      const fh = await open(probe, 'wx', 0o600);
      await fh.close();
    } finally {
      await rm(probe, { force: true });
    }
  }

  /** Free bytes on the filesystem holding the storage folder (for a "low disk" readiness check). */
  async freeDiskBytes(): Promise<number> {
    await mkdir(this.dir, { recursive: true });
    return freeDiskBytes(this.dir);
  }
}
