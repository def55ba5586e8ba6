/**
 * The embedded queue: messages live in the metadata database (`queue_messages`, migration 002), so a
 * single-node easel needs nothing beyond SQLite, and several processes can share one Postgres.
 *
 * A consumer claims messages by writing a lease (`lease_owner`, `lease_until`) in one atomic statement
 * and renews all its leases with one statement per heartbeat. A message whose lease has expired (its
 * consumer died) is claimable again, with `delivery_count` incremented. Acknowledging deletes the row,
 * fenced by owner so a consumer that lost its lease cannot delete a message someone else now holds.
 *
 * Claims come in batches of up to the free concurrency. Local enqueues wake local consumers at once
 * through an in-process emitter; messages enqueued by other processes (or coming back from a dead
 * consumer) are found by polling every `pollIntervalMs`.
 *
 * Fair sharing (src/fairness): within a priority, messages are taken in `vtag` order, a virtual start
 * time given at enqueue (start-time fair queueing): a key's next message starts 1/weight after its
 * last waiting one, and a key with nothing waiting starts level with the head of the queue. So a key
 * that queued 500 jobs has them spread out in turns, and another key's first job waits for at most
 * about one of them. This is weighted fair queueing with the tags kept on the rows: the order is the
 * claim's index scan, it needs no per-key state beside the messages, and every process sharing the
 * database computes the same order (deficit round robin would need a shared round pointer updated on
 * every claim). Running limits are checked inside the claim statement, one message per statement,
 * so concurrent claims (other processes included) can never start more than a key's limit.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { sql } from 'kysely';
import type { ExpressionBuilder, Kysely } from 'kysely';
import { PRIORITIES, PRIORITY_RANK } from '../core/job.ts';
import type { Priority } from '../core/job.ts';
import { rawStatement } from '../store/raw-statement.ts';
import type { RawStatement } from '../store/raw-statement.ts';
import type { MetadataDb } from '../store/database.ts';
import type { Database, Row } from '../store/schema.ts';
import { leaseLost, throttledWarn } from './queue-support.ts';
import { EVEN_SHARES, NO_KEY } from '../fairness/policy.ts';
import type { FairOrder } from '../fairness/policy.ts';
import type {
  ConsumeOptions,
  Delivery,
  DeliveryHandler,
  JobQueue,
  QueueConsumer,
  QueueCounts,
  QueueMessage,
} from './job-queue.ts';

/** What a claim reads of a `queue_messages` row. */
type ClaimedRow = Pick<Row<'queue_messages'>, 'job_id' | 'priority' | 'vtag' | 'seq' | 'delivery_count'>;

export interface EmbeddedQueueOptions {
  db: MetadataDb;
  /** How long a claim holds a message without a heartbeat. Default 60 s; renewed every third of it. */
  visibilityTimeoutMs?: number;
  /** How often idle consumers look for messages from other processes. Default 250 ms. */
  pollIntervalMs?: number;
  /** Prefix of the lease owner written on claimed rows; default a random id per queue instance. */
  consumerId?: string;
  /** How long a message whose handler threw waits before it is delivered again. Default 200 ms. */
  retryDelayMs?: number;
  /** Where background failures (claim, heartbeat, ack) are reported. Default: console.warn, throttled. */
  onError?: (err: unknown) => void;
  /** Turns between keys and their running limits (src/fairness). Default: every key alike, no limits. */
  fairness?: FairOrder;
}

const RANK_TO_PRIORITY = new Map<number, Priority>(PRIORITIES.map((p) => [PRIORITY_RANK[p], p]));

function priorityOf(rank: number): Priority {
  return RANK_TO_PRIORITY.get(rank) ?? 'normal';
}

// FIFO order within a priority: microseconds since the epoch, strictly increasing within a process
// (1.8e15 today, well inside a double's exact integers). Across processes it orders by the millisecond.
let lastSeq = 0;
function nextSeq(): number {
  lastSeq = Math.max(Date.now() * 1000, lastSeq + 1);
  return lastSeq;
}

// One wake-up channel per database handle, shared by every queue instance on it in this process.
const buses = new WeakMap<object, EventEmitter>();
function busFor(db: object): EventEmitter {
  let bus = buses.get(db);
  if (!bus) {
    bus = new EventEmitter();
    bus.setMaxListeners(0);
    buses.set(db, bus);
  }
  return bus;
}

/** Postgres advisory lock serializing claims that check running limits ('easl' + 1). */
const CLAIM_LOCK = 0x6561736c01;

