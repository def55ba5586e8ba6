/**
 * API keys: random 256-bit secrets shown once, stored only as SHA-256 (a slow hash adds nothing for
 * keys with this much entropy, and a fast one keeps auth off the latency budget).
 */
import { createHash, randomBytes } from 'node:crypto';
import { newKeyId } from '../core/ids.ts';
import type { ApiKey, KeyStore } from '../store/job-store.ts';

const KEY_PREFIX = 'easel_sk_';

export function generateKeySecret(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

export function hashKey(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function displayPrefix(secret: string): string {
  return secret.slice(0, KEY_PREFIX.length + 4);
}

export async function createApiKey(
  keys: KeyStore,
  opts: { name: string; admin?: boolean; secret?: string },
): Promise<{ key: ApiKey; secret: string }> {
  const secret = opts.secret ?? generateKeySecret();
  const key = await keys.createKey({
    id: newKeyId(),
    name: opts.name,
    prefix: displayPrefix(secret),
    hash: hashKey(secret),
    admin: opts.admin ?? false,
  });
  return { key, secret };
}

/**
 * On a database with no keys, creates the admin key (from config or random). Returns the secret only
 * when it was created here and must be printed once.
 */
export async function ensureAdminKey(keys: KeyStore, configured?: string): Promise<string | undefined> {
  if ((await keys.countKeys()) > 0) return undefined;
  try {
    const { secret } = await createApiKey(keys, { name: 'admin', admin: true, secret: configured });
    // The operator chose a configured key: it is theirs already and is never printed.
    return configured ? undefined : secret;
  } catch (err) {
    // Several API instances starting at once on a fresh shared database all see no keys; with a
    // configured admin key all but the first then hit the unique hash. Someone made it: carry on.
    if ((await keys.countKeys()) > 0) return undefined;
    throw err;
  }
}

/**
 * Resolves bearer secrets to keys with a short cache: auth runs on every request. A revocation
 * clears every API process's cache at once through the event bus (`key_revoked`); the cache's 1 s
 * life bounds it where no bus reaches (a CLI revoke on an embedded install without Redis).
 */
export class KeyAuthenticator {
  private readonly cache = new Map<string, { key: ApiKey | undefined; until: number }>();
  private readonly keys: KeyStore;
  private readonly ttlMs: number;

  constructor(keys: KeyStore, ttlMs = 1000) {
    this.keys = keys;
    this.ttlMs = ttlMs;
  }

  async authenticate(secret: string): Promise<ApiKey | undefined> {
    const hash = hashKey(secret);
    const now = Date.now();
    const hit = this.cache.get(hash);
    if (hit && hit.until > now) return hit.key;
    const key = await this.keys.findByHash(hash);
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(hash, { key, until: now + this.ttlMs });
    return key;
  }

  /** Drops cached entries so a revoke in this process takes effect at once. */
  invalidate(): void {
    this.cache.clear();
  }
}
