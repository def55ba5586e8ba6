/**
 * Provider webhooks as the fast path of waiting: a backend that can receive them implements
 * `WebhookReceiver`; easel's `/hooks/providers/:backend` route hands it the raw request, the backend
 * verifies the signature and wakes whoever waits on that provider job through `ProviderWaiters`.
 * Polling with backoff stays the fallback (webhooks get lost, and in split deployments they reach
 * the API process, not the worker).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface WebhookRequest {
  headers: Record<string, string | string[] | undefined>;
  rawBody: Buffer;
}

export interface WebhookOutcome {
  /** HTTP status to answer the provider with. */
  status: number;
  message: string;
  /** The provider job the webhook was about, when it verified. */
  providerId?: string;
}

export interface WebhookReceiver {
  handleWebhook(req: WebhookRequest): Promise<WebhookOutcome>;
}

export function isWebhookReceiver(value: unknown): value is WebhookReceiver {
  return !!value && typeof (value as { handleWebhook?: unknown }).handleWebhook === 'function';
}

export function header(headers: WebhookRequest['headers'], name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

export type VerifyResult = { ok: true; id: string; timestamp: number } | { ok: false; reason: string };

/** The HMAC key a `whsec_…` secret stands for (base64 after the prefix; a bare base64 secret is accepted). */
export function webhookKey(secret: string): Buffer {
  return Buffer.from(secret.startsWith('whsec_') ? secret.slice(6) : secret, 'base64');
}

/** `v1,<base64>` for `id.timestamp.body` (the stand-ins and tests sign with it). */
export function signStandardWebhook(secret: string, id: string, timestamp: number, body: string | Buffer): string {
  const mac = createHmac('sha256', webhookKey(secret)).update(`${id}.${timestamp}.`).update(body).digest('base64');
  return `v1,${mac}`;
}

/**
 * Verifies a Standard Webhooks delivery (Replicate signs this way): every `v1,` entry of the
 * space-separated signature header is compared in constant time against HMAC-SHA256 over
 * `id.timestamp.rawBody`, and the timestamp must be within `toleranceSeconds` of now either way.
 */
export function verifyStandardWebhook(opts: {
  secret: string;
  headers: WebhookRequest['headers'];
  rawBody: Buffer;
  toleranceSeconds?: number;
  nowSeconds?: number;
}): VerifyResult {
  const id = header(opts.headers, 'webhook-id');
  const ts = header(opts.headers, 'webhook-timestamp');
  const sigs = header(opts.headers, 'webhook-signature');
  if (!id || !ts || !sigs) return { ok: false, reason: 'missing webhook-id, webhook-timestamp or webhook-signature header' };
  if (!/^\d+$/.test(ts)) return { ok: false, reason: 'webhook-timestamp is not unix seconds' };
  const timestamp = Number(ts);
  const now = opts.nowSeconds ?? Math.floor(Date.now() / 1000);
  const tolerance = opts.toleranceSeconds ?? 300;
  if (timestamp < now - tolerance) return { ok: false, reason: 'message timestamp too old' };
  if (timestamp > now + tolerance) return { ok: false, reason: 'message timestamp too new' };
  const expected = Buffer.from(signStandardWebhook(opts.secret, id, timestamp, opts.rawBody).slice(3), 'base64');
  for (const entry of sigs.split(' ')) {
    const comma = entry.indexOf(',');
    if (comma < 0 || entry.slice(0, comma) !== 'v1') continue;
    const given = Buffer.from(entry.slice(comma + 1), 'base64');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return { ok: true, id, timestamp };
  }
  return { ok: false, reason: 'no matching v1 signature' };
}

interface Waiter {
  resolve: (payload: unknown) => void;
}

/**
 * In-process rendezvous between webhook deliveries and the generate() calls waiting on provider
 * jobs, keyed by the provider's job id. A payload that arrives before anyone waits is kept for a
 * while (a webhook can beat the poll loop, or come while a worker restarts in this process).
 */
export class ProviderWaiters {
  private readonly waiters = new Map<string, Set<Waiter>>();
  private readonly recent = new Map<string, { payload: unknown; at: number }>();
  private readonly keepMs: number;
  private readonly maxKept: number;

  constructor(opts: { keepMs?: number; maxKept?: number } = {}) {
    this.keepMs = opts.keepMs ?? 15 * 60_000;
    this.maxKept = opts.maxKept ?? 2_000;
  }

  notify(id: string, payload: unknown): void {
    this.recent.delete(id);
    this.recent.set(id, { payload, at: Date.now() });
    while (this.recent.size > this.maxKept) this.recent.delete(this.recent.keys().next().value as string);
    const set = this.waiters.get(id);
    if (!set) return;
    this.waiters.delete(id);
    for (const w of set) w.resolve(payload);
  }

  /** A payload already received for `id` (and not yet taken), if any. */
  take(id: string): unknown {
    const hit = this.recent.get(id);
    if (!hit) return undefined;
    this.recent.delete(id);
    return Date.now() - hit.at <= this.keepMs ? hit.payload : undefined;
  }

  /**
   * Resolves with a webhook payload for `id` as soon as one arrives, or undefined after `ms`
   * (time to poll). Rejects with the signal's reason when it aborts.
   */
  wait(id: string, ms: number, signal: AbortSignal): Promise<unknown> {
    const early = this.take(id);
    if (early !== undefined) return Promise.resolve(early);
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const set = this.waiters.get(id) ?? new Set<Waiter>();
      this.waiters.set(id, set);
      const cleanup = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        set.delete(waiter);
        if (set.size === 0 && this.waiters.get(id) === set) this.waiters.delete(id);
      };
      const waiter: Waiter = {
        resolve: (payload) => {
          cleanup();
          this.recent.delete(id);
          resolve(payload);
        },
      };
      const onAbort = () => {
        cleanup();
        reject(signal.reason);
      };
      const timer = setTimeout(() => {
        cleanup();
        resolve(undefined);
      }, Math.max(0, ms));
      set.add(waiter);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  get waiting(): number {
    let n = 0;
    for (const s of this.waiters.values()) n += s.size;
    return n;
  }
}

/** Remembers delivery ids for a while so a retried webhook is acknowledged, not processed twice. */
export class SeenIds {
  private readonly ids = new Map<string, number>();
  private readonly max: number;
  constructor(max = 5_000) {
    this.max = max;
  }
  /** True when `id` was already seen; records it otherwise. */
  seen(id: string): boolean {
    if (this.ids.has(id)) return true;
    this.ids.set(id, Date.now());
    while (this.ids.size > this.max) this.ids.delete(this.ids.keys().next().value as string);
    return false;
  }
}