/**
 * One message, the first in (priority, vtag, seq) order whose key and group are under their running
 * limits, counting the leases held right now. Parameters in text order: on SQLite the lease (owner,
 * until) then now ×4; on Postgres, whose WITH comes first, now ×4 then the lease.
 */
const claimOneStatement = (() => {
  const made = new Map<MetadataDb['dialect'], RawStatement>();
  const held = `held_keys as materialized (
      select key_id, count(*) as n from queue_messages where lease_owner is not null and lease_until >= ? group by key_id),
    held_grps as materialized (
      select grp, count(*) as n from queue_messages where lease_owner is not null and lease_until >= ? and grp is not null group by grp)`;
  const pick = `select m.job_id from queue_messages m
      where m.available_at <= ? and (m.lease_until is null or m.lease_until < ?)
        and (m.max_running is null or m.max_running > coalesce((select h.n from held_keys h where h.key_id = m.key_id), 0))
        and (m.grp_max_running is null or m.grp_max_running > coalesce((select g.n from held_grps g where g.grp = m.grp), 0))
      order by m.priority, m.vtag, m.seq limit 1`;
  const set = `set lease_owner = ?, lease_until = ?, delivery_count = delivery_count + 1`;
  const returning = `returning job_id, priority, vtag, seq, delivery_count`;
  return (dialect: MetadataDb['dialect']): RawStatement => {
    let stmt = made.get(dialect);
    if (!stmt) {
      stmt =
        dialect === 'postgres'
          ? rawStatement(dialect, `with ${held}, next as materialized (${pick} for update of m skip locked)
              update queue_messages ${set} where job_id in (select job_id from next) ${returning}`)
          : rawStatement(dialect, `update queue_messages ${set} where job_id = (with ${held} ${pick}) ${returning}`);
      made.set(dialect, stmt);
    }
    return stmt;
  };
})();

export class EmbeddedQueue implements JobQueue {
  readonly kind = 'embedded' as const;
  private readonly mdb: MetadataDb;
  private readonly db: Kysely<Database>;
  private readonly bus: EventEmitter;
  readonly visibilityTimeoutMs: number;
  readonly pollIntervalMs: number;
  readonly retryDelayMs: number;
  private readonly consumerId: string;
  private readonly reportError: (err: unknown) => void;
  private readonly consumers = new Set<EmbeddedConsumer>();
  /** The enqueue, as fixed SQL text (it runs once per job; see store/raw-statement.ts). */
  private readonly insertMessage: RawStatement;
  /** The same with the message's turn (vtag) found in the same statement. */
  private readonly insertFairMessage: RawStatement;
  private readonly fairness: FairOrder;
  private consumerSeq = 0;
  private closed = false;

  constructor(opts: EmbeddedQueueOptions) {
    this.mdb = opts.db;
    this.db = opts.db.db;
    this.bus = busFor(opts.db.db);
    this.visibilityTimeoutMs = opts.visibilityTimeoutMs ?? 60_000;
    this.pollIntervalMs = opts.pollIntervalMs ?? 250;
    this.retryDelayMs = opts.retryDelayMs ?? 200;
    this.consumerId = opts.consumerId ?? randomUUID();
    this.reportError = opts.onError ?? throttledWarn('embedded queue');
    this.fairness = opts.fairness ?? EVEN_SHARES;
    this.insertMessage = rawStatement(
      opts.db.dialect,
      `insert into queue_messages (job_id, priority, seq, enqueued_at, available_at, lease_owner, lease_until, delivery_count, key_id)
       values (?, ?, ?, ?, ?, null, null, 0, ?) on conflict (job_id) do nothing`,
    );
    // The turn: 1/weight after the key's last waiting message, else level with the head of the
    // priority (the first waiting message), else 0. Two index seeks (queue_messages_waiting_key and
    // queue_messages_next), no state beside the rows.
    this.insertFairMessage = rawStatement(
      opts.db.dialect,
      `insert into queue_messages (job_id, priority, seq, enqueued_at, available_at, lease_owner, lease_until, delivery_count, key_id, vtag, max_running, grp, grp_max_running)
       values (?, ?, ?, ?, ?, null, null, 0, ?,
         coalesce(
           (select w.vtag from queue_messages w where w.key_id = ? and w.priority = ? and w.lease_owner is null order by w.vtag desc limit 1) + ?,
           (select h.vtag from queue_messages h where h.priority = ? and h.lease_owner is null and h.available_at <= ? order by h.vtag limit 1),
           0),
         ?, ?, ?)
       on conflict (job_id) do nothing`,
    );
    if (!(this.visibilityTimeoutMs > 0)) throw new Error('visibilityTimeoutMs must be positive');
    if (!(this.pollIntervalMs > 0)) throw new Error('pollIntervalMs must be positive');
  }

