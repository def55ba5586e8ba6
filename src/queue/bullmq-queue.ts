/**
 * The Redis queue, on BullMQ. A message is a BullMQ job whose id is easel's job id (so enqueueing twice
 * is a no-op while it exists) and whose BullMQ priority is PRIORITY_RANK (lower first, FIFO within).
 *
 * Leases are BullMQ locks: `lockDuration` is the visibility timeout, the worker renews locks itself,
 * and a job whose worker died (lock expired) is moved back to wait by any worker's stalled checker.
 * `maxStalledCount` is high and `attempts` practically unbounded because easel bounds attempts itself
 * (the store's attempt counter); a handler that throws has its job retried after `retryDelayMs`.
 * Completed and failed jobs are removed at once: the job itself lives in the metadata store.
 *
 * With fair sharing on (the default), jobs first wait in a fair waiting room in Redis (fair-room.ts)
 * and move into BullMQ only as worker slots free up, so BullMQ's queue stays shallow and the room
 * decides whose job runs next (keys take turns by weight; keys at their running limit wait). Whoever
 * learns of a free slot moves jobs in: the enqueuer (when workers are idle), a consumer when one of
 * its jobs completes, and every consumer's feed timer (which also re-registers its concurrency and
 * re-adds jobs a crashed mover left half-moved). With `fairness.enabled: false` jobs go straight to
 * BullMQ, first come first served within a priority.
 *
 * While the room holds nothing waiting and has free slots, it would hand a new job straight on, so a
 * job of a key without a running limit skips it: added to BullMQ at once, as with fair sharing off
 * (one Redis call instead of three; see `mayBypass`). The room's last answer says when that is; any
 * room call of this process refreshes it, and it is trusted for one feed interval. Its free slots
 * are counted down locally, so a process adds at most as many jobs as were free; several API
 * processes may together overfill BullMQ by that much for one interval, which only lengthens the
 * line a newcomer's first job waits behind. The first job that finds the room busy, or its answer
 * stale, goes through the room again.
 */
import { randomUUID } from 'node:crypto';
import { Queue, WaitingError, Worker } from 'bullmq';
import type { ConnectionOptions, Job } from 'bullmq';
import { Redis } from 'ioredis';
import type { RedisOptions } from 'ioredis';
import { PRIORITIES, PRIORITY_RANK } from '../core/job.ts';
import type { Priority } from '../core/job.ts';
import { TurnBatcher } from '../core/turn-batcher.ts';
import { leaseLost, throttledWarn } from './queue-support.ts';
import { FairRoom } from './fair-room.ts';
import type { RoomAnswer, RoomEntry, RoomPick } from './fair-room.ts';
import { EVEN_SHARES, NO_KEY } from '../fairness/policy.ts';
import type { FairOrder, KeyShare } from '../fairness/policy.ts';
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
  /** Turns between keys and their running limits (src/fairness). Default: every key alike, no limits. */
  fairness?: FairOrder;
  /** How often each consumer moves jobs from the fair waiting room into free slots. Default 250 ms. */
  feedIntervalMs?: number;
}

interface MessageData {
  priority: Priority;
  /** Moved in from the fair waiting room, which counts it as running until told it is done. */
  fair?: 1;
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
/** Most jobs one script call moves out of the fair waiting room. */
const MAX_PICK = 256;
/** How long jobs moved into BullMQ wait to be confirmed to the room together (`commits`). */
const COMMIT_DELAY_MS = 20;
/** How long a consumer's completions wait to be reported to the room together (reportDone). */
const DONE_DELAY_MS = 5;
/** How long a consumer's registered concurrency counts without a renewal (its process may be gone). */
const CONSUMER_TTL_MS = 10_000;
/** How often a consumer frees the running slots of jobs that left BullMQ unreported. */
const REPAIR_INTERVAL_MS = 30_000;

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


/** Job ids gathered for `delayMs` after the first, then sent together (a send reports its own errors). */
class IdBatch {
  private readonly ids = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly delayMs: number;
  private readonly send: (ids: string[]) => Promise<void>;

  constructor(delayMs: number, send: (ids: string[]) => Promise<void>) {
    this.delayMs = delayMs;
    this.send = send;
  }

  add(ids: readonly string[]): void {
    for (const id of ids) this.ids.add(id);
    this.timer ??= setTimeout(() => void this.flush(), this.delayMs);
  }

