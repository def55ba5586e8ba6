/** The command line as a user runs it: config check, keys, and generate against a running server. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { startEasel } from '../support/easel.ts';
import { childCwd, childEnv } from '../support/child-env.ts';
import type { TestEasel } from '../support/easel.ts';

const run = promisify(execFile);
const easelBin = join(import.meta.dirname, '../../bin/easel.js');

async function cli(args: string[], env: Record<string, string> = {}) {
  try {
    const r = await run(process.execPath, [easelBin, ...args], { cwd: childCwd(), env: childEnv(env), timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err: any) {
    return { code: err.code as number, stdout: err.stdout as string, stderr: err.stderr as string };
  }
}

let easel: TestEasel;
before(async () => {
  easel = await startEasel();
});
after(() => easel.close());

test('config check names the bad key and exits 2', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-cli-'));
  writeFileSync(join(dir, 'bad.yaml'), 'worker:\n  concurrency: 0\n');
  const r = await cli(['--config', join(dir, 'bad.yaml'), 'config', 'check']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /worker\.concurrency/);
  const ok = await cli(['config', 'check'], { EASEL_DATA_DIR: dir });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /config OK/);
});

test('keys create prints a key once; list shows it without the secret; revoke stops it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-cli-'));
  const env = { EASEL_DATA_DIR: dir };
  const created = await cli(['keys', 'create', '--name', 'robot'], env);
  assert.equal(created.code, 0, created.stderr);
  const secret = created.stdout.trim();
  assert.match(secret, /^easel_sk_[A-Za-z0-9_-]{40,}$/);
  const list = await cli(['keys', 'list'], env);
  assert.match(list.stdout, /robot/);
  assert.ok(!list.stdout.includes(secret), 'the secret is never listed');
  // Only the hash is stored.
  const db = readFileSync(join(dir, 'easel.db'));
  assert.ok(!db.includes(Buffer.from(secret)), 'the database does not hold the key');
  const revoked = await cli(['keys', 'revoke', 'robot'], env);
  assert.equal(revoked.code, 0);
  assert.match((await cli(['keys', 'list'], env)).stdout, /revoked/);
  assert.equal((await cli(['keys', 'revoke', 'robot'], env)).code, 1);
});

test('generate saves the images from a running server', async () => {
  const out = mkdtempSync(join(tmpdir(), 'easel-out-'));
  const r = await cli(['generate', 'a red fox', '--n', '2', '--out', out, '--url', easel.url, '--key', easel.adminKey]);
  assert.equal(r.code, 0, r.stderr);
  const files = readdirSync(out).sort();
  assert.equal(files.length, 2);
  assert.equal(r.stdout.trim().split('\n').length, 2);
  for (const f of files) assert.equal((await sharp(join(out, f)).metadata()).format, 'png');
});

test('generate without a key says what to do', async () => {
  const r = await cli(['generate', 'x', '--url', easel.url], { EASEL_API_KEY: '' });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /API key/);
});
