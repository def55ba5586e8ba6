/**
 * The README's quick start leaves an `easel.yaml` in the checkout (and maybe EASEL_* or DATABASE_URL
 * in the shell); `npm test` must not care. A fresh `git clone` of this repository gets an `easel.yaml`
 * like the README's (plus settings that would break any test that read them), the shell gets hostile
 * easel variables, and the suite's own runner (scripts/run-tests.ts: scrubbed environment, temp
 * working folder) runs a test that starts `easel serve` as a child: it still passes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(import.meta.dirname, '../..');

const gitCheckout = (() => {
  try {
    return execFileSync('git', ['-C', root, 'rev-parse', '--is-inside-work-tree'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim() === 'true';
  } catch {
    return false;
  }
})();

test('a clean clone with an easel.yaml and EASEL_* in the environment still passes its tests', { skip: gitCheckout ? false : 'not a git checkout (or no git)' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-clone-'));
  try {
    const clone = join(dir, 'easel');
    await run('git', ['clone', '--quiet', '--no-hardlinks', root, clone], { timeout: 120_000 });
    // The set-up `npm ci` would do, without the download: the installed dependencies.
    symlinkSync(join(root, 'node_modules'), join(clone, 'node_modules'), 'dir');
    writeFileSync(
      join(clone, 'easel.yaml'),
      [
        '# As the README suggests, plus what would break a test that read it.',
        'dataDir: /nonexistent/easel-data',
        'server: { port: 1 }',
        'backends:',
        '  - { name: openai, type: openai, apiKeyEnv: OPENAI_API_KEY }',
        'models:',
        '  - { name: dall-e-3, backend: openai, default: true }',
        '',
      ].join('\n'),
    );
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('NODE_TEST')) env[k] = v;
    Object.assign(env, {
      EASEL_CONFIG: join(clone, 'easel.yaml'),
      EASEL_DATA_DIR: '/nonexistent/easel-env-data',
      EASEL_AUTO_PULL: '1',
      DATABASE_URL: 'postgres://nobody:nothing@127.0.0.1:1/none',
      REDIS_URL: 'redis://127.0.0.1:1',
      HF_ENDPOINT: 'http://127.0.0.1:1',
      OPENAI_API_KEY: 'sk-not-a-key',
      LOG_LEVEL: 'trace',
    });
    const r = await run(process.execPath, ['scripts/run-tests.ts', '--test-name-pattern=no model and no backend', 'tests/onnx/serve.test.ts'], { cwd: clone, env, timeout: 180_000 }).catch(
      (err: { stdout?: string; stderr?: string }) => ({ stdout: String(err.stdout ?? ''), stderr: String(err.stderr ?? '') }),
    );
    const last = r.stdout.trim().split('\n').at(-1) ?? '';
    const m = /^(\d+) passed, (\d+) failed/.exec(last);
    assert.ok(m, `no summary line:\n${r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`);
    assert.equal(m[2], '0', r.stdout.slice(-4000));
    assert.ok(Number(m[1]) >= 2, last);
    assert.ok(existsSync(join(clone, 'easel.yaml')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
