/**
 * The Redis queue, on BullMQ. A message is a BullMQ job whose id is easel's job id (so enqueueing twice
 * is a no-op while it exists) and whose BullMQ priority is PRIORITY_RANK (lower first, FIFO within).
 *
 * Leases are BullMQ locks: `lockDuration` is the visibility timeout, the worker renews locks itself,
 * and a job whose worker died (lock expired) is moved back to wait by any worker's stalled checker.
 * `maxStalledCount` is high and `attempts` practically unbounded because easel bounds attempts itself
 * (the store's attempt counter); a handler that throws has its job retried after `retryDelayMs`.
 * Completed and failed jobs are removed at once: the job itself lives in the metadata store.
 */
import { Queue, WaitingError, Worker } from 'bullmq';
import type { ConnectionOptions, Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { PRIORITIES, PRIORITY_RANK } from '../core/job.ts';
import type { Priority } from '../core/job.ts';
import { TurnBatcher } from '../core/turn-batcher.ts';
import { leaseLost, throttledWarn } from './queue-support.ts';
import type {
  ConsumeOptions,
  Delivery,
  DeliveryHandler,
  JobQueue,
  QueueConsumer,
  QueueCounts,
  QueueMessage,
} from './job-queue.ts';

export interface BullmqQueueOptions {
  /** redis:// or rediss:// URL. */
  url: string;
  /** Key prefix in Redis. Default 'easel'. */
  prefix?: string;
  /** BullMQ queue name. Default 'images'. */
  queueName?: string;
  /** Lock duration: how long a dead worker's message stays invisible. Default 60 s. */
  visibilityTimeoutMs?: number;
  /** How long a message whose handler threw waits before it is delivered again. Default 200 ms. */
  retryDelayMs?: number;
  /** Where background failures (connection errors, lock renewal) are reported. Default: console.warn, throttled. */
  onError?: (err: unknown) => void;
}

interface MessageData {
  priority: Priority;
}

/** Practically unbounded retries: easel, not BullMQ, decides when a job has been tried enough. */
const UNBOUNDED_ATTEMPTS = 2 ** 31 - 1;
const PING_TIMEOUT_MS = 2_000;
/**
 * How long stop/abandon wait for BullMQ's Worker.close() after the grace period. It waits on Redis
 * (QUIT, hand-backs, the blocking connection's end) and never returns while Redis is unreachable; past
 * this bound easel moves on and the messages still held come back when their locks expire.
 */
const CLOSE_TIMEOUT_MS = 5_000;

const RANK_TO_PRIORITY = new Map<number, Priority>(PRIORITIES.map((p) => [PRIORITY_RANK[p], p]));

/** ioredis options from a redis:// URL (BullMQ takes options, not URLs). */
export function redisOptionsFromUrl(url: string): RedisOptions {
  const u = new URL(url);
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new Error(`not a Redis URL: ${url}`);
  const opts: RedisOptions = {
    host: u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
  };
  if (u.username) opts.username = decodeURIComponent(u.username);
  if (u.password) opts.password = decodeURIComponent(u.password);
  const db = u.pathname.replace(/^\//, '');
  if (db) opts.db = Number(db);
  if (u.protocol === 'rediss:') opts.tls = {};
  return opts;
}

/** Reconnect quickly after a Redis restart (BullMQ's default waits at least a second). */
const retryStrategy = (times: number): number => Math.min(50 * 2 ** Math.min(times, 6), 2_000);


function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export class BullmqQueue implements JobQueue {
  readonly kind = 'bullmq' as const;
  readonly prefix: string;
  readonly queueName: string;
  readonly visibilityTimeoutMs: number;
  readonly retryDelayMs: number;
  private readonly redisOptions: RedisOptions;
  private readonly queue: Queue<MessageData>;
  private readonly pingClient: Redis;
  private readonly reportError: (err: unknown) => void;
  private readonly consumers = new Set<BullmqConsumer>();
  private readonly adds: TurnBatcher<QueueMessage, undefined>;
  private closed = false;

  constructor(opts: BullmqQueueOptions) {
    this.prefix = opts.prefix ?? 'easel';
    this.queueName = opts.queueName ?? 'images';
    this.visibilityTimeoutMs = opts.visibilityTimeoutMs ?? 60_000;
    this.retryDelayMs = opts.retryDelayMs ?? 200;
    this.reportError = opts.onError ?? throttledWarn('bullmq queue');
    if (!(this.visibilityTimeoutMs > 0)) throw new Error('visibilityTimeoutMs must be positive');
    this.redisOptions = { ...redisOptionsFromUrl(opts.url), retryStrategy };
    // The producer fails an enqueue after some seconds of reconnect attempts rather than hanging forever.
    this.queue = new Queue<MessageData>(this.queueName, {
      connection: { ...this.redisOptions, maxRetriesPerRequest: 8 } as ConnectionOptions,
      prefix: this.prefix,
    });
    this.queue.on('error', (err) => this.reportError(err));
    // Enqueues of one event-loop turn go to Redis together (addBulk: one pipeline). Adding a job id
    // that exists is a no-op in BullMQ, so running a failed group's members again alone is safe.
    this.adds = new TurnBatcher({
      key: (m) => m.jobId,
      run: async (messages) => {
        if (messages.length === 1) await this.queue.add('job', { priority: messages[0]!.priority }, this.jobOptions(messages[0]!));
        else await this.queue.addBulk(messages.map((m) => ({ name: 'job', data: { priority: m.priority }, opts: this.jobOptions(m) })));
        return messages.map(() => undefined);
      },
    });
    // ping() must fail fast while Redis is down, so it has a connection that never queues commands.
    this.pingClient = new Redis({ ...this.redisOptions, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    this.pingClient.on('error', () => {}); // surfaced by ping() itself
  }

  async enqueue(message: QueueMessage): Promise<void> {
    this.assertOpen();
    const rank = PRIORITY_RANK[message.priority];
    if (rank === undefined) throw new Error(`unknown priority "${message.priority}"`);
    await this.adds.call(message);
  }

  private jobOptions(message: QueueMessage) {
    return {
      jobId: message.jobId,
      priority: PRIORITY_RANK[message.priority],
      attempts: UNBOUNDED_ATTEMPTS,
      backoff: { type: 'fixed' as const, delay: this.retryDelayMs },
      removeOnComplete: true,
      removeOnFail: true,
    };
  }

  async remove(jobId: string): Promise<boolean> {
    this.assertOpen();
    const state = await this.queue.getJobState(jobId);
    if (state === 'unknown' || state === 'active' || state === 'completed' || state === 'failed') return false;
    // BullMQ refuses (0) when the job is locked, i.e. a worker took it in between.
    return (await this.queue.remove(jobId)) === 1;
  }

  consume(handler: DeliveryHandler, options: ConsumeOptions): QueueConsumer {
    this.assertOpen();
    const concurrency = Math.floor(options.concurrency);
    if (!(concurrency >= 1)) throw new Error('concurrency must be at least 1');
    const consumer = new BullmqConsumer({
      queueName: this.queueName,
      prefix: this.prefix,
      redisOptions: this.redisOptions,
      handler,
      concurrency,
      visibilityTimeoutMs: this.visibilityTimeoutMs,
      reportError: this.reportError,
      onDone: (c) => this.consumers.delete(c),
    });
    this.consumers.add(consumer);
    return consumer;
  }

  async counts(): Promise<QueueCounts> {
    const c = await this.queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active');
    return {
      waiting: (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0),
      active: c.active ?? 0,
    };
  }

  async ping(): Promise<void> {
    const client = this.pingClient;
    if (client.status !== 'ready') {
      await withTimeout(
        new Promise<void>((resolve) => {
          const check = () => {
            if (client.status === 'ready') {
              client.off('ready', check);
              resolve();
            }
          };
          client.on('ready', check);
          check();
        }),
        PING_TIMEOUT_MS,
        'connecting to Redis',
      );
    }
    await withTimeout(client.ping(), PING_TIMEOUT_MS, 'Redis PING');
  }

  /**
   * Stops every consumer still running on this instance without handing its messages back — as a
   * crash would: their locks expire and they return after the visibility timeout. Call
   * `stop(graceMs)` on consumers first for a clean hand-over.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.consumers].map((c) => c.abandon()));
    this.consumers.clear();
    await Promise.allSettled([this.queue.close(), this.pingClient.quit().catch(() => this.pingClient.disconnect())]);
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('bullmq queue is closed');
  }
}

interface ConsumerConfig {
  queueName: string;
  prefix: string;
  redisOptions: RedisOptions;
  handler: DeliveryHandler;
  concurrency: number;
  visibilityTimeoutMs: number;
  reportError: (err: unknown) => void;
  onDone: (c: BullmqConsumer) => void;
}

interface InFlight {
  controller: AbortController;
  /** Until when the lock is known to hold (as of its last successful renewal). */
  leaseUntil: number;
  /** Ends the processor early: the message goes back to the queue (stop) or is left as is (abandon). */
  release: (how: 'hand-back' | 'abandon') => void;
}

class BullmqConsumer implements QueueConsumer {
  private readonly cfg: ConsumerConfig;
  private readonly worker: Worker<MessageData>;
  private readonly inFlight = new Map<string, InFlight>();
  private readonly watchdog: NodeJS.Timeout;
  private stopping = false;
  private stopPromise: Promise<void> | undefined;
  private abandoned: Promise<void> | undefined;

  constructor(cfg: ConsumerConfig) {
    this.cfg = cfg;
    const lockDuration = cfg.visibilityTimeoutMs;
    this.worker = new Worker<MessageData>(cfg.queueName, (job, token) => this.process(job, token), {
      connection: { ...cfg.redisOptions, maxRetriesPerRequest: null } as ConnectionOptions,
      prefix: cfg.prefix,
      concurrency: cfg.concurrency,
      lockDuration,
      // A dead worker's message returns within about lockDuration + 2 × stalledInterval.
      stalledInterval: Math.max(250, Math.min(30_000, Math.floor(lockDuration / 4))),
      maxStalledCount: 1000,
      removeOnComplete: { count: 0 },
      removeOnFail: { count: 0 },
    });
    this.worker.on('error', (err) => this.cfg.reportError(err));
    this.worker.on('locksRenewed', ({ jobIds }) => {
      const until = Date.now() + lockDuration;
      for (const id of jobIds) {
        const entry = this.inFlight.get(id);
        if (entry) entry.leaseUntil = until;
      }
    });
    this.worker.on('lockRenewalFailed', (jobIds) => {
      for (const id of jobIds) this.lose(id, 'its lock could not be renewed');
    });
    // Renewals that error out (Redis unreachable) emit nothing per job: abort once the lock has expired.
    this.watchdog = setInterval(() => {
      const now = Date.now();
      for (const [id, entry] of this.inFlight) if (now >= entry.leaseUntil) this.lose(id, 'its lock expired');
    }, Math.max(100, Math.floor(lockDuration / 4)));
    this.watchdog.unref();
  }

  stop(graceMs: number): Promise<void> {
    this.stopPromise ??= this.doStop(graceMs);
    return this.stopPromise;
  }

  /** The crash path (queue closed): abort signals and drop the connection; locks expire on their own. */
  abandon(): Promise<void> {
    this.abandoned ??= (async () => {
      this.stopping = true;
      clearInterval(this.watchdog);
      for (const entry of this.inFlight.values()) {
        entry.controller.abort(leaseLost('queue closed: the message comes back after the visibility timeout'));
        entry.release('abandon');
      }
      try {
        await withTimeout(this.worker.close(true), CLOSE_TIMEOUT_MS, 'closing the BullMQ worker (is Redis reachable?)');
      } catch (err) {
        this.cfg.reportError(err);
      }
      this.cfg.onDone(this);
    })();
    return this.abandoned;
  }

  private async doStop(graceMs: number): Promise<void> {
    this.stopping = true;
    // Closing without force: no new jobs are fetched, and close waits for the processors.
    const closed = this.worker.close().catch((err) => this.cfg.reportError(err));
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace'>((resolve) => {
      timer = setTimeout(() => resolve('grace'), Math.max(0, graceMs));
    });
    const first = await Promise.race([closed.then(() => 'closed' as const), graceOver]);
    clearTimeout(timer);
    if (first === 'grace') {
      for (const entry of this.inFlight.values()) {
        entry.controller.abort(leaseLost('consumer stopped: the message was handed back to the queue'));
        entry.release('hand-back');
      }
      await withTimeout(closed, CLOSE_TIMEOUT_MS, 'closing the BullMQ worker (is Redis reachable?)').catch((err) => this.cfg.reportError(err));
    }
    clearInterval(this.watchdog);
    this.cfg.onDone(this);
  }

  private lose(jobId: string, why: string): void {
    const entry = this.inFlight.get(jobId);
    if (!entry || entry.controller.signal.aborted) return;
    entry.controller.abort(leaseLost(`lease on ${jobId} lost: ${why}`));
  }

  private async process(job: Job<MessageData>, token: string | undefined): Promise<void> {
    const jobId = job.id!;
    if (this.stopping) {
      // Fetched while stopping: give it straight back.
      if (token) await job.moveToWait(token);
      throw new WaitingError();
    }
    const controller = new AbortController();
    let release!: (how: 'hand-back' | 'abandon') => void;
    const released = new Promise<'hand-back' | 'abandon'>((resolve) => (release = resolve));
    const entry: InFlight = { controller, leaseUntil: Date.now() + this.cfg.visibilityTimeoutMs, release };
    this.inFlight.set(jobId, entry);
    const priority = job.data?.priority ?? RANK_TO_PRIORITY.get(job.opts.priority ?? 0) ?? 'normal';
    const delivery: Delivery = {
      message: { jobId, priority },
      deliveryCount: Math.max(1, job.attemptsStarted),
      signal: controller.signal,
    };
    let outcome: { ok: true } | { ok: false; err: unknown } | { released: 'hand-back' | 'abandon' };
    try {
      const run = Promise.resolve().then(() => this.cfg.handler(delivery));
      outcome = await Promise.race([
        run.then(
          () => ({ ok: true as const }),
          (err: unknown) => ({ ok: false as const, err }),
        ),
        released.then((how) => ({ released: how })),
      ]);
    } finally {
      this.inFlight.delete(jobId);
    }
    if ('released' in outcome) {
      if (outcome.released === 'hand-back' && token) await job.moveToWait(token);
      // Tells BullMQ the job was moved elsewhere: it neither completes nor fails it.
      throw new WaitingError();
    }
    // Resolving completes the job (removed at once); throwing retries it after the backoff delay.
    if (!outcome.ok) throw outcome.err instanceof Error ? outcome.err : new Error(String(outcome.err));
  }
}
