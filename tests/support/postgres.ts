/**
 * Throwaway Postgres for tests. Never touches a Postgres the machine already runs: either the test
 * runner hands over a throwaway server's admin URL in EASEL_TEST_POSTGRES_URL, or a private server is
 * initialised in a temp dir on a random loopback port and removed afterwards.
 *
 * When the Postgres binaries are missing, tests skip (undefined is returned) — except under CI, where a
 * missing database is an error rather than a silent skip.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, chownSync, constants, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';

const run = promisify(execFile);

export interface TestPostgres {
  /** URL of a fresh database that only this caller uses. */
  url: string;
  stop(): Promise<void>;
}

export interface TestPostgresServer {
  /** URL of the server's `postgres` database, for creating and dropping databases. */
  adminUrl: string;
  stop(): Promise<void>;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** The folder holding initdb and pg_ctl: PATH first, then the newest /usr/lib/postgresql/N/bin. */
function findBinDir(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && isExecutable(join(dir, 'initdb')) && isExecutable(join(dir, 'pg_ctl'))) return dir;
  }
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return undefined;
  const versions = readdirSync(root)
    .filter((v) => /^\d+(\.\d+)?$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const dir = join(root, v, 'bin');
    if (isExecutable(join(dir, 'initdb')) && isExecutable(join(dir, 'pg_ctl'))) return dir;
  }
  return undefined;
}

function unavailable(reason: string): undefined {
  if (process.env.CI) throw new Error(`Postgres tests need a throwaway server but ${reason}`);
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

interface OsUser {
  uid: number;
  gid: number;
}

function lookupPostgresUser(): OsUser | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Starts a private Postgres server (or returns undefined when the binaries are missing outside CI).
 * A global test runner starts one for the whole suite and passes its adminUrl on in
 * EASEL_TEST_POSTGRES_URL.
 */
/** `parentDir`: where the server's data folder goes (default: the OS temp folder). */
export async function startPostgresServer(opts: { parentDir?: string } = {}): Promise<TestPostgresServer | undefined> {
  const binDir = findBinDir();
  if (!binDir) return unavailable('initdb and pg_ctl were found neither on PATH nor in /usr/lib/postgresql/*/bin');
  const initdb = join(binDir, 'initdb');
  const pgCtl = join(binDir, 'pg_ctl');

  // Postgres refuses to run as root: hand the data dir to the postgres OS user and run as it.
  const asRoot = process.getuid?.() === 0;
  let user: OsUser | undefined;
  if (asRoot) {
    user = lookupPostgresUser();
    if (!user) return unavailable('we run as root and there is no `postgres` OS user to run the server as');
  }
  const runuser = ['/usr/sbin/runuser', '/sbin/runuser', '/usr/bin/runuser'].find(isExecutable);
  const exec = (file: string, args: string[]) => {
    if (!asRoot) return run(file, args, { encoding: 'utf8' });
    if (runuser) return run(runuser, ['-u', 'postgres', '--', file, ...args], { encoding: 'utf8' });
    const quoted = [file, ...args].map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(' ');
    return run('su', ['postgres', '-s', '/bin/sh', '-c', quoted], { encoding: 'utf8' });
  };

  const dir = mkdtempSync(join(opts.parentDir ?? tmpdir(), 'easel-pg-'));
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'server.log');
  if (user) chownSync(dir, user.uid, user.gid);

  let started = false;
  const stopSync = () => {
    if (started) {
      try {
        const args = ['stop', '-D', dataDir, '-m', 'immediate', '-w'];
        if (!asRoot) execFileSync(pgCtl, args, { stdio: 'ignore' });
        else if (runuser) execFileSync(runuser, ['-u', 'postgres', '--', pgCtl, ...args], { stdio: 'ignore' });
        else execFileSync('su', ['postgres', '-s', '/bin/sh', '-c', `'${pgCtl}' ${args.join(' ')}`], { stdio: 'ignore' });
      } catch {
        // already gone
      }
      started = false;
    }
    rmSync(dir, { recursive: true, force: true });
  };
  // A crashed or interrupted test process must not leave a server behind.
  const onExit = () => stopSync();
  process.once('exit', onExit);

  try {
    await exec(initdb, ['-D', dataDir, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8', '--locale=C']);
    let lastError: unknown;
    for (let tries = 0; tries < 3 && !started; tries++) {
      const port = await freePort();
      const opts = [
        `-p ${port}`,
        `-k ${dir}`,
        '-c listen_addresses=127.0.0.1',
        '-c fsync=off',
        '-c synchronous_commit=off',
        '-c full_page_writes=off',
        // One server serves the whole suite (several easel processes with pools of 10 at once).
        '-c max_connections=500',
      ].join(' ');
      try {
        await exec(pgCtl, ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '30', '-o', opts]);
        started = true;
        const adminUrl = `postgres://postgres@127.0.0.1:${port}/postgres`;
        await waitReady(adminUrl);
        return {
          adminUrl,
          async stop() {
            process.removeListener('exit', onExit);
            if (!started) return rmSync(dir, { recursive: true, force: true });
            try {
              await exec(pgCtl, ['stop', '-D', dataDir, '-m', 'immediate', '-w']);
            } catch {
              // already gone
            }
            started = false;
            rmSync(dir, { recursive: true, force: true });
          },
        };
      } catch (err) {
        lastError = err; // most likely the port was taken in between: try another
        if (started) stopSync();
      }
    }
    throw lastError;
  } catch (err) {
    process.removeListener('exit', onExit);
    stopSync();
    throw err;
  }
}

async function waitReady(url: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const client = new pg.Client({ connectionString: url });
    try {
      await client.connect();
      await client.query('select 1');
      await client.end();
      return;
    } catch (err) {
      await client.end().catch(() => {});
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function adminQuery(adminUrl: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

/** Creates a uniquely named database on the server behind adminUrl; stop() drops it. */
export async function createTestDatabase(adminUrl: string): Promise<TestPostgres> {
  const name = `easel_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  await adminQuery(adminUrl, `create database ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async stop() {
      try {
        await adminQuery(adminUrl, `drop database if exists ${name} with (force)`);
      } catch {
        await adminQuery(adminUrl, `drop database if exists ${name}`).catch(() => {});
      }
    },
  };
}

/**
 * A fresh database for one test file: on the shared server in EASEL_TEST_POSTGRES_URL when set,
 * otherwise on a private server started for this caller (stop() then stops the server too).
 */
export async function startPostgres(): Promise<TestPostgres | undefined> {
  const shared = process.env.EASEL_TEST_POSTGRES_URL;
  if (shared) return createTestDatabase(shared);
  const server = await startPostgresServer();
  if (!server) return undefined;
  try {
    const dbase = await createTestDatabase(server.adminUrl);
    return {
      url: dbase.url,
      async stop() {
        await server.stop(); // the whole server goes, so there is nothing to drop
      },
    };
  } catch (err) {
    await server.stop();
    throw err;
  }
}
