/**
 * Job events (status changes, progress, partial images, cancel requests) fanned out to whoever waits on a job:
 * synchronous API requests, event streams, workers watching for cancels. In one process an
 * EventEmitter does it; across processes Redis pub/sub carries the same events. Listeners must not
 * rely on events alone: the store is the truth, and waiters re-read it.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { loadOptional } from '../core/optional-module.ts';
import type { JobEvent } from '../core/job.ts';

/**
 * A partial (in-progress) image a backend reported while running (e.g. OpenAI's streamed
 * `partial_images`). Unlike status and progress, which the job row holds, partial images exist only
 * as events, so the RecordingEventBus keeps them in `job_events` for streams that reconnect.
 */
export interface PartialImageEvent {
  type: 'partial_image';
  jobId: string;
  /** The attempt that produced it; a stale attempt's images are dropped. */
  attempt: number;
  /** Which of the job's images this is a partial of (0-based across the whole job). */
  index: number;
  /** The backend's count of partials for that image (0-based). */
  partialIndex: number;
  b64Json: string;
  mediaType: string;
  at: number;
  /** Set once recorded: the event's id on the job's event stream (see event-ids.ts). */
  eventId?: number;
}

/** What the bus carries: the core job events plus partial images. */
export type BusEvent = JobEvent | PartialImageEvent;

/**
 * Declared through a method so that a listener written for the core JobEvent union alone still fits
 * (method parameters are compared bivariantly); such a listener just never matches `partial_image`.
 */
export type JobEventListener = { listener(event: BusEvent): void }['listener'];

/** An event kept in `job_events`, as a reconnecting stream reads it back. */
export interface RecordedJobEvent {
  /** Its id on the job's event stream. */
  id: number;
  type: 'partial_image';
  /** The event's data on the stream, less the job id. */
  data: Record<string, unknown>;
}

export interface JobEventBus {
  publish(event: BusEvent): void;
  /** Events for one job. Returns the unsubscribe function. */
  subscribe(jobId: string, listener: JobEventListener): () => void;
  /** Every event (workers use it to see cancel requests for the jobs they hold). */
  subscribeAll(listener: JobEventListener): () => void;
  /** Recorded events of a job with ids above `afterId`, oldest first (absent when nothing is recorded). */
  history?(jobId: string, afterId: number): Promise<RecordedJobEvent[]>;
  close(): Promise<void>;
}

/** How a partial image looks on the event stream (and in `job_events.data`). */
export function partialImageData(e: PartialImageEvent): Record<string, unknown> {
  return { index: e.index, partial_image_index: e.partialIndex, b64_json: e.b64Json, media_type: e.mediaType };
}

/** Where recorded events are kept (SqlJobEventLog). */
export interface JobEventLog {
  /** Records a partial image of a running attempt; its event id, or undefined when that attempt no longer runs the job. */
  append(event: PartialImageEvent): Promise<number | undefined>;
  listAfter(jobId: string, afterId: number): Promise<RecordedJobEvent[]>;
}

export class LocalEventBus implements JobEventBus {
  private readonly emitter = new EventEmitter();
  private static readonly ALL = Symbol('all');

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(event: BusEvent): void {
    this.emitter.emit(event.jobId, event);
    this.emitter.emit(LocalEventBus.ALL, event);
  }

  subscribe(jobId: string, listener: JobEventListener): () => void {
    this.emitter.on(jobId, listener);
    return () => this.emitter.off(jobId, listener);
  }

  subscribeAll(listener: JobEventListener): () => void {
    this.emitter.on(LocalEventBus.ALL, listener);
    return () => this.emitter.off(LocalEventBus.ALL, listener);
  }

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}

/** Local delivery plus Redis pub/sub so API and worker processes on other machines see each event. */
export class RedisEventBus implements JobEventBus {
  private readonly local = new LocalEventBus();
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly channel: string;
  private readonly origin = randomUUID();

