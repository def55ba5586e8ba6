/**
 * Compiles easel's TypeScript (src/) to plain JavaScript in lib/, the same tree one-for-one, so the
 * server starts without Node's type stripper: it costs ~17 MB of memory in every isolate that loads a
 * .ts file (the server and each of its worker threads). Types are erased with Node's own
 * `stripTypeScriptTypes` (what running the .ts files does), which keeps every line and column where
 * it was, so stack traces point at the same lines of src/. Relative `.ts` specifiers (imports, worker
 * and optional-module URLs) become `.js`.
 *
 * bin/easel.js runs lib/ only while its stamp matches src/ (names, sizes and modification times);
 * after any edit it runs src/ directly until the next build. Runs from `npm install` (`prepare`) and
 * `npm start`, and is skipped when lib/ is up to date.
 *
 *   node scripts/build-lib.ts            # build if src/ changed
 *   node scripts/build-lib.ts --force    # build anyway
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stripTypeScriptTypes } from 'node:module';
import { libStamp, sourceFiles } from '../bin/lib-stamp.js';

const root = fileURLToPath(new URL('../', import.meta.url));
const src = join(root, 'src');
const lib = join(root, 'lib');
const force = process.argv.includes('--force');

const stamp = libStamp(src);
const stampFile = join(lib, '.stamp');
if (!force && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === stamp) process.exit(0);

/** A quoted relative specifier naming a .ts file: './x.ts', "../y/z.ts". */
const RELATIVE_TS = /(['"])(\.{1,2}\/[^'"\n]*?)\.ts\1/g;

const started = Date.now();
const tmp = `${lib}.tmp-${process.pid}`;
rmSync(tmp, { recursive: true, force: true });
const files = sourceFiles(src);
for (const file of files) {
  const out = join(tmp, file.replace(/\.ts$/, '.js'));
  mkdirSync(dirname(out), { recursive: true });
  const code = readFileSync(join(src, file), 'utf8');
  if (!file.endsWith('.ts')) {
    writeFileSync(out, code);
    continue;
  }
  const js = stripTypeScriptTypes(code, { mode: 'strip' }).replace(RELATIVE_TS, (_m, q: string, path: string) => `${q}${path}.js${q}`);
  writeFileSync(out, js);
}
writeFileSync(join(tmp, '.stamp'), stamp);
// lib/ is ESM like src/ (package.json says so at the root; repeated so lib/ stands alone).
rmSync(lib, { recursive: true, force: true });
renameSync(tmp, lib);
process.stdout.write(`easel: compiled ${files.length} files to lib/ in ${Date.now() - started} ms\n`);
