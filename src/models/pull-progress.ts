/**
 * Progress of a pull across all its files (and models): bytes on disk of the total the plan found,
 * speed over the last few seconds, and the time left at that speed. The CLI draws it as a bar, the
 * auto-pull logs it and serves it on `GET /v1/system`.
 */
import type { PullEvent } from './model-store.ts';

export interface ProgressSnapshot {
  /** 0–100, null while the total is unknown. */
  percent: number | null;
  receivedBytes: number;
  totalBytes: number | null;
  bytesPerSecond: number | null;
  etaSeconds: number | null;
  /** The file being fetched now. */
  file?: string;
}

const WINDOW_MS = 10_000;

export class PullProgress {
  private readonly now: () => number;
  /** Bytes on disk per file (`model/path`), of the files the plans counted. */
  private readonly seen = new Map<string, number>();
  private total = 0;
  private totalKnown = true;
  private transferred = 0;
  private samples: { t: number; bytes: number }[] = [];
  private file: string | undefined;

  constructor(now: () => number = Date.now) {
    this.now = now;
  }

  /** Counts a model's plan: the bytes it will fetch (null: some sizes unknown) and what is already on disk. */
  expect(model: string, totalBytes: number | null, have: { path: string; bytes: number }[]): void {
    if (totalBytes === null) this.totalKnown = false;
    else this.total += totalBytes;
    for (const h of have) this.seen.set(`${model}/${h.path}`, h.bytes);
  }

  handle(model: string, e: PullEvent): void {
    const key = `${model}/${e.type === 'note' ? '' : e.path}`;
    if (e.type === 'file-start') this.file = e.path;
    if (e.type === 'progress') {
      const before = this.seen.get(key) ?? 0;
      const now = e.progress.received;
      if (now > before) this.sample(now - before);
      this.seen.set(key, now);
    } else if (e.type === 'file-done' && e.status !== 'missing' && e.status !== 'cached') {
      this.seen.set(key, e.size);
    }
  }

  private sample(delta: number): void {
    this.transferred += delta;
    const t = this.now();
    this.samples.push({ t, bytes: this.transferred });
    while (this.samples.length > 2 && t - this.samples[1]!.t > WINDOW_MS) this.samples.shift();
  }

  snapshot(): ProgressSnapshot {
    let received = 0;
    for (const v of this.seen.values()) received += v;
    const total = this.totalKnown ? this.total : null;
    if (total !== null && received > total) received = total;
    const first = this.samples[0];
    const last = this.samples.at(-1);
    // The rate over the window, and only once there is a second's worth of it.
    const now = this.now();
    const span = first && last ? Math.max(last.t, now) - first.t : 0;
    // Nothing for a while (a stalled transfer waiting for its idle timeout): 0 B/s and no estimate.
    const quiet = last !== undefined && now - last.t > 5000;
    const rate = quiet ? 0 : first && last && span >= 1000 ? (last.bytes - first.bytes) / (span / 1000) : null;
    const left = total === null ? null : total - received;
    return {
      percent: total ? Math.min(100, Math.floor((received / total) * 1000) / 10) : total === 0 ? 100 : null,
      receivedBytes: received,
      totalBytes: total,
      bytesPerSecond: rate === null ? null : Math.round(rate),
      etaSeconds: rate && left !== null ? Math.ceil(left / rate) : null,
      ...(this.file ? { file: this.file } : {}),
    };
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** `42% (1.05 GB of 2.50 GB), 12.3 MB/s, about 2 min 01 s left`, as far as it is known. */
export function describeProgress(p: ProgressSnapshot): string {
  const parts: string[] = [];
  if (p.percent !== null && p.totalBytes !== null) parts.push(`${Math.floor(p.percent)}% (${formatBytes(p.receivedBytes)} of ${formatBytes(p.totalBytes)})`);
  else parts.push(formatBytes(p.receivedBytes));
  if (p.bytesPerSecond !== null) parts.push(`${formatBytes(p.bytesPerSecond)}/s`);
  if (p.etaSeconds !== null) parts.push(`about ${formatDuration(p.etaSeconds)} left`);
  return parts.join(', ');
}
