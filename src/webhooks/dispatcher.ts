/**
 * Sends due webhook deliveries (worker-role processes). Deliveries are leased from the database, so
 * any number of processes can dispatch side by side and a crashed one's deliveries come back when
 * its lease expires; a graceful stop hands its leases back at once.
 *
 * Retry policy: 2xx is delivered. 410 Gone and a destination the SSRF guard refuses stop at once.
 * Anything else (other statuses, 3xx included since redirects are not followed, timeouts, connection
 * errors) is retried after `initialBackoff * 2^(attempt-1)` with ±20% jitter, no sooner than a 429 or
 * 503's `retry-after`, until `retryFor` has passed since the first attempt; the last retry is pulled in
 * to that deadline, and an attempt that fails at or after it fails the delivery.
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Resolver } from '../net/ssrf.ts';
import type { AttemptOutcome, DeliveryRow, WebhookDeliveryStore } from './delivery-store.ts';
import { postWebhook } from './http.ts';
import type { PostResult } from './http.ts';
import { signWebhook, webhookKey } from './signing.ts';
import type { OutboundPolicy } from '../net/outbound-policy.ts';

export interface DispatcherOptions {
  secret: string;
  policy: OutboundPolicy;
  timeoutMs: number;
  retryForMs: number;
  initialBackoffMs: number;
  /** Deliveries in flight at once per process (default 16). */
  concurrency?: number;
  /** How often to look for deliveries other processes created or handed back (default from the backoff, 50..1000 ms). */
  pollIntervalMs?: number;
  /** Longest single backoff (default 6 h). */
  maxBackoffMs?: number;
  resolver?: Resolver;
  userAgent?: string;
  /** Randomness for jitter (tests). */
  random?: () => number;
}

const MAX_BACKOFF_MS = 6 * 3600_000;

export class WebhookDispatcher {
  private readonly store: WebhookDeliveryStore;
  private readonly log: Logger;
  private readonly opts: Required<Omit<DispatcherOptions, 'resolver'>> & { resolver?: Resolver };
  private readonly key: Buffer;
  readonly owner = `${hostname()}/${process.pid}/${randomUUID()}`;
  private readonly inflight = new Map<string, { row: DeliveryRow; controller: AbortController; done: Promise<void> }>();
  private readonly pending = new Set<Promise<unknown>>();
  private claiming = false;
  private pumpAgain = false;
  private stopping = false;
  private started = false;
  private pollTimer: NodeJS.Timeout | undefined;
  private wakeTimer: NodeJS.Timeout | undefined;
  private wakeAt = Infinity;
  private lastClaimError = 0;

  constructor(store: WebhookDeliveryStore, log: Logger, opts: DispatcherOptions) {
    this.store = store;
    this.log = log;
    this.opts = {
      concurrency: 16,
      pollIntervalMs: Math.min(1000, Math.max(50, Math.floor(opts.initialBackoffMs / 4))),
      maxBackoffMs: MAX_BACKOFF_MS,
      userAgent: 'easel-webhooks/1',
      random: Math.random,
      ...opts,
    };
    this.key = webhookKey(opts.secret);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.pollTimer = setInterval(() => this.pump(), this.opts.pollIntervalMs);
    this.pollTimer.unref?.();
    this.pump();
  }

  /** Looks for due deliveries now (a delivery was just created). */
  wake(): void {
    this.pump();
  }

