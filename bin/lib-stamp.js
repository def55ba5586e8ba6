// What lib/ was compiled from (scripts/build-lib.ts): every file under src/ with its size and
// modification time. bin/easel.js runs lib/ only while this still matches src/.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Files under `dir`, relative, sorted (TypeScript sources and whatever sits beside them). */
export function sourceFiles(dir, prefix = '') {
  const out = [];
  for (const entry of readdirSync(join(dir, prefix), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...sourceFiles(dir, rel));
    else if (entry.isFile() && entry.name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

export function libStamp(dir) {
  return sourceFiles(dir)
    .map((f) => {
      const s = statSync(join(dir, f));
      return `${f} ${s.size} ${Math.floor(s.mtimeMs)}`;
    })
    .join('\n');
}
