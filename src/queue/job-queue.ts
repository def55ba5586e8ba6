/**
 * The durable queue between the API and the workers. It carries only job ids and priorities; the job
 * itself lives in the metadata store. Delivery is at-least-once: a message whose worker dies comes back
 * after the visibility timeout, and the store's attempt counter turns that into exactly-once completion.
 */
import type { Priority } from '../core/job.ts';

export interface QueueMessage {
  jobId: string;
  priority: Priority;
  /**
   * The job's API key: within a priority, keys take turns (by their weight) and a key at its running
   * limit gets no job started (src/fairness). Absent: one shared tenant, first come first served.
   */
  keyId?: string;
}

export interface Delivery {
  message: QueueMessage;
  /** 1 for the first delivery, more after redeliveries. */
  deliveryCount: number;
  /** Aborted when this consumer can no longer hold the message (lease lost, forced shutdown). */
  signal: AbortSignal;
}

export type DeliveryHandler = (delivery: Delivery) => Promise<void>;

export interface ConsumeOptions {
  concurrency: number;
}

export interface QueueConsumer {
  /**
   * Stops taking messages, waits up to `graceMs` for in-flight handlers, then aborts the rest and hands
   * their messages back to the queue so another worker takes them at once.
   */
  stop(graceMs: number): Promise<void>;
}

export interface QueueCounts {
  waiting: number;
  active: number;
}

export interface JobQueue {
  readonly kind: 'embedded' | 'bullmq';
  enqueue(message: QueueMessage): Promise<void>;
  /** Removes a message that no worker holds yet; false when it is active or gone. */
  remove(jobId: string): Promise<boolean>;
  /**
   * Delivers messages to `handler`. A handler that resolves acknowledges the message; one that throws
   * has it handed back for redelivery.
   */
  consume(handler: DeliveryHandler, options: ConsumeOptions): QueueConsumer;
  counts(): Promise<QueueCounts>;
  /** Throws when the queue's backing service is unreachable. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
