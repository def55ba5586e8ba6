/**
 * fal webhook signatures: Ed25519 over
 * `"${request_id}\n${user_id}\n${timestamp}\n${hex(sha256(rawBody))}"`, the signature hex in
 * `X-Fal-Webhook-Signature`, public keys from fal's JWKS (OKP / Ed25519, base64url `x`), timestamps
 * within ±300 s.
 */
import { createHash, createPublicKey, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import type { ProviderHttp } from '../http/client.ts';
import { header } from '../http/webhooks.ts';
import type { VerifyResult, WebhookRequest } from '../http/webhooks.ts';
import { cleanupSignal } from '../http/hosted-backend.ts';

export function falSignedMessage(requestId: string, userId: string, timestamp: string, rawBody: Buffer): Buffer {
  const digest = createHash('sha256').update(rawBody).digest('hex');
  return Buffer.from(`${requestId}\n${userId}\n${timestamp}\n${digest}`, 'utf8');
}

export function keysFromJwks(jwks: unknown): KeyObject[] {
  const keys = (jwks as { keys?: unknown } | undefined)?.keys;
  if (!Array.isArray(keys)) return [];
  const out: KeyObject[] = [];
  for (const k of keys) {
    const jwk = k as { kty?: unknown; crv?: unknown; x?: unknown };
    if (jwk?.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') continue;
    try {
      out.push(createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' }));
    } catch {
      // a malformed key is skipped; the others may still verify
    }
  }
  return out;
}

/** fal's published keys, cached; fetched again (at most once a minute) when nothing verifies. */
export class FalJwks {
  private keys: KeyObject[] = [];
  private fetchedAt = 0;
  private inFlight: Promise<KeyObject[]> | undefined;
  private readonly http: ProviderHttp;
  private readonly url: string;
  private readonly maxAgeMs: number;

  constructor(http: ProviderHttp, url: string, maxAgeMs = 24 * 3600_000) {
    this.http = http;
    this.url = url;
    this.maxAgeMs = maxAgeMs;
  }

  async get(refresh = false): Promise<KeyObject[]> {
    const age = Date.now() - this.fetchedAt;
    const stale = this.keys.length === 0 || age > this.maxAgeMs || (refresh && age > 60_000);
    if (!stale) return this.keys;
    this.inFlight ??= (async () => {
      try {
        const res = await this.http.send(this.url, { signal: cleanupSignal(), idempotent: true, headers: { accept: 'application/json' } });
        if (res.ok) {
          const keys = keysFromJwks(res.json());
          if (keys.length) {
            this.keys = keys;
            this.fetchedAt = Date.now();
          }
        }
      } catch {
        // keep what we had
      }
      return this.keys;
    })().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }
}

export async function verifyFalWebhook(opts: {
  req: WebhookRequest;
  jwks: FalJwks;
  userId?: string;
  toleranceSeconds?: number;
  nowSeconds?: number;
}): Promise<VerifyResult> {
  const { headers, rawBody } = opts.req;
  const requestId = header(headers, 'x-fal-webhook-request-id');
  const userId = header(headers, 'x-fal-webhook-user-id');
  const ts = header(headers, 'x-fal-webhook-timestamp');
  const sig = header(headers, 'x-fal-webhook-signature');
  if (!requestId || !userId || !ts || !sig) return { ok: false, reason: 'missing X-Fal-Webhook-* headers' };
  if (!/^\d+$/.test(ts)) return { ok: false, reason: 'timestamp is not unix seconds' };
  const now = opts.nowSeconds ?? Math.floor(Date.now() / 1000);
  const tolerance = opts.toleranceSeconds ?? 300;
  if (Math.abs(now - Number(ts)) > tolerance) return { ok: false, reason: 'timestamp outside the tolerance' };
  if (opts.userId && userId !== opts.userId) return { ok: false, reason: 'signed for another fal user' };
  if (!/^[0-9a-f]+$/i.test(sig) || sig.length % 2) return { ok: false, reason: 'signature is not hex' };
  const signature = Buffer.from(sig, 'hex');
  const message = falSignedMessage(requestId, userId, ts, rawBody);
  for (const refresh of [false, true]) {
    const keys = await opts.jwks.get(refresh);
    for (const key of keys) {
      try {
        if (verify(null, message, key, signature)) return { ok: true, id: requestId, timestamp: Number(ts) };
      } catch {
        // wrong length or key type: not this key
      }
    }
  }
  return { ok: false, reason: 'no fal key verifies the signature' };
}
