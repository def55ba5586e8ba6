/**
 * easel under test: `node bin/easel.js serve --config <tmp yaml>` as a child process with
 * LOG_LEVEL=warn, so its memory and CPU are its own, plus read access to its metadata database for
 * counting finished jobs.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import Database from 'libsql';
import pg from 'pg';
import { procCpuSeconds, procMainThreadCpuSeconds, procMemory, spawnNode } from './proc.ts';
import type { Child, ProcMemory } from './proc.ts';

export const ADMIN_KEY = 'easel_sk_bench_admin_key_0123456789abcdef';
/** The public model name easel serves; the same id is accepted by the stand-in directly. */
export const MODEL = 'gpt-image-1';

export interface StackOptions {
  /** postgres:// URL; absent means SQLite in the data folder. */
  databaseUrl?: string;
  /** redis:// URL; absent means the embedded queue. */
  redisUrl?: string;
  prefix?: string;
}

export interface EaselOptions extends StackOptions {
  standinUrl: string;
  concurrency: number;
  /** Extra node flags for the easel process (e.g. --cpu-prof). */
  nodeFlags?: string[];
  /** Extra config, merged over the defaults (shallow per section). */
  config?: Record<string, any>;
}

export interface EaselProcess {
  url: string;
  pid: number;
  dataDir: string;
  child: Child;
  memory(): ProcMemory;
  cpuSeconds(): number;
  mainThreadCpuSeconds(): number;
  db: JobsDb;
  stop(): Promise<void>;
}

/** Read-only queries the benchmark makes on easel's jobs table. */
export interface JobsDb {
  /** Jobs in a terminal state, by status. */
  terminalCounts(): Promise<{ succeeded: number; failed: number; canceled: number; total: number }>;
  /** Facts about jobs created at or after `sinceMs` (epoch ms). */
  summary(sinceMs: number): Promise<{ jobs: number; succeeded: number; maxFinishedAt: number; attempts: number; images: number }>;
  /** Postgres only: transactions committed or rolled back in easel's database so far (each statement outside BEGIN is one). */
  transactions?(): Promise<number>;
  close(): Promise<void>;
}

function sqliteJobsDb(file: string): JobsDb {
  let db: InstanceType<typeof Database> | undefined;
  const open = () => {
    // Only reads (libsql has no read-only open); in WAL mode a reader never blocks easel's writer.
    if (!db) {
      db = new Database(file);
      db.exec('PRAGMA busy_timeout = 5000');
    }
    return db;
  };
  return {
    async terminalCounts() {
      const rows = open().prepare(`select status, count(*) as n from jobs where status in ('succeeded','failed','canceled') group by status`).all() as { status: string; n: number }[];
      const c = { succeeded: 0, failed: 0, canceled: 0, total: 0 };
      for (const r of rows) {
        (c as Record<string, number>)[r.status] = Number(r.n);
        c.total += Number(r.n);
      }
      return c;
    },
    async summary(sinceMs) {
      const r = open()
        .prepare(
          `select count(*) as jobs, sum(case when status = 'succeeded' then 1 else 0 end) as succeeded,
                  max(finished_at) as max_finished, sum(attempt) as attempts,
                  (select count(*) from images i join jobs j2 on j2.id = i.job_id where j2.created_at >= ?) as images
           from jobs where created_at >= ?`,
        )
        .get(sinceMs, sinceMs) as Record<string, number | null>;
      return { jobs: Number(r.jobs), succeeded: Number(r.succeeded ?? 0), maxFinishedAt: Number(r.max_finished ?? 0), attempts: Number(r.attempts ?? 0), images: Number(r.images ?? 0) };
    },
    async close() {
      db?.close();
    },
  };
}

