#!/usr/bin/env -S node --max-semi-space-size=8
// easel runs its TypeScript sources directly with Node's type stripping (Node >= 22.18). The V8 flag
// keeps young-generation collections short (README, Sizing); `node bin/easel.js` skips this line, so
// `npm start` and the Docker image pass it themselves.
import '../src/cli/main.ts';