  /** Sends what is gathered now. */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.ids.size === 0) return;
    const ids = [...this.ids];
    this.ids.clear();
    await this.send(ids);
  }
}

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
  private readonly fairness: FairOrder;
  /** The fair waiting room in front of BullMQ (absent with fair sharing off). */
  private readonly room: FairRoom | undefined;
  private readonly roomClient: Redis | undefined;
  /** Room → BullMQ moves under way (awaited by close()). */
  private readonly moves = new Set<Promise<void>>();
  /**
   * Jobs moved into BullMQ, confirmed to the room within COMMIT_DELAY_MS, in one call for all moves
   * of that spell. Nothing waits on it: until then a moved job only counts twice against the free
   * slots, and should this process die first the room adds it to BullMQ again once its move is
   * overdue, a no-op for a job BullMQ holds. At one request at a time this saves a script call per job.
   */
  private readonly commits: IdBatch | undefined;
  /** The room as its last answer to this process left it (performance.now() of that answer). */
  private roomSeen = { at: -Infinity, waiting: 0, free: 0 };
  /** Jobs this process has added to BullMQ past the room (mayBypass), ever; and those whose add is under way. */
  private bypassed = 0;
  private bypassesInFlight = 0;
  readonly feedIntervalMs: number;
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
    this.fairness = opts.fairness ?? EVEN_SHARES;
    this.feedIntervalMs = opts.feedIntervalMs ?? 250;
    if (this.fairness.enabled) {
      this.roomClient = new Redis({ ...this.redisOptions, maxRetriesPerRequest: 8 });
      this.roomClient.on('error', () => {}); // surfaced by the commands that fail
      const room = new FairRoom(this.roomClient, `${this.prefix}:${this.queueName}`, { movingTtlMs: Math.max(5_000, Math.min(30_000, this.visibilityTimeoutMs / 2)) });
      this.room = room;
      this.commits = new IdBatch(COMMIT_DELAY_MS, (ids) => room.commit(ids).catch((err) => this.reportError(err)));
    }
    // Enqueues of one event-loop turn go to Redis together: one room script and one addBulk pipeline
    // (jobs that skip the room). Both skip a job id they hold already, so running a failed group's
    // members again alone is safe. (A job skipping the room is not checked against the room's own
    // jobs: were it there already, waiting, it would be delivered twice, which the store's attempt
    // fencing makes harmless. The room is idle whenever a job skips it, so that is a re-enqueue racing
    // another process's.)
    const room = this.room;
    this.adds = new TurnBatcher({
      key: (m) => m.jobId,
      run: room
        ? async (messages) => {
            const direct: QueueMessage[] = [];
            const entries: RoomEntry[] = [];
            for (const m of messages) {
              const share = this.fairness.shareOf(m.keyId);
              if (this.mayBypass(share)) direct.push(m);
              else entries.push({ jobId: m.jobId, rank: PRIORITY_RANK[m.priority], keyId: m.keyId ?? NO_KEY, share });
            }
            const roomCall = entries.length > 0 ? this.ask(() => room.enqueue(entries, MAX_PICK)) : undefined;
            await Promise.all([direct.length > 0 ? this.addPastRoom(direct) : undefined, roomCall]);
            return messages.map(() => undefined);
          }
        : async (messages) => {
            await this.addToBullmq(messages);
            return messages.map(() => undefined);
          },
    });
    // ping() must fail fast while Redis is down, so it has a connection that never queues commands.
    this.pingClient = new Redis({ ...this.redisOptions, enableOfflineQueue: false, maxRetriesPerRequest: 1 });
    this.pingClient.on('error', () => {}); // surfaced by ping() itself
  }

  private async addToBullmq(messages: QueueMessage[]): Promise<void> {
    if (messages.length === 1) await this.queue.add('job', { priority: messages[0]!.priority }, this.jobOptions(messages[0]!.jobId, messages[0]!.priority));
    else await this.queue.addBulk(messages.map((m) => ({ name: 'job', data: { priority: m.priority }, opts: this.jobOptions(m.jobId, m.priority) })));
  }

  private async addPastRoom(messages: QueueMessage[]): Promise<void> {
    this.bypassesInFlight += messages.length;
    try {
      await this.addToBullmq(messages);
    } finally {
      this.bypassesInFlight -= messages.length;
    }
  }

  /**
   * Makes a room call, moves in what it handed out, and notes what the room holds now. Slots taken
   * by jobs that skipped the room and may not have been in BullMQ when the room counted (added while
   * the call was under way, or still being added when it was made: the adds go on another connection)
   * are counted off its answer. Where the room counted them after all, the estimate is low, and the
   * next job asks the room.
   */
  private async ask(call: () => Promise<RoomAnswer>): Promise<void> {
    const mark = this.bypassed;
    const unlanded = this.bypassesInFlight;
    const answer = await call();
    this.roomSeen = { at: performance.now(), waiting: answer.state.waiting, free: answer.state.free - (this.bypassed - mark) - unlanded };
    this.moveIn(answer.picks);
  }

  /** The room's last answer is recent and said it holds nothing waiting. */
  private roomIdle(): boolean {
    const seen = this.roomSeen;
    return seen.waiting === 0 && performance.now() - seen.at <= this.feedIntervalMs;
  }

  /**
   * Whether a job of this share may go straight to BullMQ: the room would hand it on at once (nothing
   * waiting, a free slot, as of its last answer) and no running limit needs its count. Takes the slot.
   */
  private mayBypass(share: KeyShare): boolean {
    if (share.maxRunning != null || share.groupMaxRunning != null) return false;
    if (!this.roomIdle() || this.roomSeen.free <= 0) return false;
    this.roomSeen.free--;
    this.bypassed++;
    return true;
  }

  async enqueue(message: QueueMessage): Promise<void> {
    this.assertOpen();
    const rank = PRIORITY_RANK[message.priority];
    if (rank === undefined) throw new Error(`unknown priority "${message.priority}"`);
    await this.adds.call(message);
  }

  /**
   * Adds jobs the room handed out to BullMQ, then tells the room they are there. Runs in the
   * background: the jobs are durable in the room meanwhile, and should this fail (or the process
   * die) the room hands them out again once their move is overdue.
   */
  private moveIn(picks: RoomPick[]): void {
    if (picks.length === 0 || !this.room) return;
    const room = this.room;
    const move = (async () => {
      await this.queue.addBulk(
        picks.map((p) => {
          const priority = RANK_TO_PRIORITY.get(p.rank) ?? 'normal';
          return { name: 'job', data: { priority, fair: 1 as const }, opts: this.jobOptions(p.jobId, priority) };
        }),
      );
      this.commits?.add(picks.map((p) => p.jobId));
    })().catch((err) => this.reportError(err));
    this.moves.add(move);
    void move.finally(() => this.moves.delete(move));
  }

  private jobOptions(jobId: string, priority: Priority) {
    return {
      jobId,
      priority: PRIORITY_RANK[priority],
      attempts: UNBOUNDED_ATTEMPTS,
      backoff: { type: 'fixed' as const, delay: this.retryDelayMs },
      removeOnComplete: true,
      removeOnFail: true,
    };
  }

  async remove(jobId: string): Promise<boolean> {
    this.assertOpen();
    if (this.room && (await this.room.remove(jobId))) return true;
    const state = await this.queue.getJobState(jobId);
    if (state === 'unknown' || state === 'active' || state === 'completed' || state === 'failed') return false;
    // BullMQ refuses (0) when the job is locked, i.e. a worker took it in between.
    const removed = (await this.queue.remove(jobId)) === 1;
    // Moved in from the room: its key's running slot is free again.
    const room = this.room;
    if (removed && room) await this.ask(() => room.done([jobId], MAX_PICK));
    return removed;
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
      room: this.room && {
        room: this.room,
        feedIntervalMs: this.feedIntervalMs,
        ask: (call) => this.ask(call),
        idle: () => this.roomIdle(),
      },
      onDone: (c) => this.consumers.delete(c),
    });
    this.consumers.add(consumer);
    return consumer;
  }

  /** Waiting: in BullMQ (waiting, prioritized, delayed for a retry) and in the fair waiting room. */
  async counts(): Promise<QueueCounts> {
    const [c, r] = await Promise.all([this.queue.getJobCounts('waiting', 'prioritized', 'delayed', 'active'), this.room?.counts()]);
    return {
      waiting: (c.waiting ?? 0) + (c.prioritized ?? 0) + (c.delayed ?? 0) + (r ? r.waiting + r.moving : 0),
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
    // Moves under way finish (or fail, and the room hands their jobs out again later).
    await withTimeout(Promise.allSettled([...this.moves]), CLOSE_TIMEOUT_MS, 'moving jobs into BullMQ').catch(() => {});
    if (this.commits) await withTimeout(this.commits.flush(), CLOSE_TIMEOUT_MS, 'confirming moved jobs').catch(() => {});
    // QUIT waits for a connection that is not there; a client that is not connected is just dropped.
    const quit = (c: Redis) => (c.status === 'ready' ? withTimeout(c.quit(), CLOSE_TIMEOUT_MS, 'QUIT').catch(() => c.disconnect()) : Promise.resolve(c.disconnect()));
    await Promise.allSettled([this.queue.close(), quit(this.pingClient), ...(this.roomClient ? [quit(this.roomClient)] : [])]);
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
  /**
   * The fair waiting room this consumer feeds free slots from (absent with fair sharing off): what it
   * handed out is moved in and its answer noted (ask); idle() says whether the room's last answer to
   * any call of this process was recent and had nothing waiting.
   */
  room: { room: FairRoom; feedIntervalMs: number; ask: (call: () => Promise<RoomAnswer>) => Promise<void>; idle: () => boolean } | undefined;
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
  /** This consumer in the fair waiting room's register of worker slots. */
  private readonly consumerId = randomUUID();
  private feedTimer: NodeJS.Timeout | undefined;
  private repairTimer: NodeJS.Timeout | undefined;
  private feeding = false;
  /**
   * Completions, reported to the room DONE_DELAY_MS after the first, together: under a backlog that
   * is one script call and one BullMQ add for several jobs instead of one each, and no worker idles
   * meanwhile (each slot has a job waiting for it in BullMQ, the lookahead).
   */
  private readonly dones: IdBatch | undefined;

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

    const fair = cfg.room;
    if (fair) {
      this.dones = new IdBatch(DONE_DELAY_MS, (ids) => fair.ask(() => fair.room.done(ids, MAX_PICK)).catch((err) => this.cfg.reportError(err)));
      // A finished job frees its key's running slot and a worker slot (dones). A job
      // that skipped the room (not `fair`) holds no running slot there; while the room is idle, there
      // is nothing for its worker slot either, and the room is not told.
      this.worker.on('completed', (job) => {
        if (job.id && (job.data?.fair === 1 || !fair.idle())) this.dones!.add([job.id]);
      });
      this.feedTimer = setInterval(() => this.feed(), fair.feedIntervalMs);
      this.feedTimer.unref();
      this.repairTimer = setInterval(() => void fair.room.repair().catch((err) => this.cfg.reportError(err)), REPAIR_INTERVAL_MS);
      this.repairTimer.unref();
      this.feed();
    }
  }

  /** Registers this consumer's slots (again) and moves jobs from the room into the free ones. */
  private feed(): void {
    const fair = this.cfg.room;
    if (!fair || this.feeding || this.stopping) return;
    this.feeding = true;
    fair
      .ask(() => fair.room.feed(MAX_PICK, { id: this.consumerId, concurrency: this.cfg.concurrency, ttlMs: CONSUMER_TTL_MS }))
      .catch((err) => this.cfg.reportError(err))
      .finally(() => (this.feeding = false));
  }

  /** Reports what finished, stops feeding and takes this consumer's slots out of the room's register. */
  private async leaveRoom(): Promise<void> {
    clearInterval(this.feedTimer);
    clearInterval(this.repairTimer);
    if (!this.cfg.room) return;
    if (this.dones) await withTimeout(this.dones.flush(), CLOSE_TIMEOUT_MS, 'reporting finished jobs to the fair waiting room').catch((err) => this.cfg.reportError(err));
    await withTimeout(this.cfg.room.room.deregister(this.consumerId), CLOSE_TIMEOUT_MS, 'leaving the fair waiting room').catch((err) => this.cfg.reportError(err));
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
      const left = this.leaveRoom();
      for (const entry of this.inFlight.values()) {
        entry.controller.abort(leaseLost('queue closed: the message comes back after the visibility timeout'));
        entry.release('abandon');
      }
      try {
        await withTimeout(this.worker.close(true), CLOSE_TIMEOUT_MS, 'closing the BullMQ worker (is Redis reachable?)');
      } catch (err) {
        this.cfg.reportError(err);
      }
      await left;
      this.cfg.onDone(this);
    })();
    return this.abandoned;
  }

  private async doStop(graceMs: number): Promise<void> {
    this.stopping = true;
    // In parallel with the grace period: a Redis that is down must not make the stop any longer.
    const left = this.leaveRoom();
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
    await left;
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