  /** Stops taking deliveries; in-flight attempts get `graceMs`, then are cut off and handed back. */
  async stop(graceMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.pollTimer);
    clearTimeout(this.wakeTimer);
    await this.drain();
    if (this.inflight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<void>((r) => (timer = setTimeout(r, Math.max(0, graceMs))));
      await Promise.race([Promise.all([...this.inflight.values()].map((f) => f.done)), graceOver]);
      clearTimeout(timer);
      for (const f of this.inflight.values()) f.controller.abort();
      await Promise.all([...this.inflight.values()].map((f) => f.done));
    }
    await this.drain();
  }

  private async drain(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    const done = () => this.pending.delete(p);
    p.then(done, done);
    return p;
  }

  /** Wakes the dispatcher at `at` (the earliest retry this process knows of). */
  private wakeAtTime(at: number): void {
    if (this.stopping || at >= this.wakeAt) return;
    clearTimeout(this.wakeTimer);
    this.wakeAt = at;
    this.wakeTimer = setTimeout(() => {
      this.wakeAt = Infinity;
      this.pump();
    }, Math.max(0, at - Date.now()) + 1);
    this.wakeTimer.unref?.();
  }

  private pump(): void {
    if (this.stopping || !this.started) return;
    if (this.claiming) {
      this.pumpAgain = true;
      return;
    }
    const free = this.opts.concurrency - this.inflight.size;
    if (free <= 0) return;
    this.claiming = true;
    this.pumpAgain = false;
    const leaseMs = this.opts.timeoutMs + 30_000;
    this.track(this.store.claimDue(this.owner, free, leaseMs)).then(
      (rows) => {
        this.claiming = false;
        if (this.stopping) {
          if (rows.length > 0) {
            this.track(this.store.releaseLeases(this.owner, rows.map((r) => r.id))).catch((err) => this.log.warn({ err }, 'webhook lease hand-back failed'));
          }
          return;
        }
        for (const row of rows) this.run(row);
        if (this.pumpAgain || rows.length === free) this.pump();
      },
      (err) => {
        this.claiming = false;
        const now = Date.now();
        if (now - this.lastClaimError > 10_000) {
          this.lastClaimError = now;
          this.log.warn({ err }, 'claiming webhook deliveries failed; retrying');
        }
      },
    );
  }

  private run(row: DeliveryRow): void {
    const controller = new AbortController();
    const entry = { row, controller, done: Promise.resolve() };
    this.inflight.set(row.id, entry);
    entry.done = this.attempt(row, controller.signal)
      // The lease is left to expire: the delivery comes back after it, not in a tight loop.
      .catch((err) => this.log.error({ err, deliveryId: row.id }, 'webhook attempt failed unexpectedly; retried once its lease expires'))
      .finally(() => {
        this.inflight.delete(row.id);
        this.pump();
      });
  }

  private async attempt(row: DeliveryRow, signal: AbortSignal): Promise<void> {
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = {
      'content-type': 'application/json',
      'user-agent': this.opts.userAgent,
      'webhook-id': row.id,
      'webhook-timestamp': String(timestamp),
      'webhook-signature': signWebhook(this.key, row.id, timestamp, row.payload),
    };
    const at = Date.now();
    const res = await postWebhook(row.url, row.payload, headers, {
      timeoutMs: this.opts.timeoutMs,
      policy: this.opts.policy,
      resolver: this.opts.resolver,
      signal,
    });
    const log = this.log.child({ deliveryId: row.id, jobId: row.job_id, attempt: row.attempts + 1 });
    if (res.aborted) {
      // Stopping: this attempt does not count; the next process takes the delivery at once.
      await this.track(this.store.releaseLeases(this.owner, [row.id]));
      return;
    }
    const outcome = decideOutcome(row, res, at, Date.now(), this.opts);
    const recorded = await this.track(this.store.recordAttempt(row, this.owner, outcome));
    if (!recorded) {
      log.warn('webhook delivery lease was lost during the attempt; its new holder records its own');
      return;
    }
    const what = res.statusCode !== undefined ? `HTTP ${res.statusCode}` : res.error;
    if (outcome.status === 'delivered') log.info({ type: row.event_type, ms: Math.round(res.durationMs) }, 'webhook delivered');
    else if (outcome.status === 'failed') log.warn({ type: row.event_type, url: row.url, result: what }, 'webhook delivery failed for good');
    else {
      log.info({ result: what, retryInMs: outcome.nextAttemptAt! - Date.now() }, 'webhook attempt failed; will retry');
      this.wakeAtTime(outcome.nextAttemptAt!);
    }
  }
}

/** The delivery's next state after one attempt (exported for tests). */
export function decideOutcome(
  row: Pick<DeliveryRow, 'attempts' | 'first_attempt_at'>,
  res: PostResult,
  at: number,
  now: number,
  policy: { retryForMs: number; initialBackoffMs: number; maxBackoffMs?: number; random?: () => number },
): AttemptOutcome {
  const base = { at, statusCode: res.statusCode ?? null, error: res.error ?? null, durationMs: res.durationMs };
  const code = res.statusCode;
  if (code !== undefined && code >= 200 && code <= 299) return { ...base, status: 'delivered' };
  if (code === 410 || res.refused) return { ...base, status: 'failed' };
  const deadline = (row.first_attempt_at ?? at) + policy.retryForMs;
  if (now >= deadline) return { ...base, status: 'failed' };
  const made = row.attempts + 1;
  const random = policy.random ?? Math.random;
  const maxBackoff = policy.maxBackoffMs ?? MAX_BACKOFF_MS;
  const exp = policy.initialBackoffMs * 2 ** Math.min(made - 1, 40);
  let delay = Math.min(maxBackoff, exp) * (0.8 + 0.4 * random());
  if (res.retryAfterMs !== undefined) delay = Math.max(delay, Math.min(res.retryAfterMs, maxBackoff));
  return { ...base, status: 'pending', nextAttemptAt: Math.min(now + Math.round(delay), deadline) };
}
