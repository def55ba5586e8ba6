#!/usr/bin/env node
// easel runs its TypeScript sources directly on Node's type stripping (Node >= 22.18). The version
// check comes first and the CLI is imported dynamically: a static import of a .ts file fails on an
// older Node (ERR_UNKNOWN_FILE_EXTENSION) before any line of this file runs.
import nodeCheck from './check-node.cjs';

if (nodeCheck.check()) await import('../src/cli/main.ts');
else process.exitCode = 1;
