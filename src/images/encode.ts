/**
 * Image encoding helpers on sharp: bring whatever a backend returned (or a client uploaded) to the
 * format the request asked for, and cheaply inspect images.
 */
import { crc32 } from 'node:zlib';
import { sharp } from './sharp.ts';
import type { Metadata } from 'sharp';
import { MEDIA_TYPES } from '../core/image-request.ts';
import type { ImageRequest, OutputFormat } from '../core/image-request.ts';


export interface NormalizeOptions {
  format: OutputFormat;
  /** 0–100, used as the quality of jpeg/webp output (0 is treated as 1). Ignored for png. */
  compression?: number;
  /** `opaque` flattens any alpha onto white; jpeg output is always flattened onto white. */
  background?: ImageRequest['background'];
}

export interface NormalizedImage {
  data: Buffer;
  mediaType: string;
  width: number;
  height: number;
  format: OutputFormat;
}

export interface ImageInfo {
  /** sharp's name for the input format: png, jpeg, webp, gif, tiff, avif, heif, svg, ... */
  format: string;
  width: number;
  height: number;
}

/** The bytes are not an image sharp can read. */
export class ImageDecodeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ImageDecodeError';
  }
}

const WHITE = { r: 255, g: 255, b: 255 };

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

async function readMetadata(input: Buffer): Promise<Metadata> {
  if (input.byteLength === 0) throw new ImageDecodeError('Image data is empty');
  try {
    const meta = await sharp()(input).metadata();
    if (!meta.format || !meta.width || !meta.height) throw new Error('no format or dimensions');
    return meta;
  } catch (err) {
    if (err instanceof ImageDecodeError) throw err;
    const why = err instanceof Error ? err.message : String(err);
    throw new ImageDecodeError(`Image data could not be decoded (${input.byteLength} bytes): ${why}`, { cause: err });
  }
}

function displaySize(meta: Metadata): { width: number; height: number } {
  // Dimensions as shown, i.e. after EXIF orientation (conversion applies it too).
  return { width: meta.autoOrient?.width ?? meta.width, height: meta.autoOrient?.height ?? meta.height };
}

function quality(compression: number | undefined): number | undefined {
  if (compression === undefined) return undefined;
  if (!Number.isFinite(compression) || compression < 0 || compression > 100) {
    throw new RangeError(`compression must be between 0 and 100, got ${compression}`);
  }
  return Math.max(1, Math.round(compression));
}

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Bit depths each PNG colour type allows. */
const PNG_BIT_DEPTHS: Record<number, number[]> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };

interface PngHeader {
  width: number;
  height: number;
  /** Colour type with alpha, or a tRNS chunk (what sharp reports as hasAlpha). */
  hasAlpha: boolean;
  /** An eXIf chunk, which may carry an orientation. */
  exif: boolean;
}

/**
 * What normalizeImage needs to know of a PNG, read from its chunk list without sharp: a well-formed
 * signature, IHDR (checked against its CRC) and chunk chain up to IEND. Undefined for anything else,
 * which then goes to sharp as before. Walking the chunk headers is microseconds; sharp's metadata()
 * costs a round trip through the thread pool and a stream object per image.
 */
function readPngHeader(input: Buffer): PngHeader | undefined {
  if (input.length < 8 + 25 + 12 || !input.subarray(0, 8).equals(PNG_SIGNATURE)) return undefined;
  if (input.readUInt32BE(8) !== 13 || input.toString('latin1', 12, 16) !== 'IHDR') return undefined;
  if ((crc32(input.subarray(12, 29)) >>> 0) !== input.readUInt32BE(29)) return undefined;
  const width = input.readUInt32BE(16);
  const height = input.readUInt32BE(20);
  const bitDepth = input[24]!;
  const colourType = input[25]!;
  if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) return undefined;
  // Only what the PNG spec allows (compression and filter method 0, interlace 0 or 1).
  if (!PNG_BIT_DEPTHS[colourType]?.includes(bitDepth) || input[26] !== 0 || input[27] !== 0 || input[28]! > 1) return undefined;
  let hasAlpha = colourType === 4 || colourType === 6;
  let exif = false;
  for (let off = 8; off + 12 <= input.length; ) {
    const length = input.readUInt32BE(off);
    const type = input.toString('latin1', off + 4, off + 8);
    if (type === 'tRNS') hasAlpha = true;
    else if (type === 'eXIf') exif = true;
    else if (type === 'IEND') return { width, height, hasAlpha, exif };
    off += 12 + length;
  }
  return undefined; // truncated or not a chunk chain: sharp decides
}

/**
 * Returns the image encoded as `want.format`. When the input already is that format and nothing
 * else needs changing, the input bytes come back untouched (only the header is parsed).
 * Throws ImageDecodeError for bytes that are not a readable image.
 */
export async function normalizeImage(data: Uint8Array, want: NormalizeOptions): Promise<NormalizedImage> {
  const input = asBuffer(data);
  const q = quality(want.compression);
  if (want.format === 'png') {
    // The common case (a PNG backend, PNG wanted) passes through without sharp when the header says
    // nothing needs doing: no EXIF orientation to apply, no alpha to flatten.
    const png = readPngHeader(input);
    if (png && !png.exif && !(png.hasAlpha && want.background === 'opaque')) {
      return { data: input, mediaType: MEDIA_TYPES.png, width: png.width, height: png.height, format: 'png' };
    }
  }
  const meta = await readMetadata(input);
  const sameFormat = meta.format === want.format;
  const needsQualityChange = q !== undefined && want.format !== 'png';
  const needsFlatten = Boolean(meta.hasAlpha) && (want.background === 'opaque' || want.format === 'jpeg');
  const needsOrient = (meta.orientation ?? 1) !== 1;
  if (sameFormat && !needsQualityChange && !needsFlatten && !needsOrient) {
    return { data: input, mediaType: MEDIA_TYPES[want.format], ...displaySize(meta), format: want.format };
  }

  try {
    let pipeline = sharp()(input).autoOrient();
    if (needsFlatten) pipeline = pipeline.flatten({ background: WHITE });
    switch (want.format) {
      case 'png':
        pipeline = pipeline.png();
        break;
      case 'jpeg':
        pipeline = pipeline.jpeg(q !== undefined ? { quality: q } : {});
        break;
      case 'webp':
        pipeline = pipeline.webp(q !== undefined ? { quality: q } : {});
        break;
      default: {
        const never: never = want.format;
        throw new Error(`Unsupported output format ${String(never)}`);
      }
    }
    const { data: out, info } = await pipeline.toBuffer({ resolveWithObject: true });
    return { data: out, mediaType: MEDIA_TYPES[want.format], width: info.width, height: info.height, format: want.format };
  } catch (err) {
    if (err instanceof ImageDecodeError || err instanceof RangeError) throw err;
    const why = err instanceof Error ? err.message : String(err);
    throw new ImageDecodeError(`Image (${meta.format}) could not be converted to ${want.format}: ${why}`, { cause: err });
  }
}

/**
 * Format and display dimensions from the image header, or undefined when the bytes are not an
 * image sharp recognises. Header-only: a truncated file with a valid header still probes fine.
 */
export async function probeImage(data: Uint8Array): Promise<ImageInfo | undefined> {
  try {
    const meta = await readMetadata(asBuffer(data));
    return { format: meta.format, ...displaySize(meta) };
  } catch (err) {
    if (err instanceof ImageDecodeError) return undefined;
    throw err;
  }
}
