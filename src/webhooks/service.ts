/**
 * Webhooks: a job with a `webhook_url` gets its finished job object POSTed there, signed per Standard
 * Webhooks, retried with backoff, every attempt recorded and shown on the job.
 *
 * Every role uses the service for the API hooks (`checkWebhookUrl` at submission, `webhookInfo` on
 * the job object). Worker-role processes also create and send deliveries:
 * - fast path: a terminal status event wakes the sweep at once;
 * - recovery: the same sweep also runs at start and every few seconds, so a job whose process died
 *   right after it ended still gets its delivery. The sweep reads only finished, not-yet-swept jobs
 *   with a webhook (a partial index), inserts deliveries with ON CONFLICT DO NOTHING and marks the jobs,
 *   so concurrent sweeps in several processes never create a delivery twice;
 * - the dispatcher sends what is due (src/webhooks/dispatcher.ts).
 */
import type { Logger } from 'pino';
import { DomainError } from '../core/errors.ts';
import { ulid } from '../core/ids.ts';
import { isTerminal } from '../core/job.ts';
import type { Job } from '../core/job.ts';
import type { EaselConfig } from '../config/schema.ts';
import type { MetadataDb } from '../store/database.ts';
import type { JobStore } from '../store/job-store.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import type { JobEventBus } from '../events/job-events.ts';
import { JobViews } from '../api/job-view.ts';
import { UnsafeUrlError, checkUrl } from '../net/ssrf.ts';
import type { Resolver } from '../net/ssrf.ts';
import { WebhookDeliveryStore } from './delivery-store.ts';
import type { DeliveryStatus, NewDelivery } from './delivery-store.ts';
import { WebhookDispatcher } from './dispatcher.ts';
import { loadOrCreateWebhookSecret } from './signing.ts';
import type { SettleListener } from '../jobs/settle.ts';
import { OutboundPolicy } from '../net/outbound-policy.ts';

export const newMessageId = (): string => `msg_${ulid()}`;

export interface WebhookServiceDeps {
  config: EaselConfig;
  mdb: MetadataDb;
  store: JobStore;
  storage: ImageStorage;
  events: JobEventBus;
  log: Logger;
  /** Absolute data folder (for the generated secret). */
  dataDir: string;
  /** Whether this process sends deliveries (worker role). */
  deliver: boolean;
  /** Name resolution for the SSRF guard (tests inject one). */
  resolver?: Resolver;
  /** How often the recovery sweep runs (default 5 s). */
  sweepIntervalMs?: number;
}

export interface WebhookAttemptView {
  attempt: number;
  at: number;
  status_code?: number;
  error?: string;
  duration_ms: number;
}

export interface WebhookDeliveryView {
  id: string;
  type: string;
  status: DeliveryStatus;
  attempts: WebhookAttemptView[];
  next_attempt_at: number | null;
  delivered_at: number | null;
}

export interface WebhookInfo {
  url: string | null;
  /** `pending` until the job has ended and its delivery succeeded or failed for good. */
  status: DeliveryStatus;
  deliveries: WebhookDeliveryView[];
}

const SWEEP_BATCH = 100;
/** Least time between two event-triggered sweeps: at thousands of jobs a second, one probe per gap. */
const SWEEP_MIN_GAP_MS = 20;
const unix = (ms: number | null): number | null => (ms == null ? null : Math.floor(ms / 1000));

export class WebhookService {
  readonly deliveries: WebhookDeliveryStore;
  private readonly deps: WebhookServiceDeps;
  private readonly views: JobViews;
  private dispatcher: WebhookDispatcher | undefined;
  private unsubscribe: (() => void) | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private kickTimer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private sweepAgain = false;
  private lastSweepAt = 0;
  private started = false;
  private stopping = false;

  /** What webhook receivers may be (public, or the operator's allowlist; never a metadata endpoint). */
  private readonly policy: OutboundPolicy;

  constructor(deps: WebhookServiceDeps) {
    this.deps = deps;
    this.policy = new OutboundPolicy(deps.config.outbound);
    this.deliveries = new WebhookDeliveryStore(deps.mdb);
    this.views = new JobViews(deps.storage, deps.config.storage.urlTtlSeconds);
  }

  /** The submission-time check; throws a 400 naming `webhook_url` (ApiDeps.checkWebhookUrl). */
  async checkWebhookUrl(url: string): Promise<void> {
    try {
      await checkUrl(url, { policy: this.policy, resolver: this.deps.resolver });
    } catch (err) {
      if (!(err instanceof UnsafeUrlError)) throw err;
      const hint = err.reason === 'address' && !/metadata/.test(err.message) ? ' (outbound.allowHosts or outbound.allowNetworks in the server config allow receivers on private networks)' : '';
      throw new DomainError('invalid', `Invalid 'webhook_url': ${err.message}${hint}.`, { param: 'webhook_url', code: 'invalid_webhook_url' });
    }
  }

