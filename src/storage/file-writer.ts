/**
 * Durable file writes off the event loop: a small pool of threads, each taking batches of
 * "write this file atomically" requests (see file-writer-thread.ts). Writes that arrive together go
 * out as one message per thread; each request settles with its own outcome.
 *
 * A thread that dies fails what it held (the caller sees the error, as it would a failed write) and
 * is replaced on the next write.
 */
import { Worker } from 'node:worker_threads';
import type { WriteAnswer, WriteRequest } from './file-writer-thread.ts';

interface Pending {
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Lane {
  worker: Worker;
  held: Set<number>;
}

export class FileWriter {
  private readonly threads: number;
  private lanes: (Lane | undefined)[];
  private readonly pending = new Map<number, Pending>();
  private queued: WriteRequest[] = [];
  private flushScheduled = false;
  private nextId = 1;
  private nextLane = 0;
  private closed = false;

  constructor(threads = 2) {
    this.threads = Math.max(1, threads);
    this.lanes = Array.from({ length: this.threads }, () => undefined);
  }

  /** Writes `data` to `tmp` in `folder` (created when missing), fsyncs it, then renames it to `target`. */
  write(folder: string, tmp: string, target: string, data: Uint8Array): Promise<void> {
    if (this.closed) return Promise.reject(new Error('file writer is closed'));
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.queued.push({ id, folder, tmp, target, data });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        queueMicrotask(() => this.flush());
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    const lanes = this.lanes.filter((l): l is Lane => !!l);
    this.lanes = [];
    await Promise.all(lanes.map((l) => l.worker.terminate()));
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queued;
    this.queued = [];
    if (batch.length === 0 || this.closed) return;
    // Spread a batch over the threads so one fsync does not hold up the rest.
    const per = Math.ceil(batch.length / this.threads);
    for (let i = 0; i < batch.length; i += per) {
      const part = batch.slice(i, i + per);
      const lane = this.lane(this.nextLane++ % this.threads);
      for (const r of part) lane.held.add(r.id);
      if (lane.held.size === part.length) lane.worker.ref();
      lane.worker.postMessage(part);
    }
  }

  private lane(i: number): Lane {
    const existing = this.lanes[i];
    if (existing) return existing;
    const worker = new Worker(new URL('./file-writer-thread.ts', import.meta.url));
    const lane: Lane = { worker, held: new Set() };
    worker.unref();
    worker.on('message', (answers: WriteAnswer[]) => {
      for (const a of answers) {
        lane.held.delete(a.id);
        const p = this.pending.get(a.id);
        if (!p) continue;
        this.pending.delete(a.id);
        if (a.error) p.reject(Object.assign(new Error(a.error.message), { code: a.error.code }));
        else p.resolve();
      }
      if (lane.held.size === 0) worker.unref();
    });
    const lost = (err: Error) => {
      if (this.lanes[i] === lane) this.lanes[i] = undefined;
      for (const id of lane.held) {
        const p = this.pending.get(id);
        this.pending.delete(id);
        p?.reject(err);
      }
      lane.held.clear();
    };
    worker.on('error', (err) => lost(err));
    worker.on('exit', (code) => lost(new Error(`file writer thread exited (code ${code})`)));
    this.lanes[i] = lane;
    return lane;
  }
}