function postgresJobsDb(url: string): JobsDb {
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  pool.on('error', () => {});
  return {
    async terminalCounts() {
      const { rows } = await pool.query(`select status, count(*)::int as n from jobs where status in ('succeeded','failed','canceled') group by status`);
      const c = { succeeded: 0, failed: 0, canceled: 0, total: 0 };
      for (const r of rows as { status: string; n: number }[]) {
        (c as Record<string, number>)[r.status] = Number(r.n);
        c.total += Number(r.n);
      }
      return c;
    },
    async summary(sinceMs) {
      const { rows } = await pool.query(
        `select count(*)::int as jobs, sum(case when status = 'succeeded' then 1 else 0 end)::int as succeeded,
                max(finished_at)::float8 as max_finished, sum(attempt)::int as attempts,
                (select count(*)::int from images i join jobs j2 on j2.id = i.job_id where j2.created_at >= $1) as images
         from jobs where created_at >= $1`,
        [sinceMs],
      );
      const r = rows[0] as Record<string, number | null>;
      return { jobs: Number(r.jobs), succeeded: Number(r.succeeded ?? 0), maxFinishedAt: Number(r.max_finished ?? 0), attempts: Number(r.attempts ?? 0), images: Number(r.images ?? 0) };
    },
    async transactions() {
      // Server statistics are flushed at most once a second; read a fresh snapshot.
      await new Promise((r) => setTimeout(r, 1100));
      const { rows } = await pool.query(`select pg_stat_clear_snapshot(), (xact_commit + xact_rollback)::float8 as n from pg_stat_database where datname = current_database()`);
      return Number((rows[0] as { n: number }).n);
    },
    async close() {
      await pool.end();
    },
  };
}

const ROOT = resolve(import.meta.dirname, '..', '..');

/**
 * Run folders are removed when the benchmark ends, not when their run does. Deleting a run's
 * thousands of image files right before the next run would tax that run: ext4 without a journal
 * (this VM's root filesystem) skips inodes freed in the last few minutes when it allocates new ones,
 * scanning past every one of them, so each file the next run creates cost ~1 ms of kernel CPU
 * instead of ~0.03 ms.
 */
const runFolders = new Set<string>();
export function removeRunFolders(): void {
  for (const dir of runFolders) rmSync(dir, { recursive: true, force: true });
  runFolders.clear();
}
if (!process.env.EASEL_BENCH_KEEP) process.once('exit', removeRunFolders);

export async function startEaselProcess(opts: EaselOptions): Promise<EaselProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'easel-bench-'));
  runFolders.add(dir);
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir, { recursive: true });
  const extra = opts.config ?? {};
  const config: Record<string, any> = {
    dataDir,
    server: { host: '127.0.0.1', port: 0, ...extra.server },
    auth: { adminKey: ADMIN_KEY },
    logging: { level: 'warn' },
    worker: { concurrency: opts.concurrency, ...extra.worker },
    queue: { ...extra.queue },
    ...(opts.databaseUrl ? { database: { url: opts.databaseUrl } } : {}),
    ...(opts.redisUrl ? { redis: { url: opts.redisUrl, prefix: opts.prefix ?? 'easel-bench' } } : {}),
    // The stand-in plays OpenAI's own API (as in tests/support/easel.ts): priced by OpenAI's list
    // prices with OpenAI's per-model rules. On a loopback URL easel would otherwise take it for a GPU
    // somebody runs and cost every job by measured time (one more row per job in job_costs).
    backends: [{ type: 'openai', name: 'standin', baseUrl: opts.standinUrl, apiKey: 'sk-standin', modelRules: 'on', listPrices: true }],
    models: [{ name: MODEL, backend: 'standin', model: MODEL, default: true }],
  };
  // Other top-level sections as given (`npm run bench -- --config '{"fairness":{"enabled":false}}'`).
  for (const [k, v] of Object.entries(extra)) if (!['server', 'worker', 'queue'].includes(k)) config[k] = v;
  const file = join(dir, 'easel.yaml');
  writeFileSync(file, stringify(config));

  const { child, match } = await spawnNode([...(opts.nodeFlags ?? []), join(ROOT, 'bin', 'easel.js'), 'serve', '--config', file], {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'warn', NODE_ENV: 'production' },
    ready: /listening on (http:\/\/\S+)/,
  });
  const url = match[1]!;
  const db = opts.databaseUrl ? postgresJobsDb(opts.databaseUrl) : sqliteJobsDb(join(dataDir, 'easel.db'));
  return {
    url,
    pid: child.pid,
    dataDir,
    child,
    memory: () => procMemory(child.pid),
    cpuSeconds: () => procCpuSeconds(child.pid),
    mainThreadCpuSeconds: () => procMainThreadCpuSeconds(child.pid),
    db,
    async stop() {
      await db.close().catch(() => {});
      await child.stop(15_000);
      const err = child.stderr().trim();
      if (err) process.stderr.write(`[easel stderr]\n${err.slice(0, 4000)}\n`);
    },
  };
}
