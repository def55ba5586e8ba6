/**
 * Throwaway Redis for tests: a private `redis-server` on a random loopback port in a temp dir, with
 * append-only persistence (fsync on every write) so restart() keeps the data — which is what lets a
 * test restart Redis under a running queue.
 *
 * EASEL_TEST_REDIS_URL points the tests at an existing throwaway server instead (restart() then
 * throws). When redis-server is missing, tests skip (undefined is returned) — except under CI, where a
 * missing server is an error rather than a silent skip.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface RedisServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Shuts the server down (its data is persisted) and starts it again on the same port and dir. */
  restart(): Promise<void>;
}

function findRedisServer(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    const file = join(dir, 'redis-server');
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  for (const file of ['/usr/bin/redis-server', '/usr/local/bin/redis-server', '/usr/sbin/redis-server']) {
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** Sends one inline command and resolves with the first reply line (or rejects on connection error). */
function command(port: number, cmd: string, timeoutMs = 1_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ host: '127.0.0.1', port });
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`redis ${cmd}: no reply`));
    }, timeoutMs);
    sock.setEncoding('utf8');
    sock.on('connect', () => sock.write(`${cmd}\r\n`));
    sock.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\r\n');
      if (nl >= 0) {
        clearTimeout(timer);
        sock.destroy();
        resolve(buf.slice(0, nl));
      }
    });
    sock.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`redis ${cmd}: connection closed`));
    });
  });
}

function waitExit(child: ChildProcess, timeoutMs: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

function external(url: string): RedisServer {
  const u = new URL(url);
  return {
    url,
    port: Number(u.port || 6379),
    async stop() {},
    async restart() {
      throw new Error('restart() is not supported on the Redis in EASEL_TEST_REDIS_URL');
    },
  };
}

/** `parentDir`: where the server's data folder goes (default: the OS temp folder). */
export async function startRedis(opts: { parentDir?: string } = {}): Promise<RedisServer | undefined> {
  const shared = process.env.EASEL_TEST_REDIS_URL;
  if (shared) return external(shared);
  const bin = findRedisServer();
  if (!bin) {
    if (process.env.CI) throw new Error('Redis tests need redis-server, which was not found on PATH');
    return undefined;
  }

  const dir = mkdtempSync(join(opts.parentDir ?? tmpdir(), 'easel-redis-'));
  let port = 0;
  let child: ChildProcess | undefined;

  const logFile = join(dir, 'redis.log');
  const log = () => {
    try {
      return readFileSync(logFile, 'utf8').trim().split('\n').slice(-20).join('\n');
    } catch {
      return '(no log)';
    }
  };

  const launch = async (): Promise<void> => {
    const args = [
      '--port', String(port),
      '--bind', '127.0.0.1',
      '--dir', dir,
      '--appendonly', 'yes',
      '--appendfsync', 'always',
      '--save', '',
      '--daemonize', 'no',
      '--protected-mode', 'yes',
      '--loglevel', 'notice',
      '--logfile', logFile,
    ];
    const proc = spawn(bin, args, { stdio: 'ignore' });
    // A server a test forgot to stop must not keep the test process alive (the exit hook kills it).
    proc.unref();
    child = proc;
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`redis-server exited at start (code ${proc.exitCode}):\n${log()}`);
      }
      try {
        // Loading the AOF answers -LOADING; only +PONG means ready.
        if ((await command(port, 'PING', 500)) === '+PONG') return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`redis-server did not answer PING on port ${port}:\n${log()}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  };

  const shutdown = async (): Promise<void> => {
    const proc = child;
    if (!proc) return;
    child = undefined;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    // SIGTERM makes Redis flush the AOF and exit cleanly (like SHUTDOWN).
    proc.kill('SIGTERM');
    if (!(await waitExit(proc, 10_000))) {
      proc.kill('SIGKILL');
      await waitExit(proc, 5_000);
    }
  };

  // A crashed or interrupted test process must not leave a server behind.
  const onExit = () => {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', onExit);

  let lastError: unknown;
  for (let tries = 0; tries < 3; tries++) {
    port = await freePort();
    try {
      await launch();
      lastError = undefined;
      break;
    } catch (err) {
      lastError = err; // most likely the port was taken in between: try another
      await shutdown();
    }
  }
  if (lastError) {
    process.removeListener('exit', onExit);
    rmSync(dir, { recursive: true, force: true });
    throw lastError;
  }

  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      await shutdown();
      process.removeListener('exit', onExit);
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await shutdown();
      // The port may linger briefly after exit; launch() retries PING until the deadline.
      await launch();
    },
  };
}
