/**
 * Waits for a job to reach a terminal state: wakes on job events (local or via Redis) and re-reads
 * the store on a slow timer, so a missed event (another process, no Redis) only costs latency.
 */
import { isTerminal } from '../core/job.ts';
import type { Job } from '../core/job.ts';
import type { JobEventBus } from '../events/job-events.ts';
import type { JobStore } from '../store/job-store.ts';

export async function waitForTerminal(
  store: JobStore,
  events: JobEventBus,
  jobId: string,
  timeoutMs: number,
  pollMs = 1000,
): Promise<Job | undefined> {
  return new Promise<Job | undefined>((resolve) => {
    let settled = false;
    let checking = false;
    let recheck = false;
    const finish = (job: Job | undefined) => {
      if (settled) return;
      settled = true;
      unsubscribe();
      clearTimeout(deadline);
      clearInterval(poll);
      resolve(job);
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
          if (job && isTerminal(job.status)) return finish(job);
        } while (recheck && !settled);
      } catch {
        // the next event or tick tries again
      } finally {
        checking = false;
      }
    };
    const unsubscribe = events.subscribe(jobId, (e) => {
      if (e.type === 'status' && isTerminal(e.status)) void check();
    });
    const deadline = setTimeout(() => finish(undefined), timeoutMs);
    const poll = setInterval(() => void check(), pollMs);
    void check();
  });
}