  async enqueue(message: QueueMessage): Promise<void> {
    this.assertOpen();
    const rank = PRIORITY_RANK[message.priority];
    if (rank === undefined) throw new Error(`unknown priority "${message.priority}"`);
    const now = Date.now();
    const keyId = message.keyId ?? NO_KEY;
    if (this.fairness.enabled) {
      const share = this.fairness.shareOf(keyId);
      await this.insertFairMessage(this.db, [
        message.jobId, rank, nextSeq(), now, now, keyId,
        keyId, rank, 1 / share.weight,
        rank, now,
        share.maxRunning, share.group, share.groupMaxRunning,
      ]);
    } else {
      await this.insertMessage(this.db, [message.jobId, rank, nextSeq(), now, now, keyId]);
    }
    this.bus.emit('wake');
  }

  async remove(jobId: string): Promise<boolean> {
    this.assertOpen();
    const now = Date.now();
    const res = await this.db
      .deleteFrom('queue_messages')
      .where('job_id', '=', jobId)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
      .executeTakeFirst();
    return Number(res.numDeletedRows) > 0;
  }

  consume(handler: DeliveryHandler, options: ConsumeOptions): QueueConsumer {
    this.assertOpen();
    const concurrency = Math.floor(options.concurrency);
    if (!(concurrency >= 1)) throw new Error('concurrency must be at least 1');
    const consumer = new EmbeddedConsumer({
      db: this.db,
      dialect: this.mdb.dialect,
      bus: this.bus,
      owner: `${this.consumerId}/${++this.consumerSeq}`,
      handler,
      concurrency,
      visibilityTimeoutMs: this.visibilityTimeoutMs,
      pollIntervalMs: this.pollIntervalMs,
      retryDelayMs: this.retryDelayMs,
      reportError: this.reportError,
      limitsRunning: this.fairness.enabled && this.fairness.limitsRunning,
      onDone: (c) => this.consumers.delete(c),
    });
    this.consumers.add(consumer);
    consumer.start();
    return consumer;
  }

  async counts(): Promise<QueueCounts> {
    const now = Date.now();
    const { rows } = await sql<{ total: number; active: number | null }>`
      select count(*) as total,
             sum(case when lease_until is not null and lease_until >= ${now} then 1 else 0 end) as active
      from queue_messages`.execute(this.db);
    const total = rows[0]?.total ?? 0;
    const active = rows[0]?.active ?? 0;
    return { waiting: total - active, active };
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.db);
  }

  /**
   * Stops every consumer still running on this instance without handing its messages back — as a
   * crash would: they return after the visibility timeout. Call `stop(graceMs)` on consumers first for
   * a clean hand-over. Leaves the database open (it belongs to the caller).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.consumers].map((c) => c.abandon()));
    this.consumers.clear();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('embedded queue is closed');
  }
}

interface ConsumerConfig {
  db: Kysely<Database>;
  dialect: MetadataDb['dialect'];
  bus: EventEmitter;
  owner: string;
  handler: DeliveryHandler;
  concurrency: number;
  visibilityTimeoutMs: number;
  pollIntervalMs: number;
  retryDelayMs: number;
  reportError: (err: unknown) => void;
  /** Some key or group has a running limit: claim one message per statement, checking them. */
  limitsRunning: boolean;
  onDone: (c: EmbeddedConsumer) => void;
}

interface InFlight {
  jobId: string;
  deliveryCount: number;
  controller: AbortController;
  /** Until when the database lease is known to hold (as of the last successful claim or renewal). */
  leaseUntil: number;
  /** True once this consumer no longer holds the lease (acked, handed back, lost or abandoned). */
  released: boolean;
  /** Settles when the handler has finished and its ack / hand-back has been written. */
  finished: Promise<void>;
}

