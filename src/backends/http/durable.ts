/**
 * "Never pay twice" for asynchronous providers. One generate() call may need several provider jobs
 * (a provider that returns one image per job, asked for four); each is submitted, and its handle
 * (prediction id, request id, polling URL) saved with easel's job through `ctx.saveState` before any
 * waiting starts. A redelivered job finds those handles in `ctx.savedState` and only waits on them;
 * it submits nothing that was already submitted.
 *
 * A saved state is used once per attempt: the worker hands the same snapshot to every generate()
 * call of an attempt (it splits large `n`), so a second call with the same shape must not take the
 * first call's handles as its own.
 */
import { createHash } from 'node:crypto';
import type { BackendCallContext } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';

export interface DurableState<H> {
  v: 1;
  /** Backend config name the handles belong to. */
  backend: string;
  /** Digest of the call's shape; a state for a different call is ignored. */
  fingerprint: string;
  /** One entry per planned provider job; null until submitted. */
  tasks: (H | null)[];
}

const consumed = new WeakSet<object>();

/** A short digest of whatever identifies one generate() call. */
export function callFingerprint(parts: unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('base64url').slice(0, 22);
}

/** Splits `n` images into provider jobs of at most `perJob` images. */
export function planJobs(n: number, perJob: number): number[] {
  const per = Math.max(1, perJob);
  const out: number[] = [];
  for (let left = n; left > 0; left -= per) out.push(Math.min(per, left));
  return out;
}

/** Why the job's signal aborted (the worker aborts with a reason carrying `reason`). */
/**
 * Progress across a planned split of one request into provider jobs: each job reports 0..1 for its
 * share, and the whole moves by the images each covers.
 */
export function planProgress(plan: number[], n: number, report: (p: number) => void): (i: number, p: number) => void {
  const progress = new Array<number>(plan.length).fill(0);
  return (i, p) => {
    progress[i] = p;
    report(progress.reduce((a, v, j) => a + v * plan[j]!, 0) / n);
  };
}

export function stopReason(signal: AbortSignal): string | undefined {
  const reason = signal.reason as { reason?: unknown } | undefined;
  return reason && typeof reason.reason === 'string' ? reason.reason : undefined;
}

/**
 * True when an aborted job will not be resumed (canceled or timed out), so its provider jobs should
 * be canceled too. A job handed back to the queue (shutdown, lost lease) keeps them running: the
 * next worker resumes on the saved handles.
 */
export function shouldCancelRemote(signal: AbortSignal): boolean {
  const r = stopReason(signal);
  return r === 'canceled' || r === 'timeout';
}

export interface DurableRun<H, R> {
  backend: string;
  ctx: BackendCallContext;
  fingerprint: string;
  /** Images per provider job. */
  plan: number[];
  /** Recognises a saved handle (anything else in the saved state is ignored). */
  isHandle(value: unknown): value is H;
  /** Creates one provider job and answers its handle; it is saved before any waiting starts. */
  submit(index: number, count: number, signal: AbortSignal): Promise<H>;
  /** Waits on one provider job and copies its outputs; `resumed` when the handle came from an earlier attempt. */
  wait(handle: H, index: number, signal: AbortSignal, resumed: boolean): Promise<R>;
  /** Best-effort cancel of a provider job nobody will wait on any more. */
  cancel?(handle: H): Promise<void>;
  /** Told when saved handles are taken up again. */
  onResume?(count: number): void;
}

export interface DurableOutcome<R> {
  results: R[];
  /** How many provider jobs were resumed rather than submitted. */
  resumed: number;
}

function readState<H>(run: DurableRun<H, unknown>): (H | null)[] | undefined {
  const saved = run.ctx.savedState;
  if (!saved || typeof saved !== 'object' || consumed.has(saved)) return undefined;
  const s = saved as Partial<DurableState<unknown>>;
  if (s.v !== 1 || s.backend !== run.backend || s.fingerprint !== run.fingerprint || !Array.isArray(s.tasks)) return undefined;
  consumed.add(saved);
  return s.tasks.map((t) => (run.isHandle(t) ? t : null));
}

export async function runDurable<H, R>(run: DurableRun<H, R>): Promise<DurableOutcome<R>> {
  const { ctx } = run;
  const saved = readState(run);
  const handles: (H | null)[] = run.plan.map((_, i) => saved?.[i] ?? null);
  const resumedFlags = handles.map((h) => h !== null);
  const resumed = resumedFlags.filter(Boolean).length;
  if (resumed) run.onResume?.(resumed);
  const save = () =>
    ctx.saveState({ v: 1, backend: run.backend, fingerprint: run.fingerprint, tasks: handles } satisfies DurableState<H>);

  // Submit what is missing, saving each handle at once: a crash between two submissions loses nothing.
  try {
    for (let i = 0; i < run.plan.length; i++) {
      if (handles[i] !== null) continue;
      if (ctx.signal.aborted) throw abortError(run.backend, ctx.signal);
      handles[i] = await run.submit(i, run.plan[i]!, ctx.signal);
      await save();
    }
  } catch (err) {
    // A job that will not be retried or resumed leaves nothing running at the provider.
    // (Anything but a BackendError — the worker losing its lease while saving — leaves them for the next owner.)
    const final = ctx.signal.aborted ? shouldCancelRemote(ctx.signal) : err instanceof BackendError && !err.retryable;
    if (final) await cancelAll(run, handles.filter((h): h is H => h !== null));
    throw ctx.signal.aborted ? abortError(run.backend, ctx.signal) : err;
  }

  const inner = new AbortController();
  const signal = AbortSignal.any([ctx.signal, inner.signal]);
  const done = new Array<boolean>(handles.length).fill(false);
  const failed = new Set<number>();
  let firstError: unknown;
  const settled = await Promise.allSettled(
    handles.map(async (h, i) => {
      try {
        const r = await run.wait(h!, i, signal, resumedFlags[i]!);
        done[i] = true;
        return r;
      } catch (err) {
        if (!inner.signal.aborted && !ctx.signal.aborted) {
          firstError ??= err;
          failed.add(i);
          inner.abort(err);
        }
        throw err;
      }
    }),
  );

  if (settled.every((s) => s.status === 'fulfilled')) {
    return { results: settled.map((s) => (s as PromiseFulfilledResult<R>).value), resumed };
  }

  const unfinished = () => handles.filter((h, i): h is H => h !== null && !done[i] && !failed.has(i));
  if (ctx.signal.aborted) {
    if (shouldCancelRemote(ctx.signal)) await cancelAll(run, unfinished());
    throw abortError(run.backend, ctx.signal);
  }
  const err = firstError ?? (settled.find((s) => s.status === 'rejected') as PromiseRejectedResult).reason;
  if (err instanceof BackendError && err.retryable) {
    // The next attempt submits the failed jobs again and resumes the rest.
    for (const i of failed) handles[i] = null;
    await save().catch(() => {});
  } else if (err instanceof BackendError) {
    // The job fails: whatever is still running at the provider is money for nothing.
    await cancelAll(run, unfinished());
  }
  throw err;
}

async function cancelAll<H>(run: DurableRun<H, unknown>, handles: H[]): Promise<void> {
  if (!run.cancel) return;
  await Promise.allSettled(handles.map((h) => run.cancel!(h)));
}

function abortError(backend: string, signal: AbortSignal): BackendError {
  return new BackendError(`Call to backend "${backend}" was aborted`, { code: 'aborted', cause: signal.reason });
}
