/**
 * Job events (status changes, progress, cancel requests) fanned out to whoever waits on a job:
 * synchronous API requests, event streams, workers watching for cancels. In one process an
 * EventEmitter does it; across processes Redis pub/sub carries the same events. Listeners must not
 * rely on events alone: the store is the truth, and waiters re-read it.
 */
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { JobEvent } from '../core/job.ts';

export type JobEventListener = (event: JobEvent) => void;

export interface JobEventBus {
  publish(event: JobEvent): void;
  /** Events for one job. Returns the unsubscribe function. */
  subscribe(jobId: string, listener: JobEventListener): () => void;
  /** Every event (workers use it to see cancel requests for the jobs they hold). */
  subscribeAll(listener: JobEventListener): () => void;
  close(): Promise<void>;
}

export class LocalEventBus implements JobEventBus {
  private readonly emitter = new EventEmitter();
  private static readonly ALL = Symbol('all');

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(event: JobEvent): void {
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
    this.pub = new Redis(url, opts);
    this.sub = new Redis(url, opts);
    // Errors reconnect on their own; the store stays the source of truth while Redis is away.
    this.pub.on('error', () => {});
    this.sub.on('error', () => {});
    void this.sub.subscribe(this.channel).catch(() => {});
    this.sub.on('message', (_channel: string, raw: string) => {
      try {
        const { origin, event } = JSON.parse(raw) as { origin: string; event: JobEvent };
        if (origin !== this.origin) this.local.publish(event);
      } catch {
        // not ours
      }
    });
  }

  publish(event: JobEvent): void {
    this.local.publish(event);
    this.pub.publish(this.channel, JSON.stringify({ origin: this.origin, event })).catch(() => {});
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