  /** The `webhook` field of a job object (ApiDeps.webhookInfo). */
  async webhookInfo(jobId: string): Promise<WebhookInfo> {
    const { deliveries, attempts } = await this.deliveries.deliveriesForJob(jobId);
    const url = deliveries[0]?.url ?? (await this.deliveries.jobWebhookUrl(jobId));
    const views: WebhookDeliveryView[] = deliveries.map((d) => ({
      id: d.id,
      type: d.event_type,
      status: d.status,
      attempts: attempts
        .filter((a) => a.delivery_id === d.id)
        .map((a) => ({
          attempt: a.attempt,
          at: unix(a.at)!,
          ...(a.status_code !== null ? { status_code: a.status_code } : {}),
          ...(a.error !== null ? { error: a.error } : {}),
          duration_ms: a.duration_ms,
        })),
      next_attempt_at: d.status === 'pending' ? unix(d.next_attempt_at) : null,
      delivered_at: unix(d.delivered_at),
    }));
    const status: DeliveryStatus =
      views.length === 0 || views.some((v) => v.status === 'pending') ? 'pending' : views.some((v) => v.status === 'failed') ? 'failed' : 'delivered';
    return { url, status, deliveries: views };
  }

  /**
   * A job ended in this process: its delivery is created by the next sweep (which only a delivering
   * process runs; jobs that end elsewhere reach it through their status event or the timer).
   */
  readonly listener: SettleListener = {
    name: 'webhooks',
    phase: 'notify',
    onSettled: ({ job }) => {
      if (job.webhookUrl) this.requestSweep();
    },
  };

  /** Worker role: subscribe to job ends, sweep now and every few seconds, and start dispatching. */
  async start(): Promise<void> {
    if (!this.deps.deliver || this.started) return;
    this.started = true;
    const { config, log } = this.deps;
    const wh = config.webhooks;
    let secret = wh.secret;
    if (!secret) {
      const s = loadOrCreateWebhookSecret(this.deps.dataDir);
      secret = s.secret;
      if (s.created) {
        log.info(
          { path: s.path },
          'generated the webhook signing secret: receivers verify webhook-signature with the whsec_ secret in this file (set webhooks.secret to choose one; every worker must use the same)',
        );
      }
    }
    this.dispatcher = new WebhookDispatcher(this.deliveries, log.child({ component: 'webhooks' }), {
      secret,
      policy: this.policy,
      timeoutMs: wh.timeoutSeconds * 1000,
      retryForMs: wh.retryForSeconds * 1000,
      initialBackoffMs: wh.initialBackoffSeconds * 1000,
      resolver: this.deps.resolver,
    });
    this.unsubscribe = this.deps.events.subscribeAll((event) => {
      if (event.type === 'status' && isTerminal(event.status) && event.webhook !== false) this.requestSweep();
    });
    this.dispatcher.start();
    this.runSweep();
    this.sweepTimer = setInterval(() => this.requestSweep(), this.deps.sweepIntervalMs ?? 5000);
    this.sweepTimer.unref?.();
  }

  /** Stops sweeping and dispatching; attempts in flight get `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.unsubscribe?.();
    clearInterval(this.sweepTimer);
    clearTimeout(this.kickTimer);
    while (this.sweeping) await this.sweeping;
    await this.dispatcher?.stop(graceMs);
  }

  /** Runs the sweep soon (coalesced: one sweep at a time, at most one per SWEEP_MIN_GAP_MS). */
  requestSweep(): void {
    if (this.stopping || !this.started) return;
    if (this.sweeping) {
      this.sweepAgain = true;
      return;
    }
    if (this.kickTimer) return;
    const wait = Math.max(0, this.lastSweepAt + SWEEP_MIN_GAP_MS - Date.now());
    this.kickTimer = setTimeout(() => {
      this.kickTimer = undefined;
      this.runSweep();
    }, wait);
  }

  private runSweep(): void {
    if (this.stopping) return;
    if (this.sweeping) {
      this.sweepAgain = true;
      return;
    }
    this.sweepAgain = false;
    this.sweeping = this.sweep()
      .then((created) => {
        if (created > 0) this.dispatcher?.wake();
      })
      .catch((err) => this.deps.log.warn({ err }, 'webhook sweep failed; it runs again shortly'))
      .finally(() => {
        this.sweeping = undefined;
        this.lastSweepAt = Date.now();
        if (this.sweepAgain) this.requestSweep();
      });
  }

  /** Creates deliveries for finished jobs that have none yet; returns how many it created. */
  async sweep(): Promise<number> {
    let created = 0;
    while (!this.stopping) {
      const ids = await this.deliveries.unsweptJobs(SWEEP_BATCH);
      if (ids.length === 0) break;
      const fresh: NewDelivery[] = [];
      for (const id of ids) {
        try {
          const job = await this.deps.store.getJob(id);
          if (job && job.webhookUrl && isTerminal(job.status)) fresh.push(await this.buildDelivery(job));
        } catch (err) {
          this.deps.log.warn({ err, jobId: id }, 'could not build a webhook payload; the sweep tries again');
        }
      }
      if (fresh.length === 0) break;
      await this.deliveries.createDeliveries(fresh);
      created += fresh.length;
      if (ids.length < SWEEP_BATCH) break;
    }
    return created;
  }

  /** The delivery for a finished job: `{type, timestamp, data: <job object, image URLs>}`. */
  async buildDelivery(job: Job): Promise<NewDelivery> {
    const images = job.status === 'succeeded' ? await this.deps.store.listImagesForJob(job.id) : undefined;
    // Images go by URL even for b64_json jobs (payloads stay small); the request still says what was asked.
    const data = await this.views.job({ ...job, request: { ...job.request, responseFormat: 'url' } }, images);
    (data.request as Record<string, unknown>).response_format = job.request.responseFormat;
    const type = `image.job.${job.status}`;
    const payload = JSON.stringify({ type, timestamp: (job.finishedAt ?? new Date()).toISOString(), data });
    return { id: newMessageId(), jobId: job.id, eventType: type, url: job.webhookUrl!, payload };
  }
}
