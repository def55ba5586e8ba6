/**
 * Owns one engine worker thread: starts it on first use, forwards a run and its progress, aborts
 * through a shared flag the engine checks between model calls, and restarts the thread on the next
 * run if it died (the run in flight fails as retryable).
 */
import { Worker } from 'node:worker_threads';
import type { EngineOptions, EngineRequest, EngineResult } from './engine.ts';

export class EngineThreadError extends Error {
  /** `aborted`, `request` (the caller asked for something the model cannot do), or `crash`. */
  readonly kind: 'aborted' | 'request' | 'crash' | 'failed';
  constructor(message: string, kind: EngineThreadError['kind']) {
    super(message);
    this.name = 'EngineThreadError';
    this.kind = kind;
  }
}

interface InFlight {
  resolve(r: EngineResult): void;
  reject(e: Error): void;
  onProgress?(fraction: number): void;
}

export class EngineHost {
  private readonly options: Omit<EngineOptions, 'warn'>;
  private readonly warn: (message: string) => void;
  private worker: Worker | undefined;
  private readonly inFlight = new Map<number, InFlight>();
  private nextId = 1;
  private onIdle: (() => void) | undefined;

  constructor(options: Omit<EngineOptions, 'warn'>, warn: (message: string) => void) {
    this.options = options;
    this.warn = warn;
  }

  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  run(request: EngineRequest, opts: { signal?: AbortSignal; onProgress?(fraction: number): void } = {}): Promise<EngineResult> {
    const worker = this.ensureWorker();
    const id = this.nextId++;
    const abort = new SharedArrayBuffer(4);
    const flag = new Int32Array(abort);
    const onAbort = () => Atomics.store(flag, 0, 1);
    if (opts.signal?.aborted) onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    worker.ref();
    return new Promise<EngineResult>((resolve, reject) => {
      this.inFlight.set(id, { resolve, reject, onProgress: opts.onProgress });
      worker.postMessage({ type: 'generate', id, request, abort });
    }).finally(() => {
      opts.signal?.removeEventListener('abort', onAbort);
      // An idle engine thread (models still loaded) must not keep the process alive.
      if (this.inFlight.size === 0) {
        this.worker?.unref();
        this.onIdle?.();
      }
    });
  }

  /** Lets runs in flight finish (their callers have aborted them by now), then ends the thread. */
  async close(graceMs = 10_000): Promise<void> {
    const w = this.worker;
    if (!w) return;
    if (this.inFlight.size) {
      const settled = new Promise<void>((r) => {
        this.onIdle = r;
      });
      await Promise.race([settled, new Promise((r) => setTimeout(r, graceMs).unref())]);
    }
    this.worker = undefined;
    const exited = new Promise<void>((r) => w.once('exit', () => r()));
    w.postMessage({ type: 'close' });
    const timer = setTimeout(() => void w.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('./engine-worker.ts', import.meta.url), { workerData: this.options });
    w.on('message', (msg: { type: string; id?: number; fraction?: number; result?: EngineResult; name?: string; message?: string }) => {
      if (msg.type === 'warn') return this.warn(msg.message ?? '');
      const job = this.inFlight.get(msg.id!);
      if (!job) return;
      if (msg.type === 'progress') return job.onProgress?.(msg.fraction!);
      this.inFlight.delete(msg.id!);
      if (msg.type === 'result') return job.resolve(msg.result!);
      const kind = msg.name === 'EngineAbortError' ? 'aborted' : msg.name === 'EngineRequestError' ? 'request' : 'failed';
      job.reject(new EngineThreadError(msg.message ?? 'engine error', kind));
    });
    const fail = (why: string) => {
      if (this.worker === w) this.worker = undefined;
      for (const [id, job] of this.inFlight) {
        this.inFlight.delete(id);
        job.reject(new EngineThreadError(`engine thread ${why}`, 'crash'));
      }
    };
    w.on('error', (err) => fail(`failed: ${err.message}`));
    w.on('exit', (code) => fail(`exited (code ${code})`));
    this.worker = w;
    return w;
  }
}