  constructor(url: string, prefix: string) {
    this.channel = `${prefix}:job-events`;
    const opts = { maxRetriesPerRequest: null, enableOfflineQueue: true, lazyConnect: false };
    // ioredis is loaded only by deployments with Redis.
    const { Redis: RedisClient } = loadOptional<typeof import('ioredis')>('ioredis', import.meta.url);
    this.pub = new RedisClient(url, opts);
    this.sub = new RedisClient(url, opts);
    // Errors reconnect on their own; the store stays the source of truth while Redis is away.
    this.pub.on('error', () => {});
    this.sub.on('error', () => {});
    void this.sub.subscribe(this.channel).catch(() => {});
    // Every process hears its own events back; they were delivered locally already, so skip them
    // before parsing (publish() writes the origin first).
    const own = `{"origin":${JSON.stringify(this.origin)},`;
    this.sub.on('message', (_channel: string, raw: string) => {
      if (raw.startsWith(own)) return;
      try {
        const { origin, event } = JSON.parse(raw) as { origin: string; event: BusEvent };
        if (origin !== this.origin) this.local.publish(event);
      } catch {
        // not ours
      }
    });
  }

  publish(event: BusEvent): void {
    this.local.publish(event);
    const wire = event.type === 'status' && event.local ? { ...event, local: undefined } : event;
    this.pub.publish(this.channel, JSON.stringify({ origin: this.origin, event: wire })).catch(() => {});
  }

  subscribe(jobId: string, listener: JobEventListener): () => void {
    return this.local.subscribe(jobId, listener);
  }

  subscribeAll(listener: JobEventListener): () => void {
    return this.local.subscribeAll(listener);
  }

  async close(): Promise<void> {
    await this.local.close();
    this.sub.disconnect();
    this.pub.disconnect();
  }
}

/**
 * Wraps a bus so that partial images are recorded (JobEventLog) before they are published, stamped
 * with their event id, and so that a job's later events never overtake a partial still being
 * recorded. Status, progress and cancel events are not written anywhere: with nothing pending for the
 * job they go straight through, so the hot path is untouched.
 */
export class RecordingEventBus implements JobEventBus {
  private readonly inner: JobEventBus;
  private readonly log: JobEventLog;
  private readonly onError: (err: unknown) => void;
  /** Per job, the tail of the work publishing its events in order (only while a partial is being recorded). */
  private readonly pending = new Map<string, Promise<void>>();

  constructor(inner: JobEventBus, log: JobEventLog, onError: (err: unknown) => void = () => {}) {
    this.inner = inner;
    this.log = log;
    this.onError = onError;
  }

  publish(event: BusEvent): void {
    const before = this.pending.get(event.jobId);
    if (event.type !== 'partial_image') {
      // A cancel must reach the worker at once; anything else waits only behind a pending partial.
      if (!before || event.type === 'cancel_requested') this.inner.publish(event);
      else this.chain(event.jobId, before.then(() => this.inner.publish(event)));
      return;
    }
    const record = async () => {
      let eventId: number | undefined;
      try {
        eventId = await this.log.append(event);
        if (eventId === undefined) return; // that attempt no longer runs the job
      } catch (err) {
        // Not recorded: still delivered live, without an id (a reconnect will not replay it).
        this.onError(err);
      }
      this.inner.publish(eventId === undefined ? event : { ...event, eventId });
    };
    this.chain(event.jobId, before ? before.then(record) : record());
  }

  private chain(jobId: string, work: Promise<void>): void {
    const tail = work.catch((err: unknown) => this.onError(err));
    this.pending.set(jobId, tail);
    void tail.then(() => {
      if (this.pending.get(jobId) === tail) this.pending.delete(jobId);
    });
  }

  subscribe(jobId: string, listener: JobEventListener): () => void {
    return this.inner.subscribe(jobId, listener);
  }

  subscribeAll(listener: JobEventListener): () => void {
    return this.inner.subscribeAll(listener);
  }

  history(jobId: string, afterId: number): Promise<RecordedJobEvent[]> {
    return this.log.listAfter(jobId, afterId);
  }

  async close(): Promise<void> {
    await Promise.all(this.pending.values());
    await this.inner.close();
  }
}