class EmbeddedConsumer implements QueueConsumer {
  private readonly cfg: ConsumerConfig;
  /** Deliveries whose lease this consumer holds, by job id. */
  private readonly held = new Map<string, InFlight>();
  /** Deliveries whose handler (or its ack) has not finished: what counts against concurrency. */
  private readonly running = new Set<InFlight>();
  /** Database work in progress (claims, heartbeats, acks), awaited before stop/abandon resolve. */
  private readonly pending = new Set<Promise<unknown>>();
  private claiming = false;
  private pumpAgain = false;
  private stopping = false;
  private dead = false;
  private pollTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private readonly retryTimers = new Set<NodeJS.Timeout>();
  private ackBatch: { jobId: string; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private ackScheduled = false;
  private stopPromise: Promise<void> | undefined;
  /**
   * False once a claim came back short with no wake-up since: the queue holds nothing for us, so a
   * finished handler does not claim again (an empty claim is still a write). A local enqueue, a
   * hand-back or the poll timer (other processes, expired leases) sets it again.
   */
  private maybeMore = true;
  private readonly onWake = () => {
    this.maybeMore = true;
    this.pump();
  };

  constructor(cfg: ConsumerConfig) {
    this.cfg = cfg;
  }

  start(): void {
    this.cfg.bus.on('wake', this.onWake);
    this.pollTimer = setInterval(this.onWake, this.cfg.pollIntervalMs);
    const beat = Math.max(50, Math.floor(this.cfg.visibilityTimeoutMs / 3));
    this.heartbeatTimer = setInterval(() => this.heartbeat(), beat);
    this.pump();
  }

  stop(graceMs: number): Promise<void> {
    this.stopPromise ??= this.doStop(graceMs);
    return this.stopPromise;
  }

  /** The crash path (queue closed): stop everything, abort signals, leave leases to expire. */
  async abandon(): Promise<void> {
    if (this.dead) return;
    this.dead = true;
    this.stopping = true;
    this.stopTaking();
    this.stopHeartbeat();
    for (const entry of this.held.values()) {
      entry.released = true;
      entry.controller.abort(leaseLost('queue closed: the message comes back after the visibility timeout'));
    }
    this.held.clear();
    await this.drainPending();
    this.cfg.onDone(this);
  }

  private async doStop(graceMs: number): Promise<void> {
    const deadline = Date.now() + Math.max(0, graceMs);
    this.stopping = true;
    this.stopTaking();
    // A claim in flight lands first: what it took is handed straight back (see pump).
    await this.drainPending();
    if (this.dead) return;
    if (this.running.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      const graceOver = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
      });
      await Promise.race([Promise.all([...this.running].map((e) => e.finished)), graceOver]);
      clearTimeout(timer);
    }
    if (this.dead) return;
    const leftovers = [...this.held.values()].filter((e) => !e.released);
    this.held.clear();
    for (const entry of leftovers) {
      entry.released = true;
      entry.controller.abort(leaseLost('consumer stopped: the message was handed back to the queue'));
    }
    if (leftovers.length > 0) {
      try {
        await this.release(leftovers.map((e) => e.jobId), Date.now());
      } catch (err) {
        this.cfg.reportError(err); // they come back after the visibility timeout instead
      }
      this.cfg.bus.emit('wake');
    }
    // Acks and hand-backs of handlers that finished in time.
    await this.drainPending();
    this.stopHeartbeat();
    this.dead = true;
    this.cfg.onDone(this);
  }

  private stopTaking(): void {
    this.cfg.bus.off('wake', this.onWake);
    clearInterval(this.pollTimer);
    this.pollTimer = undefined;
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = undefined;
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
  }

  private async drainPending(): Promise<void> {
    while (this.pending.size > 0) await Promise.allSettled([...this.pending]);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.pending.add(p);
    const done = () => this.pending.delete(p);
    p.then(done, done);
    return p;
  }

  private pump(): void {
    if (this.stopping) return;
    if (this.claiming) {
      this.pumpAgain = true;
      return;
    }
    const want = this.cfg.concurrency - this.running.size;
    if (want <= 0) return;
    this.claiming = true;
    this.pumpAgain = false;
    this.track(this.claim(want)).then(
      (rows) => {
        this.claiming = false;
        if (this.stopping) {
          // Stopped while claiming: give these back at once (unless the queue was closed: then they
          // expire like any abandoned lease).
          if (!this.dead && rows.length > 0) {
            this.track(this.release(rows.map((r) => r.job_id), Date.now())).then(
              () => this.cfg.bus.emit('wake'),
              (err) => this.cfg.reportError(err),
            );
          }
          return;
        }
        if (rows.length < want && !this.pumpAgain) this.maybeMore = false;
        for (const row of rows) this.dispatch(row);
        if (this.pumpAgain) this.pump();
      },
      (err) => {
        this.claiming = false;
        this.cfg.reportError(err); // the next poll tries again
      },
    );
  }

  private async claim(n: number): Promise<ClaimedRow[]> {
    if (this.cfg.limitsRunning) return this.claimWithinLimits(n);
    const { db } = this.cfg;
    const now = Date.now();
    const next = db
      .selectFrom('queue_messages')
      .select('job_id')
      .where('available_at', '<=', now)
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
      .orderBy('priority')
      .orderBy('vtag')
      .orderBy('seq')
      .limit(n);
    const lease = (eb: ExpressionBuilder<Database, 'queue_messages'>) => ({
      lease_owner: this.cfg.owner,
      lease_until: now + this.cfg.visibilityTimeoutMs,
      delivery_count: eb('delivery_count', '+', 1),
    });
    const returned = ['job_id', 'priority', 'vtag', 'seq', 'delivery_count'] as const;
    // Several processes may claim at once. On Postgres the candidates are picked once, in a
    // materialized CTE, skipping rows another claim has locked: inside `in (subquery)` the planner
    // may run a `limit … skip locked` subquery more than once, each time finding other rows, and so
    // lease more messages than asked for (a consumer then ran past its concurrency). SQLite runs one
    // write statement at a time and evaluates the subquery once, so the single UPDATE is atomic there.
    const rows =
      this.cfg.dialect === 'postgres'
        ? await db
            .with((cte) => cte('next').materialized(), () => next.forUpdate().skipLocked())
            .updateTable('queue_messages')
            .set(lease)
            .where('job_id', 'in', (eb) => eb.selectFrom('next').select('job_id'))
            .returning(returned)
            .execute()
        : await db.updateTable('queue_messages').set(lease).where('job_id', 'in', next).returning(returned).execute();
    // RETURNING order is unspecified: deliver in queue order.
    return rows.sort((a, b) => a.priority - b.priority || a.vtag - b.vtag || a.seq - b.seq);
  }

  /**
   * Claims up to `n` messages one statement at a time, each skipping keys and groups at their running
   * limit as counted in that statement (held leases), so no interleaving of claims can start more.
   * SQLite runs one writer at a time and this process's statements of one turn share a transaction;
   * on Postgres the claims of every process take turns on an advisory lock.
   */
  private async claimWithinLimits(n: number): Promise<ClaimedRow[]> {
    const { db, dialect } = this.cfg;
    const claimOne = claimOneStatement(dialect);
    const params = () => {
      const now = Date.now();
      const lease = [this.cfg.owner, now + this.cfg.visibilityTimeoutMs];
      return dialect === 'postgres' ? [now, now, now, now, ...lease] : [...lease, now, now, now, now];
    };
    const rows: ClaimedRow[] = [];
    if (dialect === 'postgres') {
      await db.transaction().execute(async (trx) => {
        await sql`select pg_advisory_xact_lock(${CLAIM_LOCK})`.execute(trx);
        for (let i = 0; i < n; i++) {
          const got = (await claimOne<ClaimedRow>(trx, params())).rows[0];
          if (!got) break;
          rows.push(got);
        }
      });
    } else {
      // Issued together: one group-commit transaction, run in order, each seeing the ones before.
      const results = await Promise.all(Array.from({ length: n }, () => claimOne<ClaimedRow>(db, params())));
      for (const r of results) if (r.rows[0]) rows.push(r.rows[0]);
    }
    return rows;
  }

  private dispatch(row: ClaimedRow): void {
    const jobId = row.job_id;
    const deliveryCount = row.delivery_count;
    // Our own earlier lease on this message expired and we claimed it again: the old run is stale.
    const stale = this.held.get(jobId);
    if (stale) this.lose(stale, 'lease expired and the message was delivered again');

    const controller = new AbortController();
    const entry: InFlight = {
      jobId,
      deliveryCount,
      controller,
      leaseUntil: Date.now() + this.cfg.visibilityTimeoutMs,
      released: false,
      finished: Promise.resolve(),
    };
    this.held.set(jobId, entry);
    this.running.add(entry);
    const delivery: Delivery = {
      message: { jobId, priority: priorityOf(row.priority) },
      deliveryCount,
      signal: controller.signal,
    };
    let run: Promise<void>;
    try {
      run = Promise.resolve(this.cfg.handler(delivery));
    } catch (err) {
      run = Promise.reject(err);
    }
    entry.finished = run
      .then(
        () => this.settle(entry, true),
        () => this.settle(entry, false),
      )
      .catch((err) => this.cfg.reportError(err))
      .finally(() => {
        this.running.delete(entry);
        if (this.maybeMore) this.pump();
      });
  }

  private async settle(entry: InFlight, ok: boolean): Promise<void> {
    if (entry.released) return; // handed back at stop, lost, or abandoned: not ours to settle
    entry.released = true;
    if (this.held.get(entry.jobId) === entry) this.held.delete(entry.jobId);
    const { db, owner } = this.cfg;
    if (ok) {
      await this.track(this.ack(entry.jobId));
      return;
    }
    const delay = this.cfg.retryDelayMs;
    await this.track(
      db
        .updateTable('queue_messages')
        .set({ lease_owner: null, lease_until: null, available_at: Date.now() + delay })
        .where('job_id', '=', entry.jobId)
        .where('lease_owner', '=', owner)
        .where('delivery_count', '=', entry.deliveryCount)
        .execute(),
    );
    if (delay <= 0) {
      this.cfg.bus.emit('wake');
    } else if (!this.stopping) {
      const t = setTimeout(() => {
        this.retryTimers.delete(t);
        this.cfg.bus.emit('wake');
      }, delay);
      t.unref();
      this.retryTimers.add(t);
    }
  }

  /**
   * Acknowledges (deletes) a message this consumer holds. Acks of handlers that finish close together
   * go out as one statement. Fencing by owner suffices: should this consumer claim a message again
   * after its own lease lapsed, the stale delivery is released first (see dispatch) and never acks.
   */
  private ack(jobId: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.ackBatch.push({ jobId, resolve, reject });
      if (!this.ackScheduled) {
        this.ackScheduled = true;
        setImmediate(() => void this.flushAcks());
      }
    });
  }

  private async flushAcks(): Promise<void> {
    const batch = this.ackBatch;
    this.ackBatch = [];
    this.ackScheduled = false;
    try {
      await this.cfg.db
        .deleteFrom('queue_messages')
        .where('lease_owner', '=', this.cfg.owner)
        .where(
          'job_id',
          'in',
          batch.map((a) => a.jobId),
        )
        .execute();
      for (const a of batch) a.resolve();
      // A key that was at its running limit may have room now: claim again (other processes poll).
      if (this.cfg.limitsRunning) this.cfg.bus.emit('wake');
    } catch (err) {
      for (const a of batch) a.reject(err);
    }
  }

  /** Clears the lease of messages this consumer holds so any consumer can take them now. */
  private async release(jobIds: string[], availableAt: number): Promise<void> {
    if (jobIds.length === 0) return;
    await this.cfg.db
      .updateTable('queue_messages')
      .set({ lease_owner: null, lease_until: null, available_at: availableAt })
      .where('lease_owner', '=', this.cfg.owner)
      .where('job_id', 'in', jobIds)
      .execute();
  }

  private lose(entry: InFlight, why: string): void {
    if (entry.released) return;
    entry.released = true;
    if (this.held.get(entry.jobId) === entry) this.held.delete(entry.jobId);
    entry.controller.abort(leaseLost(`lease on ${entry.jobId} lost: ${why}`));
  }

  private heartbeat(): void {
    if (this.dead) return;
    const entries = [...this.held.values()].filter((e) => !e.released);
    if (entries.length === 0) return;
    const until = Date.now() + this.cfg.visibilityTimeoutMs;
    this.track(
      this.cfg.db
        .updateTable('queue_messages')
        .set({ lease_until: until })
        .where('lease_owner', '=', this.cfg.owner)
        .where(
          'job_id',
          'in',
          entries.map((e) => e.jobId),
        )
        .returning(['job_id', 'delivery_count'])
        .execute(),
    ).then(
      (rows) => {
        const renewed = new Map(rows.map((r) => [r.job_id, r.delivery_count]));
        for (const entry of entries) {
          if (entry.released) continue; // settled while the renewal ran
          if (renewed.get(entry.jobId) === entry.deliveryCount) entry.leaseUntil = until;
          else this.lose(entry, 'another consumer holds it now');
        }
      },
      (err) => {
        this.cfg.reportError(err);
        const now = Date.now();
        for (const entry of entries) if (now >= entry.leaseUntil) this.lose(entry, 'lease renewal failed until it expired');
      },
    );
  }
}
