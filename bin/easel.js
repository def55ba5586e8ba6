#!/usr/bin/env node
// easel is TypeScript. Compiled to lib/ (scripts/build-lib.ts, run by `npm install` and `npm start`)
// it starts as plain JavaScript; when lib/ is missing or older than src/ it runs src/ directly on
// Node's type stripping (Node >= 22.18). The version check comes first and the CLI is imported
// dynamically: a static import of a .ts file fails on an older Node (ERR_UNKNOWN_FILE_EXTENSION)
// before any line of this file runs.
import nodeCheck from './check-node.cjs';

if (nodeCheck.check()) {
  serverFlags();
  await import(await entry());
} else process.exitCode = 1;

async function entry() {
  if (process.env.EASEL_FROM_SOURCE !== '1') {
    const { existsSync, readFileSync } = await import('node:fs');
    const stampFile = new URL('../lib/.stamp', import.meta.url);
    if (existsSync(stampFile)) {
      const { libStamp } = await import('./lib-stamp.js');
      if (readFileSync(stampFile, 'utf8') === libStamp(new URL('../src', import.meta.url).pathname)) return '../lib/cli/main.js';
    }
  }
  return '../src/cli/main.ts';
}

/**
 * The long-running commands (serve, api, worker) start with two memory settings a process can only
 * take at its start, so the process replaces itself (same pid, same arguments) with one that has them:
 * - V8's young generation between 3 × 8 and 3 × 32 MB (`--min-semi-space-size=8
 *   --max-semi-space-size=32`); V8 otherwise grows it to 3 × 64 MB on a busy server, and lets it
 *   shrink to 3 × 1 MB after an idle spell, from where a light steady load never grows it back;
 * - glibc's malloc limited to 2 arenas (`MALLOC_ARENA_MAX=2`); otherwise each thread that allocates
 *   (writer threads, libuv's pool, V8's helpers) gets an arena of its own and keeps what it freed.
 * Measured (README, Sizing): the arenas cut peak RSS by ~30 MB at the same throughput. The young
 * generation is a trade between memory and CPU: every halving doubles how often it is collected and
 * sends more short-lived objects to the old generation. At 3 × 8 MB (an earlier default) `npm run
 * bench` spent twice the GC time per job and p99 of sync requests on Redis + Postgres doubled; at
 * 3 × 32 MB both are back at V8's defaults, for ~40 MB less peak than those. An operator's own
 * setting (a semi-space size on the command line or in NODE_OPTIONS, a MALLOC_ARENA_MAX) wins;
 * EASEL_NODE_FLAGS=0 turns both off.
 */
function serverFlags() {
  if (typeof process.execve !== 'function' || process.env.EASEL_NODE_FLAGS === '0') return;
  const args = process.argv.slice(2);
  let command;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '-c' || args[i] === '--config') i++;
    else if (!args[i].startsWith('-')) {
      command = args[i];
      break;
    }
  }
  if (command !== 'serve' && command !== 'api' && command !== 'worker') return;
  const semiSpace = !/semi[-_]space/.test([...process.execArgv, process.env.NODE_OPTIONS ?? ''].join(' '));
  const arenas = process.platform === 'linux' && process.env.MALLOC_ARENA_MAX === undefined;
  if (!semiSpace && !arenas) return;
  process.execve(
    process.execPath,
    [process.execPath, ...(semiSpace ? ['--min-semi-space-size=8', '--max-semi-space-size=32'] : []), ...process.execArgv, ...process.argv.slice(1)],
    arenas ? { ...process.env, MALLOC_ARENA_MAX: '2' } : process.env,
  );
}
