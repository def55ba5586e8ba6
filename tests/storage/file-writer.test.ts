/**
 * LocalStorage's writer threads (src/storage/file-writer.ts): files land whole under their final
 * name, a failed write is reported to its caller alone, and no temp files are left behind.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { FileWriter } from '../../src/storage/file-writer.ts';

describe('file writer threads', () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-writer-'));
  const writer = new FileWriter(2);
  after(async () => {
    await writer.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('many concurrent writes each land whole, in folders created on the way', async () => {
    const files = Array.from({ length: 40 }, (_, i) => ({ folder: join(dir, 'a', String(i % 7)), name: `${i}.bin`, data: Buffer.alloc(10_000 + i, i) }));
    await Promise.all(files.map((f) => writer.write(f.folder, join(f.folder, `.${f.name}.tmp`), join(f.folder, f.name), f.data)));
    for (const f of files) assert.ok(readFileSync(join(f.folder, f.name)).equals(f.data), f.name);
    for (let i = 0; i < 7; i++) assert.ok(readdirSync(join(dir, 'a', String(i))).every((n) => !n.endsWith('.tmp')), 'no temp files left');
  });

  test('a write that cannot happen fails alone, and the writer keeps working', async () => {
    writeFileSync(join(dir, 'blocker'), 'a file where a folder should be');
    const bad = join(dir, 'blocker', 'sub');
    const good = join(dir, 'ok');
    const [b, g] = await Promise.allSettled([writer.write(bad, join(bad, '.x.tmp'), join(bad, 'x'), Buffer.from('x')), writer.write(good, join(good, '.y.tmp'), join(good, 'y'), Buffer.from('y'))]);
    assert.equal(b.status, 'rejected');
    assert.match(String((b as PromiseRejectedResult).reason.code), /ENOTDIR|EEXIST/);
    assert.equal(g.status, 'fulfilled');
    assert.equal(readFileSync(join(good, 'y'), 'utf8'), 'y');
    await writer.write(good, join(good, '.z.tmp'), join(good, 'z'), Buffer.from('z'));
    assert.equal(readFileSync(join(good, 'z'), 'utf8'), 'z');
  });

  test('a closed writer refuses new writes', async () => {
    const w = new FileWriter(1);
    await w.write(dir, join(dir, '.c.tmp'), join(dir, 'c'), Buffer.from('c'));
    await w.close();
    await assert.rejects(w.write(dir, join(dir, '.d.tmp'), join(dir, 'd'), Buffer.from('d')), /closed/);
  });
});
