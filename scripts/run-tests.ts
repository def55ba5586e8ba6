/**
 * `npm test`: runs every test file with Node's test runner, sharing one throwaway Postgres server
 * across files (each file still gets its own fresh database), and ends with `N passed, N failed`.
 *   npm test                      # everything
 *   npm test -- tests/api         # a folder or file
 *   npm test -- --test-name-pattern='no model' tests/onnx/serve.test.ts
 *
 * The run never sees the user's settings: easel's environment variables (EASEL_*, DATABASE_URL,
 * REDIS_URL, HF_ENDPOINT…; tests/support/child-env.ts) are removed, and the test files run in an empty
 * temp folder, so an `easel.yaml` in the checkout or in the current folder is never read.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startPostgresServer } from '../tests/support/postgres.ts';
import { scrubEnv } from '../tests/support/child-env.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const args = process.argv.slice(2);
// Absolute, since the runner works in a temp folder: the user's paths are relative to where they are.
const options = args.filter((a) => a.startsWith('--'));
const paths = args.filter((a) => !a.startsWith('--')).map((a) => resolve(a));
const targets = [...options, ...(paths.length ? paths : [join(root, 'tests/**/*.test.ts')])];

const env = scrubEnv(process.env);
const cwd = mkdtempSync(join(tmpdir(), 'easel-tests-'));
let pg: { adminUrl: string; stop(): Promise<void> } | undefined;
if (!env.EASEL_TEST_POSTGRES_URL) {
  pg = await startPostgresServer();
  if (pg) env.EASEL_TEST_POSTGRES_URL = pg.adminUrl;
}

const child = spawn(
  process.execPath,
  ['--test', '--test-reporter=spec', `--test-concurrency=${env.EASEL_TEST_CONCURRENCY ?? '2'}`, '--test-timeout=240000', ...targets],
  { cwd, env, stdio: ['ignore', 'pipe', 'inherit'] },
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
rmSync(cwd, { recursive: true, force: true });
const passed = counts.pass ?? 0;
const failed = (counts.fail ?? 0) + (counts.cancelled ?? 0);
process.stdout.write(`\n${passed} passed, ${failed} failed, ${counts.skipped ?? 0} skipped\n`);
process.exit(code !== 0 || failed > 0 ? 1 : 0);
