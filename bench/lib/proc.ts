/**
 * Child processes for the benchmark (easel itself, the OpenAI stand-in) and what /proc says about
 * them: peak and current RSS, CPU seconds used.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** Linux USER_HZ: /proc/<pid>/stat counts CPU time in these ticks (100 on every mainstream kernel). */
const CLOCK_TICKS = 100;

export interface ProcMemory {
  /** Peak resident set (VmHWM), bytes. */
  peakRssBytes: number;
  /** Current resident set (VmRSS), bytes. */
  rssBytes: number;
}

export function procMemory(pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return m ? Number(m[1]) * 1024 : Number.NaN;
  };
  return { peakRssBytes: kb('VmHWM'), rssBytes: kb('VmRSS') };
}

/** User + system CPU seconds the process (all threads) has used so far. */
export function procCpuSeconds(pid: number): number {
  return statCpuSeconds(`/proc/${pid}/stat`);
}

/**
 * CPU seconds of the process's main thread alone (its JavaScript event loop), without the libuv
 * thread pool (file system, sharp), GC helpers and compiler threads.
 */
export function procMainThreadCpuSeconds(pid: number): number {
  return statCpuSeconds(`/proc/${pid}/task/${pid}/stat`);
}

function statCpuSeconds(path: string): number {
  return parseStat(readFileSync(path, 'utf8')).cpuSeconds;
}

/** The command name and user + system CPU seconds from a /proc/<pid>/stat line. */
function parseStat(stat: string): { name: string; cpuSeconds: number } {
  // The command name (field 2) may contain spaces; fields after the closing paren are fixed.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, i.e. 11 and 12 after the name.
  return { name: stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')), cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS };
}

export interface Child {
  proc: ChildProcess;
  pid: number;
  /** Everything written to stderr (kept for error messages; capped). */
  stderr(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<ChildProcess>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  // Whatever happens to the benchmark, it leaves no easel or stand-in behind.
  process.on('exit', () => {
    for (const p of live) p.kill('SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const p of live) p.kill('SIGKILL');
      process.exit(130);
    });
  }
}

/**
 * Spawns `node <args>` and resolves once a stdout line matches `ready` (with the match), or rejects
 * if it exits or stays silent for `timeoutMs`.
 */
export async function spawnNode(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; ready: RegExp; timeoutMs?: number; cwd?: string },
): Promise<{ child: Child; match: RegExpExecArray }> {
  hookExit();
  const proc = spawn(process.execPath, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    // stdin stays open as a lifeline: children that watch it exit when the benchmark dies.
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  live.add(proc);
  let err = '';
  proc.stderr!.setEncoding('utf8');
  proc.stderr!.on('data', (d: string) => {
    if (err.length < 20_000) err += d;
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => {
    live.delete(proc);
    resolve();
  }));
  const child: Child = {
    proc,
    pid: proc.pid!,
    stderr: () => err,
    async stop(graceMs = 10_000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`${args.join(' ')}: not ready after ${opts.timeoutMs ?? 30_000} ms\n${out}\n${err}`));
    }, opts.timeoutMs ?? 30_000);
    proc.stdout!.setEncoding('utf8');
    const onData = (d: string) => {
      out += d;
      const m = opts.ready.exec(out);
      if (m) {
        clearTimeout(timer);
        proc.stdout!.off('data', onData);
        proc.stdout!.resume(); // keep draining so the child never blocks on a full pipe
        resolve(m);
      }
    };
    proc.stdout!.on('data', onData);
    proc.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${args.join(' ')} exited (${code ?? signal}) before it was ready\n${out}\n${err}`));
    });
  });
  return { child, match };
}

/** CPU seconds per thread name (`/proc/<pid>/task/<tid>/comm`), user and system apart. */
export function procThreadCpu(pid: number): Map<string, { user: number; sys: number }> {
  const out = new Map<string, { user: number; sys: number }>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim().replace(/\d+$/, '#');
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const key = tid === String(pid) ? 'main' : name;
      const e = out.get(key) ?? { user: 0, sys: 0 };
      e.user += Number(fields[11]) / CLOCK_TICKS;
      e.sys += Number(fields[12]) / CLOCK_TICKS;
      out.set(key, e);
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out;
}

/**
 * CPU seconds used so far by every live process whose command name is one of `names` (e.g. the
 * Postgres server and its backends, redis-server). Processes that exit in between drop out, so take
 * it across a span where the servers' connections stay open.
 */
export function procCpuSecondsByName(names: readonly string[]): Record<string, number> {
  const out: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const { name, cpuSeconds } = parseStat(stat);
    if (name in out) out[name]! += cpuSeconds;
  }
  return out;
}

/** The machine's CPU time so far (/proc/stat, all CPUs): busy and stolen (by the hypervisor) ticks. */
export interface MachineCpu {
  totalTicks: number;
  stealTicks: number;
}

export function machineCpu(): MachineCpu {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest time is inside user)
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  return { totalTicks: f.reduce((a, b) => a + b, 0), stealTicks: f[7] ?? 0 };
}

/** Stolen share of all CPU time between two readings (0..1). */
export function stealFraction(from: MachineCpu, to: MachineCpu): number {
  const total = to.totalTicks - from.totalTicks;
  return total > 0 ? (to.stealTicks - from.stealTicks) / total : 0;
}

/**
 * A fixed integer loop timed in nanoseconds per iteration (best of 3): how fast this machine's cores run
 * right now. Figures from runs whose probe differs a lot are not comparable; a virtual machine on a busy
 * host can run at a third of its usual speed without reporting any steal.
 */
export function cpuSpeedProbe(iterations = 30_000_000): number {
  let best = Number.POSITIVE_INFINITY;
  let sink = 0;
  for (let round = 0; round < 3; round++) {
    const t0 = process.hrtime.bigint();
    let x = round;
    for (let i = 0; i < iterations; i++) x = (x * 31 + i) | 0;
    sink ^= x;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / iterations);
  }
  if (sink === 0.5) console.log(sink); // keeps the loop from being optimised away
  return best;
}

/**
 * Median milliseconds to create one small file (open with O_CREAT, write 8 KiB, close) in a fresh
 * folder under `dir`. On this VM's root filesystem (ext4 without a journal) creating a file scans
 * past every inode deleted in the last few minutes, so right after thousands of files were removed
 * (an earlier benchmark's run folders, a test suite) each create costs ~1 ms of kernel CPU instead
 * of ~0.04 ms, and every image easel writes pays it.
 */
export function fileCreateProbe(dir: string, files = 40): number {
  const folder = mkdtempSync(join(dir, 'easel-fs-probe-'));
  const data = Buffer.alloc(8192, 1);
  const times: number[] = [];
  try {
    for (let i = 0; i < files; i++) {
      const t0 = performance.now();
      const fd = openSync(join(folder, `f${i}`), 'wx');
      writeSync(fd, data);
      closeSync(fd);
      times.push(performance.now() - t0);
    }
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}
