/**
 * `npm test`: runs every test file with Node's test runner, sharing one throwaway Postgres server
 * across files (each file still gets its own fresh database), and ends with `N passed, N failed`.
 *   npm test                      # everything
 *   npm test -- tests/api         # a folder or file
 */
import { spawn } from 'node:child_process';
import { startPostgresServer } from '../tests/support/postgres.ts';

const args = process.argv.slice(2);
const targets = args.length ? args : ['tests/**/*.test.ts'];

const env = { ...process.env };
let pg: { adminUrl: string; stop(): Promise<void> } | undefined;
if (!env.EASEL_TEST_POSTGRES_URL) {
  pg = await startPostgresServer();
  if (pg) env.EASEL_TEST_POSTGRES_URL = pg.adminUrl;
}

const child = spawn(
  process.execPath,
  ['--test', '--test-reporter=spec', `--test-concurrency=${env.EASEL_TEST_CONCURRENCY ?? '2'}`, '--test-timeout=240000', ...targets],
  { env, stdio: ['ignore', 'pipe', 'inherit'] },
);

const counts: Record<string, number> = {};
let tail = '';
child.stdout.on('data', (chunk: Buffer) => {
  process.stdout.write(chunk);
  tail += chunk.toString('utf8');
  const lines = tail.split('\n');
  tail = lines.pop() ?? '';
  for (const line of lines) {
    const m = /^ℹ (tests|pass|fail|cancelled|skipped|todo) (\d+)\s*$/.exec(line.replace(/\x1b\[[0-9;]*m/g, ''));
    if (m) counts[m[1]!] = Number(m[2]);
  }
});

const code: number = await new Promise((resolve) => child.on('close', (c) => resolve(c ?? 1)));
await pg?.stop().catch(() => {});
const passed = counts.pass ?? 0;
const failed = (counts.fail ?? 0) + (counts.cancelled ?? 0);
process.stdout.write(`\n${passed} passed, ${failed} failed, ${counts.skipped ?? 0} skipped\n`);
process.exit(code !== 0 || failed > 0 ? 1 : 0);
