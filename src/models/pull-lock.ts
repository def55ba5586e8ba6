/**
 * One downloader per models folder: `<modelsDir>/.pull.lock`, created exclusively (`wx`), holds the
 * owner's pid, host and command, and its mtime is refreshed while the owner works. Another process
 * (a second `easel serve`, `easel models pull`) sees the owner instead of downloading the same files
 * into the same `.part` files. A lock whose owner is gone (same host, no such pid) or that has not
 * been refreshed for a minute (an owner on another host that died) is taken over.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export const LOCK_FILE = '.pull.lock';
const HEARTBEAT_MS = 10_000;
const STALE_MS = 60_000;

export interface LockOwner {
  pid: number;
  host: string;
  command: string;
  startedAt: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function readOwner(path: string): { owner: LockOwner; token?: string; mtimeMs: number } | undefined {
  try {
    const mtimeMs = statSync(path).mtimeMs;
    let parsed: Partial<LockOwner> & { token?: string } = {};
    try {
      parsed = JSON.parse(readFileSync(path, 'utf8')) as typeof parsed;
    } catch {
      // Being written, or garbage: judged by its age alone.
    }
    return { owner: { pid: Number(parsed.pid ?? 0), host: String(parsed.host ?? ''), command: String(parsed.command ?? 'unknown'), startedAt: String(parsed.startedAt ?? '') }, token: parsed.token, mtimeMs };
  } catch {
    return undefined;
  }
}

export class PullLock {
  readonly path: string;
  private readonly token: string;
  private readonly timer: NodeJS.Timeout;
  private released = false;

  private constructor(path: string, token: string) {
    this.path = path;
    this.token = token;
    this.timer = setInterval(() => {
      const now = new Date();
      try {
        utimesSync(path, now, now);
      } catch {
        // Removed under us; release() copes.
      }
    }, HEARTBEAT_MS);
    this.timer.unref();
  }

  /** The lock, or (when another live process holds it) that process. */
  static acquire(modelsDir: string, command: string): PullLock | LockOwner {
    mkdirSync(modelsDir, { recursive: true });
    const path = join(modelsDir, LOCK_FILE);
    for (let tries = 0; ; tries++) {
      const token = randomBytes(8).toString('hex');
      try {
        const fd = openSync(path, 'wx');
        try {
          writeSync(fd, JSON.stringify({ pid: process.pid, host: hostname(), command, startedAt: new Date().toISOString(), token }));
        } finally {
          closeSync(fd);
        }
        return new PullLock(path, token);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const held = readOwner(path);
      if (!held) continue;
      const stale = (held.owner.host === hostname() && held.owner.pid > 0 && !alive(held.owner.pid)) || Date.now() - held.mtimeMs > STALE_MS;
      if (!stale || tries >= 2) return held.owner;
      rmSync(path, { force: true });
    }
  }

  /** Removes the lock file if it is still this one. */
  release(): void {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    if (readOwner(this.path)?.token === this.token) rmSync(this.path, { force: true });
  }
}

/** Who holds the lock of a models folder now, if anyone live does. */
export function lockOwner(modelsDir: string): LockOwner | undefined {
  const held = readOwner(join(modelsDir, LOCK_FILE));
  if (!held) return undefined;
  const stale = (held.owner.host === hostname() && held.owner.pid > 0 && !alive(held.owner.pid)) || Date.now() - held.mtimeMs > STALE_MS;
  return stale ? undefined : held.owner;
}

export function describeOwner(o: LockOwner): string {
  return `${o.command} (pid ${o.pid}${o.host && o.host !== hostname() ? ` on ${o.host}` : ''}${o.startedAt ? `, since ${o.startedAt}` : ''})`;
}
