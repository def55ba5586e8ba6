/**
 * Standard Webhooks signing (v1, HMAC-SHA256) and the signing secret.
 *
 * signed content = `${webhook-id}.${webhook-timestamp}.${body}` (body: the exact bytes sent),
 * signature = `v1,` + base64(HMAC-SHA256(key, signed content)), key = base64-decode of the secret
 * after its `whsec_` prefix.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const PREFIX = 'whsec_';

/** The HMAC key a `whsec_…` secret stands for. */
export function webhookKey(secret: string): Buffer {
  const b64 = secret.startsWith(PREFIX) ? secret.slice(PREFIX.length) : secret;
  const key = Buffer.from(b64, 'base64');
  if (key.length === 0) throw new Error('webhook secret is empty');
  return key;
}

/** The `webhook-signature` header value for one attempt (timestamp in unix seconds). */
export function signWebhook(secret: string | Buffer, id: string, timestamp: number | string, body: string | Buffer): string {
  const key = typeof secret === 'string' ? webhookKey(secret) : secret;
  const mac = createHmac('sha256', key).update(`${id}.${timestamp}.`).update(body).digest('base64');
  return `v1,${mac}`;
}

/** A fresh `whsec_` secret: 32 random bytes. */
export function generateWebhookSecret(): string {
  return PREFIX + randomBytes(32).toString('base64');
}

export function webhookSecretPath(dataDir: string): string {
  return join(dataDir, 'secrets', 'webhook-secret');
}

/**
 * The secret from the data folder, created (mode 0600) on first use. `created` says whether this call
 * wrote it, so the caller can tell the operator once where receivers find it.
 */
export function loadOrCreateWebhookSecret(dataDir: string): { secret: string; path: string; created: boolean } {
  const path = webhookSecretPath(dataDir);
  if (existsSync(path)) return { secret: readFileSync(path, 'utf8').trim(), path, created: false };
  mkdirSync(join(dataDir, 'secrets'), { recursive: true, mode: 0o700 });
  // Written aside and linked into place, so a process racing on the same data folder either wins or
  // reads the complete secret of the one that did (never a half-written file).
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, generateWebhookSecret() + '\n', { mode: 0o600, flag: 'wx' });
  let created = true;
  try {
    linkSync(tmp, path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    created = false;
  } finally {
    unlinkSync(tmp);
  }
  return { secret: readFileSync(path, 'utf8').trim(), path, created };
}
