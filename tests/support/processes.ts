/**
 * Runs easel as real child processes (`node bin/easel.js serve|api|worker`), the way it is deployed:
 * each one with its own config file and environment, waited on until it prints its readiness line,
 * and killed the hard way (SIGKILL) or the polite way (SIGTERM) by the test.
 *
 * Every child's stdout and stderr are kept (bounded) so a failing test can show what the processes
 * said. A `ProcessGroup` owns the children of one test file: `killAll()` in `after` removes whatever is
 * still running, and a process `exit` hook SIGKILLs leftovers should the test runner itself die.
 * Set EASEL_TEST_CHILD_LOGS=1 to stream every child's output to stderr as it happens.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { childCwd, childEnv } from './child-env.ts';

export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const EASEL_BIN = fileURLToPath(new URL('../../bin/easel.js', import.meta.url));

export type EaselRole = 'serve' | 'api' | 'worker';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Date.now() when the exit was seen. */
  at: number;
}

export interface SpawnEaselOptions {
  /** YAML config file passed as `--config`. */
  configFile?: string;
  /** `--data-dir`. */
  dataDir?: string;
  /** `--port` (api and serve only). */
  port?: number;
  /**
   * Environment on top of a cleaned copy of this process's (every variable easel reads from the
   * environment is removed first, so the parent's settings never leak in; see child-env.ts); undefined unsets.
   */
  env?: Record<string, string | undefined>;
  /** More arguments after the role. */
  args?: string[];
  /** Label for logs and errors; defaults to the role and a counter. */
  name?: string;
  /** How long to wait for the readiness line (default 30 s). */
  readyTimeoutMs?: number;
  /** Called as soon as the process exists (before it is ready), so an owner can kill it whatever happens. */
  onSpawn?: (proc: EaselProcess) => void;
}

export interface EaselProcess {
  readonly name: string;
  readonly role: EaselRole;
  readonly pid: number;
  readonly child: ChildProcess;
  /** The API's base URL from its `listening on` line (api and serve). */
  readonly url: string | undefined;
  /** Settles when the process has exited and its output has been read. */
  readonly exited: Promise<ExitInfo>;
  /** Set once the process has exited. */
  exitInfo(): ExitInfo | undefined;
  alive(): boolean;
  /** Everything the process wrote so far (stdout and stderr interleaved, bounded). */
  logs(): string;
  /** Resolves with the first output line (already seen or to come) matching `pattern`. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGKILL, as a crash or OOM kill would; resolves once the process is gone. */
  kill9(): Promise<ExitInfo>;
  /** Sends `signal` and waits up to `timeoutMs` for the exit; SIGKILLs and rejects if it does not come. */
  terminate(signal?: NodeJS.Signals, timeoutMs?: number): Promise<ExitInfo>;
}

/** Output kept per child (the newest half survives beyond it): enough for thousands of jobs' log lines. */
const LOG_LIMIT = 32_000_000;
const LINE_LIMIT = 200_000;

/** Writes `config` as YAML to `file` and returns the path. */
export function writeConfig(file: string, config: Record<string, unknown>): string {
  // Tests drive many requests through one key: rate limits (on by default) stay off unless the config sets them.
  writeFileSync(file, stringify({ rateLimits: { enabled: false }, ...config }));
  return file;
}

function exitText(info: ExitInfo): string {
  return info.signal ? `signal ${info.signal}` : `code ${info.code}`;
}

const readyPattern = (role: EaselRole): RegExp =>
  role === 'worker' ? /^easel worker started\b/ : new RegExp(`^easel ${role} listening on (\\S+)`);

let counter = 0;

