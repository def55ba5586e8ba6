/**
 * Builds the web console (console/ → console/dist) with Vite. Runs from `npm ci`/`npm install`
 * (the `prepare` script) and before `npm start`, and skips the build when console/dist was made from
 * the same sources (a stamp of their hash), so a start costs nothing when nothing changed.
 *
 *   node scripts/build-console.ts            # build if the sources changed
 *   node scripts/build-console.ts --force    # build anyway
 *
 * Where Vite is not installed (an install with --omit=dev), it says so and exits 0: easel then
 * serves a page at `/` that says how to build the console; the API is unaffected.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../console/', import.meta.url));
const dist = join(root, 'dist');
const stampFile = join(dist, '.build-stamp');
const force = process.argv.includes('--force');

function sourceHash(): string {
  const h = createHash('sha256');
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      if (path === dist || name === 'node_modules') continue;
      if (statSync(path).isDirectory()) walk(path);
      else h.update(relative(root, path)).update('\0').update(readFileSync(path)).update('\0');
    }
  };
  walk(root);
  // A different Vite or Preact may build differently.
  for (const pkg of ['vite', 'preact']) {
    const file = fileURLToPath(new URL(`../node_modules/${pkg}/package.json`, import.meta.url));
    if (existsSync(file)) h.update(`${pkg}@${JSON.parse(readFileSync(file, 'utf8')).version}`);
  }
  return h.digest('hex');
}

const hash = sourceHash();
if (!force && existsSync(join(dist, 'index.html')) && existsSync(stampFile) && readFileSync(stampFile, 'utf8').trim() === hash) {
  process.exit(0);
}

let vite: typeof import('vite');
try {
  vite = await import('vite');
} catch {
  console.warn('easel: the web console is not built (Vite is not installed; install dev dependencies and run `npm run build:console`).');
  process.exit(0);
}
const started = Date.now();
await vite.build({ configFile: join(root, 'vite.config.ts'), logLevel: 'warn' });
writeFileSync(stampFile, hash + '\n');
console.log(`easel: web console built into console/dist in ${((Date.now() - started) / 1000).toFixed(1)} s`);
