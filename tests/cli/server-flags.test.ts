/**
 * The long-running commands run with a bounded young generation and two malloc arenas (bin/easel.js):
 * the process replaces itself, keeping its pid, with `--min-semi-space-size=8 --max-semi-space-size=32`
 * and MALLOC_ARENA_MAX=2,
 * unless the operator set them or EASEL_NODE_FLAGS=0. Short commands start as they are. Read from
 * /proc/<pid>/cmdline and /proc/<pid>/environ.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { spawnEasel } from '../support/processes.ts';
import { childEnv } from '../support/child-env.ts';

const run = promisify(execFile);
const cmdline = (pid: number): string[] => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);

const environ = (pid: number): string[] => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter(Boolean);

for (const [what, env, flag, arenas] of [
  ['by default', {}, '--min-semi-space-size=8,--max-semi-space-size=32', 'MALLOC_ARENA_MAX=2'],
  ['the operator\'s own size (NODE_OPTIONS) wins', { NODE_OPTIONS: '--max-semi-space-size=64' }, undefined, 'MALLOC_ARENA_MAX=2'],
  ['the operator\'s own MALLOC_ARENA_MAX wins', { MALLOC_ARENA_MAX: '4' }, '--min-semi-space-size=8,--max-semi-space-size=32', 'MALLOC_ARENA_MAX=4'],
  ['EASEL_NODE_FLAGS=0 turns both off', { EASEL_NODE_FLAGS: '0' }, undefined, undefined],
] as const) {
  test(`easel serve's memory settings: ${what}`, { skip: process.platform !== 'linux' && 'reads /proc' }, async (t) => {
    const dataDir = mkdtempSync(join(tmpdir(), 'easel-flags-'));
    t.after(() => rmSync(dataDir, { recursive: true, force: true }));
    const easel = await spawnEasel('serve', { dataDir, port: 0, env: { EASEL_AUTO_PULL: '0', ...env } });
    t.after(() => easel.terminate());
    const args = cmdline(easel.pid);
    // Same pid: the process replaced itself; a supervisor's signals still reach the server.
    assert.ok(args.includes('serve'), args.join(' '));
    const semi = args.filter((a) => /^--(min|max)-semi-space-size/.test(a));
    if (flag) assert.equal(semi.join(), flag);
    else assert.deepEqual(semi, [], args.join(' '));
    const set = environ(easel.pid).filter((v) => v.startsWith('MALLOC_ARENA_MAX='));
    assert.deepEqual(set, arenas ? [arenas] : []);
    const res = await fetch(`${easel.url}/health`);
    assert.equal(res.status, 200);
  });
}

test('short commands start once, as they are', async (t) => {
  // A preload that notes each start of a Node process with its flags: one start for --help.
  const dir = mkdtempSync(join(tmpdir(), 'easel-flags-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const note = join(dir, 'note.cjs');
  const starts = join(dir, 'starts.txt');
  writeFileSync(note, `require('node:fs').appendFileSync(${JSON.stringify(starts)}, JSON.stringify(process.execArgv) + '\\n');`);
  const out = await run(process.execPath, [join(import.meta.dirname, '../../bin/easel.js'), '--help'], { env: childEnv({ NODE_OPTIONS: `--require ${note}` }) });
  assert.match(out.stdout, /Usage: easel/);
  assert.deepEqual(readFileSync(starts, 'utf8').trim().split('\n'), ['[]']);
});
