/**
 * Image encoding helpers on sharp: bring whatever a backend returned (or a client uploaded) to the
 * format the request asked for, and cheaply inspect images.
 */
import sharp from 'sharp';
import type { Metadata } from 'sharp';
import { MEDIA_TYPES } from '../core/image-request.ts';
import type { ImageRequest, OutputFormat } from '../core/image-request.ts';

// Every image is seen once; sharp's operation cache would only hold memory.
sharp.cache(false);

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
    const meta = await sharp(input).metadata();
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

/**
 * Returns the image encoded as `want.format`. When the input already is that format and nothing
 * else needs changing, the input bytes come back untouched (only the header is parsed).
 * Throws ImageDecodeError for bytes that are not a readable image.
 */
export async function normalizeImage(data: Uint8Array, want: NormalizeOptions): Promise<NormalizedImage> {
  const input = asBuffer(data);
  const q = quality(want.compression);
  const meta = await readMetadata(input);
  const sameFormat = meta.format === want.format;
  const needsQualityChange = q !== undefined && want.format !== 'png';
  const needsFlatten = Boolean(meta.hasAlpha) && (want.background === 'opaque' || want.format === 'jpeg');
  const needsOrient = (meta.orientation ?? 1) !== 1;
  if (sameFormat && !needsQualityChange && !needsFlatten && !needsOrient) {
    return { data: input, mediaType: MEDIA_TYPES[want.format], ...displaySize(meta), format: want.format };
  }

  try {
    let pipeline = sharp(input).autoOrient();
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
