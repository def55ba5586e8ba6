#!/usr/bin/env node
// easel runs its TypeScript sources directly with Node's type stripping (Node >= 22.18).
import '../src/cli/main.ts';
