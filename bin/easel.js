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
 * The long-running commands (serve, api, worker) run with a young generation of at most 3 × 8 MB.
 * V8 otherwise grows it to 3 × 32 MB on a busy server: measured with easel serve under load, the
 * peak RSS goes from 330–370 MB to 270–300 MB at the same throughput (README, "Memory"). V8 reads
 * the size only at start, so the process replaces itself (same pid) with one that has the flag.
 * A flag of the operator's own (command line or NODE_OPTIONS) wins; EASEL_NODE_FLAGS=0 turns this off.
 */
function serverFlags() {
  if (typeof process.execve !== 'function' || process.env.EASEL_NODE_FLAGS === '0') return;
  const own = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].join(' ');
  if (/semi[-_]space/.test(own)) return;
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
  process.execve(process.execPath, [process.execPath, '--max-semi-space-size=8', ...process.execArgv, ...process.argv.slice(1)]);
}
