/**
 * Waits for a job to reach a terminal state: wakes on job events (local or via Redis) and re-reads
 * the store on a slow timer, so a missed event (another process, no Redis) only costs latency.
 */
import { isTerminal } from '../core/job.ts';
import type { Job, StoredImage } from '../core/job.ts';
import type { JobEventBus } from '../events/job-events.ts';
import type { JobStore } from '../store/job-store.ts';

export interface Finished {
  job: Job;
  /** The job's images, when a worker in this process handed them over with its terminal event. */
  images?: StoredImage[];
  /** Their bytes by storage key, likewise. */
  bytes?: Map<string, Uint8Array>;
}

export interface JobWatch {
  /** The finished job, or undefined when `timeoutMs` passed first (or the watch was canceled). */
  done: Promise<Finished | undefined>;
  cancel(): void;
}

export interface WatchOptions {
  pollMs?: number;
  /**
   * Read the job at once. A watch started before the job was enqueued can skip it: no terminal event
   * can have been missed.
   */
  checkNow?: boolean;
}

/** Starts watching at once (subscribed before this returns), so it can be set up before the job is queued. */
export function watchJob(store: JobStore, events: JobEventBus, jobId: string, timeoutMs: number, opts: WatchOptions = {}): JobWatch {
  let finish!: (f: Finished | undefined) => void;
  const done = new Promise<Finished | undefined>((resolve) => {
    let settled = false;
    let checking = false;
    let recheck = false;
    finish = (f: Finished | undefined) => {
      if (settled) return;
      settled = true;
      unsubscribe();
      clearTimeout(deadline);
      clearInterval(poll);
      resolve(f);
    };
    const check = async () => {
      if (checking) {
        recheck = true;
        return;
      }
      checking = true;
      try {
        do {
          recheck = false;
          const job = await store.getJob(jobId);
          if (job && isTerminal(job.status)) return finish({ job });
        } while (recheck && !settled);
      } catch {
        // the next event or tick tries again
      } finally {
        checking = false;
      }
    };
    const unsubscribe = events.subscribe(jobId, (e) => {
      if (e.type !== 'status' || !isTerminal(e.status)) return;
      if (e.local) finish(e.local);
      else void check();
    });
    const deadline = setTimeout(() => finish(undefined), timeoutMs);
    const poll = setInterval(() => void check(), opts.pollMs ?? 1000);
    if (opts.checkNow ?? true) void check();
  });
  return { done, cancel: () => finish(undefined) };
}