/** Starts `easel <role>` and resolves once it printed its readiness line (rejects, with its output, if it exits first). */
export async function spawnEasel(role: EaselRole, opts: SpawnEaselOptions = {}): Promise<EaselProcess> {
  const name = opts.name ?? `${role}#${++counter}`;
  const args = [EASEL_BIN];
  if (opts.configFile) args.push('--config', opts.configFile);
  args.push(role);
  if (opts.dataDir) args.push('--data-dir', opts.dataDir);
  if (opts.port !== undefined) args.push('--port', String(opts.port));
  args.push(...(opts.args ?? []));

  const child = spawn(process.execPath, args, { cwd: childCwd(), env: childEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  const stream = !!process.env.EASEL_TEST_CHILD_LOGS;
  let log = '';
  const lines: string[] = [];
  const watchers = new Set<(line: string) => void>();
  // Whole lines only, so stdout and stderr interleave line by line; stderr lines are marked.
  const onLine = (line: string, label: string) => {
    if (stream) process.stderr.write(`[${name}] ${label}${line}\n`);
    log += `${label}${line}\n`;
    if (log.length > LOG_LIMIT) log = log.slice(-LOG_LIMIT / 2);
    lines.push(line);
    if (lines.length > LINE_LIMIT) lines.splice(0, LINE_LIMIT / 2);
    for (const w of [...watchers]) w(line);
  };
  for (const [src, label] of [
    [child.stdout, ''],
    [child.stderr, 'stderr: '],
  ] as const) {
    let partial = '';
    src?.setEncoding('utf8');
    src?.on('data', (chunk: string) => {
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      for (const p of parts) onLine(p, label);
    });
    src?.on('end', () => {
      if (partial) onLine(partial, label);
      partial = '';
    });
  }

  let exitInfo: ExitInfo | undefined;
  const exited = new Promise<ExitInfo>((resolve) => {
    // 'close' rather than 'exit': by then the output has been read to its end.
    child.once('close', (code, signal) => {
      exitInfo ??= { code, signal, at: Date.now() };
      resolve(exitInfo);
    });
    child.once('error', (err) => {
      log += `spawn error: ${err.message}\n`;
      exitInfo ??= { code: null, signal: null, at: Date.now() };
      resolve(exitInfo);
    });
  });
  track(child);

  const waitForOutput = (pattern: RegExp, timeoutMs = 30_000): Promise<string> => {
    const seen = lines.find((l) => pattern.test(l));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const done = (fn: () => void) => {
        clearTimeout(timer);
        watchers.delete(watcher);
        fn();
      };
      const watcher = (line: string) => {
        if (pattern.test(line)) done(() => resolve(line));
      };
      const timer = setTimeout(
        () => done(() => reject(new Error(`${name}: no output matching ${pattern} within ${timeoutMs} ms; output so far:\n${tail(log)}`))),
        timeoutMs,
      );
      watchers.add(watcher);
      void exited.then((info) =>
        // Let the last buffered lines reach the watchers before giving up.
        setImmediate(() => {
          if (watchers.has(watcher)) done(() => reject(new Error(`${name} exited (${exitText(info)}) before printing ${pattern}; output:\n${tail(log)}`)));
        }),
      );
    });
  };

  const terminate = async (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<ExitInfo> => {
    if (exitInfo) return exitInfo;
    child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([exited, new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), timeoutMs)))]);
    clearTimeout(timer);
    if (result) return result;
    child.kill('SIGKILL');
    await exited;
    throw new Error(`${name} did not exit within ${timeoutMs} ms of ${signal} (killed); output:\n${tail(log)}`);
  };

  let url: string | undefined;
  const proc: EaselProcess = {
    name,
    role,
    pid: child.pid ?? -1,
    child,
    get url() {
      return url;
    },
    exited,
    exitInfo: () => exitInfo,
    alive: () => exitInfo === undefined,
    logs: () => log,
    waitForOutput,
    kill9: async () => {
      if (exitInfo) return exitInfo;
      child.kill('SIGKILL');
      return exited;
    },
    terminate,
  };

  opts.onSpawn?.(proc);
  try {
    const line = await waitForOutput(readyPattern(role), opts.readyTimeoutMs ?? 30_000);
    url = readyPattern(role).exec(line)?.[1];
    return proc;
  } catch (err) {
    await proc.kill9();
    throw err;
  }
}

/** The last part of a log, for error messages. */
export function tail(text: string, chars = 6_000): string {
  return text.length <= chars ? text : `…${text.slice(-chars)}`;
}

// Children still running when the test process exits (a crash, a timeout) are killed with it.
const live = new Set<ChildProcess>();
function track(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (live.size === 1 && !hooked) {
    hooked = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
}
let hooked = false;

/** The children of one test file. */
export class ProcessGroup {
  readonly procs: EaselProcess[] = [];

  /** Like spawnEasel; the child belongs to the group from the moment it exists. */
  spawn(role: EaselRole, opts: SpawnEaselOptions = {}): Promise<EaselProcess> {
    return spawnEasel(role, {
      ...opts,
      onSpawn: (p) => {
        this.procs.push(p);
        opts.onSpawn?.(p);
      },
    });
  }

  /** SIGKILLs every child still running (started or still starting) and waits for each to be gone. */
  async killAll(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.kill9()));
  }

  /** Every child's output, headed by its name and how it ended. */
  logs(charsEach = 8_000): string {
    return this.procs
      .map((p) => {
        const info = p.exitInfo();
        return `----- ${p.name} (pid ${p.pid}, ${info ? `exited, ${exitText(info)}` : 'running'}) -----\n${tail(p.logs(), charsEach)}`;
      })
      .join('\n');
  }
}
