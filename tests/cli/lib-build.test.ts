/**
 * lib/: src/ compiled to JavaScript (scripts/build-lib.ts), which `easel` runs instead of the .ts
 * sources while it is up to date, and never once a source file has changed since. Runs on a copy of
 * bin/, scripts/ and src/ (node_modules linked), so the checkout's own lib/ is left alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(import.meta.dirname, '../..');

function copyOfCheckout(): string {
  const dir = mkdtempSync(join(tmpdir(), 'easel-lib-'));
  for (const part of ['bin', 'scripts', 'src', 'package.json']) cpSync(join(root, part), join(dir, part), { recursive: true });
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

async function easel(dir: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  return run(process.execPath, [join(dir, 'bin/easel.js'), ...args], { cwd: dir, env: { ...process.env, ...env }, timeout: 60_000 });
}

test('the build compiles every source file, keeps lines where they were, and points relative imports at .js', async (t) => {
  const dir = copyOfCheckout();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const built = await run(process.execPath, ['--disable-warning=ExperimentalWarning', join(dir, 'scripts/build-lib.ts')], { cwd: dir });
  assert.match(built.stdout, /compiled \d+ files to lib\//);
  assert.equal(built.stderr, '');
  const count = (d: string, ext: string): number =>
    readdirSync(d, { withFileTypes: true, recursive: true }).filter((e) => e.isFile() && e.name.endsWith(ext)).length;
  assert.equal(count(join(dir, 'lib'), '.js'), count(join(dir, 'src'), '.ts'));
  const ts = readFileSync(join(dir, 'src/app.ts'), 'utf8').split('\n');
  const js = readFileSync(join(dir, 'lib/app.js'), 'utf8').split('\n');
  assert.equal(js.length, ts.length, 'one line for one line (stack traces point at src/)');
  const line = ts.findIndex((l) => l.includes("from './store/database.ts'"));
  assert.match(js[line]!, /from '\.\/store\/database\.js'/);
  assert.match(readFileSync(join(dir, 'lib/storage/file-writer.js'), 'utf8'), /new URL\('\.\/file-writer-thread\.js', import\.meta\.url\)/, 'worker threads load the compiled file');
  // A second run with nothing changed does nothing.
  const again = await run(process.execPath, ['--disable-warning=ExperimentalWarning', join(dir, 'scripts/build-lib.ts')], { cwd: dir });
  assert.equal(again.stdout, '');
});

test('easel runs lib/ while it matches src/, and src/ as soon as a source file changes', async (t) => {
  const dir = copyOfCheckout();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // Without lib/ it runs from source.
  assert.match((await easel(dir, ['--help'])).stdout, /Usage: easel/);
  await run(process.execPath, ['--disable-warning=ExperimentalWarning', join(dir, 'scripts/build-lib.ts')], { cwd: dir });
  assert.ok(existsSync(join(dir, 'lib/.stamp')));
  assert.match((await easel(dir, ['--help'])).stdout, /Usage: easel/, 'the compiled CLI works');
  // Mark the compiled entry so the test can tell which one ran.
  writeFileSync(join(dir, 'lib/cli/main.js'), "process.stdout.write('compiled entry\\n');\n");
  assert.equal((await easel(dir, ['--help'])).stdout, 'compiled entry\n');
  assert.match((await easel(dir, ['--help'], { EASEL_FROM_SOURCE: '1' })).stdout, /Usage: easel/, 'EASEL_FROM_SOURCE=1 runs src/');
  // An edit to any source file (here only its modification time) and lib/ is stale: src/ runs.
  const later = new Date(Date.now() + 5_000);
  utimesSync(join(dir, 'src/core/ids.ts'), later, later);
  assert.match((await easel(dir, ['--help'])).stdout, /Usage: easel/);
});
