import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { ImageDecodeError, normalizeImage, probeImage } from '../../src/images/encode.ts';
import { makePng } from '../support/png.ts';

async function pixel(data: Buffer, x = 0, y = 0): Promise<number[]> {
  const { data: raw, info } = await sharp(data).raw().toBuffer({ resolveWithObject: true });
  const i = (y * info.width + x) * info.channels;
  return [...raw.subarray(i, i + info.channels)];
}

async function transparentPng(width: number, height: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
    .png()
    .toBuffer();
}

describe('normalizeImage', () => {
  it('returns png input untouched when png is wanted', async () => {
    const png = await makePng(32, 16, [10, 200, 30]);
    const out = await normalizeImage(png, { format: 'png' });
    assert.equal(out.data, png, 'same Buffer, no copy');
    assert.equal(out.mediaType, 'image/png');
    assert.equal(out.format, 'png');
    assert.equal(out.width, 32);
    assert.equal(out.height, 16);
  });

  it('passes through a plain Uint8Array with identical bytes; compression is ignored for png', async () => {
    const png = await makePng(5, 7);
    const view = new Uint8Array(png);
    const out = await normalizeImage(view, { format: 'png', compression: 50 });
    assert.deepEqual(new Uint8Array(out.data), view);
    assert.equal(out.width, 5);
    assert.equal(out.height, 7);
  });

  it('converts png to jpeg', async () => {
    const png = await makePng(40, 30, [255, 0, 0]);
    const out = await normalizeImage(png, { format: 'jpeg' });
    assert.equal(out.mediaType, 'image/jpeg');
    assert.equal(out.format, 'jpeg');
    assert.equal(out.width, 40);
    assert.equal(out.height, 30);
    const meta = await sharp(out.data).metadata();
    assert.equal(meta.format, 'jpeg');
    assert.deepEqual([meta.width, meta.height], [40, 30]);
    const [r, g, b] = await pixel(out.data, 20, 15);
    assert.ok(r > 240 && g < 15 && b < 15, `red stays red: ${[r, g, b]}`);
  });

  it('converts png to webp', async () => {
    const png = await makePng(24, 48);
    const out = await normalizeImage(png, { format: 'webp' });
    assert.equal(out.mediaType, 'image/webp');
    assert.equal(out.format, 'webp');
    assert.deepEqual([out.width, out.height], [24, 48]);
    assert.equal((await sharp(out.data).metadata()).format, 'webp');
  });

  it('uses compression as jpeg/webp quality', async () => {
    // Noise compresses badly, so quality shows in the size.
    const noise = Buffer.alloc(64 * 64 * 3);
    for (let i = 0; i < noise.length; i++) noise[i] = (i * 7919) % 251;
    const png = await sharp(noise, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    for (const format of ['jpeg', 'webp'] as const) {
      const low = await normalizeImage(png, { format, compression: 10 });
      const high = await normalizeImage(png, { format, compression: 95 });
      assert.ok(low.data.length < high.data.length, `${format}: q10 ${low.data.length} < q95 ${high.data.length}`);
      const zero = await normalizeImage(png, { format, compression: 0 });
      assert.equal(zero.format, format);
    }
  });

  it('re-encodes same-format jpeg only when a compression is asked for', async () => {
    const jpeg = await sharp(await makePng(16, 16)).jpeg({ quality: 90 }).toBuffer();
    const same = await normalizeImage(jpeg, { format: 'jpeg' });
    assert.equal(same.data, jpeg);
    const smaller = await normalizeImage(jpeg, { format: 'jpeg', compression: 20 });
    assert.notDeepEqual(smaller.data, jpeg);
    assert.equal(smaller.mediaType, 'image/jpeg');
  });

  it('converts jpeg back to png', async () => {
    const jpeg = await sharp(await makePng(9, 11)).jpeg().toBuffer();
    const out = await normalizeImage(jpeg, { format: 'png' });
    assert.equal(out.mediaType, 'image/png');
    assert.deepEqual([out.width, out.height], [9, 11]);
    assert.equal((await sharp(out.data).metadata()).format, 'png');
  });

  it('flattens alpha onto white for jpeg and for an opaque background', async () => {
    const clear = await transparentPng(4, 4);
    const jpeg = await normalizeImage(clear, { format: 'jpeg' });
    const [r, g, b] = await pixel(jpeg.data);
    assert.ok(r > 245 && g > 245 && b > 245, `white, not black: ${[r, g, b]}`);

    const opaque = await normalizeImage(clear, { format: 'png', background: 'opaque' });
    assert.notEqual(opaque.data, clear);
    assert.equal((await sharp(opaque.data).metadata()).hasAlpha, false);

    const kept = await normalizeImage(clear, { format: 'png', background: 'transparent' });
    assert.equal(kept.data, clear, 'transparent png passes through');
    const webp = await normalizeImage(clear, { format: 'webp', background: 'auto' });
    assert.equal((await sharp(webp.data).metadata()).hasAlpha, true);
  });

  it('applies EXIF orientation when converting', async () => {
    const rotated = await sharp(await makePng(20, 10)).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    const out = await normalizeImage(rotated, { format: 'jpeg' });
    assert.deepEqual([out.width, out.height], [10, 20]);
    assert.deepEqual([(await sharp(out.data).metadata()).width, (await sharp(out.data).metadata()).height], [10, 20]);
  });

  it('throws a clear error for bytes that are not an image', async () => {
    await assert.rejects(normalizeImage(Buffer.from('definitely not an image'), { format: 'png' }), (err: unknown) => {
      assert.ok(err instanceof ImageDecodeError);
      assert.match(err.message, /could not be decoded/);
      return true;
    });
    await assert.rejects(normalizeImage(new Uint8Array(0), { format: 'jpeg' }), /empty/);
    await assert.rejects(normalizeImage(Buffer.from([0x89, 0x50, 0x4e, 0x47]), { format: 'webp' }), ImageDecodeError);
  });

  it('refuses an out-of-range compression', async () => {
    const png = await makePng(2, 2);
    await assert.rejects(normalizeImage(png, { format: 'jpeg', compression: 101 }), RangeError);
    await assert.rejects(normalizeImage(png, { format: 'webp', compression: -1 }), RangeError);
  });
});

describe('probeImage', () => {
  it('reads format and dimensions', async () => {
    const png = await makePng(13, 17);
    assert.deepEqual(await probeImage(png), { format: 'png', width: 13, height: 17 });
    const webp = await sharp(png).webp().toBuffer();
    assert.deepEqual(await probeImage(webp), { format: 'webp', width: 13, height: 17 });
    const jpeg = await sharp(png).jpeg().toBuffer();
    assert.deepEqual(await probeImage(new Uint8Array(jpeg)), { format: 'jpeg', width: 13, height: 17 });
  });

  it('returns undefined for undecodable bytes', async () => {
    assert.equal(await probeImage(Buffer.from('hello world')), undefined);
    assert.equal(await probeImage(new Uint8Array(0)), undefined);
    assert.equal(await probeImage(Buffer.alloc(1024, 0)), undefined);
  });
});

describe('makePng (test helper)', () => {
  it('makes an RGB png of the requested size and colour', async () => {
    const png = await makePng(3, 2, [1, 2, 3]);
    const meta = await sharp(png).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ['png', 3, 2, 3]);
    assert.deepEqual(await pixel(png, 2, 1), [1, 2, 3]);
  });
});
