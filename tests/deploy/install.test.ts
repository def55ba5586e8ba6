/**
 * The install as a user (and `.ci/run`, and the Dockerfile) runs it: `npm ci` accepts the committed
 * lock, `npm install` leaves it unchanged, npm warns about no unknown project config, and every
 * dependency's install script has been decided on in `allowScripts`. The two npm runs use `--offline`
 * and `--dry-run`/`--package-lock-only` on a copy of package.json and the lock: with a complete lock
 * npm needs nothing from the registry (about a second each); with an incomplete one `npm ci` refuses.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(import.meta.dirname, '../..');

function npmMajor(): number {
  try {
    return Number(execFileSync('npm', ['--version'], { encoding: 'utf8' }).trim().split('.')[0]);
  } catch {
    return 0;
  }
}
const major = npmMajor();
const skip = major >= 11 ? false : major === 0 ? 'npm is not on PATH' : `npm ${major} predates allowScripts (npm 11)`;

async function npm(args: string[], cwd: string) {
  try {
    const r = await run('npm', [...args, '--no-audit', '--no-fund', '--no-update-notifier'], { cwd, timeout: 120_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err: any) {
    return { code: Number(err.code ?? 1), stdout: String(err.stdout ?? ''), stderr: String(err.stderr ?? '') };
  }
}

/** package.json, the lock and any .npmrc, alone in a temp folder. */
function copyManifests(): string {
  const dir = mkdtempSync(join(tmpdir(), 'easel-lock-'));
  for (const f of ['package.json', 'package-lock.json', '.npmrc']) if (existsSync(join(root, f))) copyFileSync(join(root, f), join(dir, f));
  return dir;
}

describe('npm install and npm ci', { skip }, () => {
  test('npm ci accepts the committed lock, with no warning about unknown config', async () => {
    const dir = copyManifests();
    try {
      const r = await npm(['ci', '--dry-run', '--offline', '--ignore-scripts'], dir);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /Unknown (project|user|env) config/);
      assert.doesNotMatch(r.stderr, /EBADENGINE/, 'every locked package runs on this Node');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('npm install leaves the committed lock unchanged', async () => {
    const dir = copyManifests();
    try {
      const before = readFileSync(join(dir, 'package-lock.json'), 'utf8');
      const r = await npm(['install', '--package-lock-only', '--offline', '--ignore-scripts'], dir);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(readFileSync(join(dir, 'package-lock.json'), 'utf8'), before, 'npm install rewrote package-lock.json');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('every install script in the tree is allowed or denied in allowScripts', async (t) => {
    if (!existsSync(join(root, 'node_modules'))) return t.skip('node_modules is not installed');
    const r = await npm(['approve-scripts', '--allow-scripts-pending'], root);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /No packages with unreviewed install scripts/, r.stdout);
  });
});
