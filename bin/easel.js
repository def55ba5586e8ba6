#!/usr/bin/env node
// easel is TypeScript. Compiled to lib/ (scripts/build-lib.ts, run by `npm install` and `npm start`)
// it starts as plain JavaScript; when lib/ is missing or older than src/ it runs src/ directly on
// Node's type stripping (Node >= 22.18). The version check comes first and the CLI is imported
// dynamically: a static import of a .ts file fails on an older Node (ERR_UNKNOWN_FILE_EXTENSION)
// before any line of this file runs.
import nodeCheck from './check-node.cjs';

if (nodeCheck.check()) await import(await entry());
else process.exitCode = 1;

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
