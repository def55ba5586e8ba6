/** The command line as a user runs it: config check, keys, and generate against a running server. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { startEasel } from '../support/easel.ts';
import { childCwd, childEnv } from '../support/child-env.ts';
import { spawnEasel } from '../support/processes.ts';
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

test('config check warns about every variable the config names that is unset; --probe asks each backend once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-cli-'));
  const refused = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
  writeFileSync(
    join(dir, 'easel.yaml'),
    [
      `dataDir: ${JSON.stringify(dir)}`,
      'backends:',
      '  - { name: openai, type: openai, apiKeyEnv: OPENAI_API_KEY }',
      '  - { name: rep, type: replicate, apiKeyEnv: EASEL_TEST_NOT_SET_TOKEN, webhookSecretEnv: EASEL_TEST_NOT_SET_SECRET }',
      `  - { name: local, type: openai, baseUrl: ${JSON.stringify(easel.standin.url)}, apiKey: sk-standin }`,
      `  - { name: gone, type: openai, baseUrl: "http://127.0.0.1:${refused}/v1", apiKeyEnv: EASEL_TEST_SET_KEY }`,
      'models:',
      '  - { name: dall-e-3, backend: openai, default: true }',
      '  - { name: sd, backend: local }',
      '',
    ].join('\n'),
  );
  const r = await cli(['config', 'check', '--config', join(dir, 'easel.yaml')], { EASEL_TEST_SET_KEY: 'sk-set' });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^config OK: 4 backend\(s\), 2 model\(s\)/);
  assert.deepEqual(r.stderr.trim().split('\n'), [
    'warning: backends[0] (openai).apiKeyEnv names OPENAI_API_KEY, which is not set',
    'warning: backends[1] (rep).apiKeyEnv names EASEL_TEST_NOT_SET_TOKEN, which is not set',
    'warning: backends[1] (rep).webhookSecretEnv names EASEL_TEST_NOT_SET_SECRET, which is not set',
  ]);

  const probed = await cli(['config', 'check', '--probe', '--config', join(dir, 'easel.yaml')], { EASEL_TEST_SET_KEY: 'sk-set', OPENAI_API_KEY: 'sk-anything' });
  assert.equal(probed.code, 1, 'a backend is down');
  assert.match(probed.stdout, /^backend local \(openai\): up$/m);
  assert.match(probed.stdout, new RegExp(`^backend gone \\(openai\\): down — http://127\\.0\\.0\\.1:${refused}/v1 is unreachable: connect ECONNREFUSED 127\\.0\\.0\\.1:${refused}$`, 'm'));
  assert.match(probed.stdout, /^backend rep \(replicate\): down/m);
});

test('every command that touches data takes --data-dir: a key made with `keys create --data-dir` works on `serve --data-dir`', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-cli-'));
  const serve = await spawnEasel('serve', { dataDir: dir, port: 0, env: { LOG_LEVEL: 'silent', EASEL_AUTO_PULL: '0' } });
  try {
    const created = await cli(['keys', 'create', '--name', 'robot', '--data-dir', dir]);
    assert.equal(created.code, 0, created.stderr);
    const res = await fetch(`${serve.url}/v1/keys/current`, { headers: { authorization: `Bearer ${created.stdout.trim()}` } });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { name: string }).name, 'robot');
  } finally {
    await serve.terminate();
  }
  // keys list: a header row, then the keys (the admin key serve made, and robot).
  const list = await cli(['keys', 'list', '--data-dir', dir]);
  const lines = list.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^ID +NAME +PREFIX +ROLE +CREATED +STATUS$/);
  assert.equal(lines.length, 3);
  assert.ok(lines.slice(1).every((l) => / (admin|user) +\d{4}-\d\d-\d\dT[\d:.]+Z +active$/.test(l)), lines.join('\n'));
  // The others read the same folder: the database serve migrated, its models folder.
  const [migrated, costs, models, check, help] = await Promise.all([
    cli(['migrate', '--data-dir', dir]),
    cli(['costs', 'report', '--days', '1', '--json', '--data-dir', dir]),
    cli(['models', 'list', '--json', '--data-dir', dir]),
    cli(['config', 'check', '--data-dir', dir]),
    cli(['keys', 'create', '--help']),
  ]);
  assert.match(migrated.stdout, /database is up to date/);
  assert.equal(costs.code, 0, costs.stderr);
  assert.equal(JSON.parse(models.stdout).modelsDir, join(dir, 'models'));
  assert.equal(check.code, 0, check.stderr);
  // One definition: every command's help shows both options.
  assert.match(help.stdout, /--data-dir <dir>/);
  assert.match(help.stdout, /-c, --config <file>/);
});

test("the README's --out ./out folder is ignored by git", async (t) => {
  const root = join(import.meta.dirname, '../..');
  try {
    execFileSync('git', ['-C', root, 'rev-parse', '--git-dir'], { stdio: 'ignore' });
  } catch {
    return t.skip('not a git checkout');
  }
  for (const path of ['out/fox-0.png', 'data/easel.db', 'easel.yaml']) {
    assert.equal(spawnSync('git', ['-C', root, 'check-ignore', '-q', path]).status, 0, `${path} is ignored`);
  }
});
