/**
 * The images a submission carries (edits, variations, refinements, retries): each checked before any
 * work (a decodable PNG, JPEG or WebP, each side between 16 px and `uploads.maxDimension`; a mask that
 * is a PNG with an alpha channel and the size of the first image), then stored under the job's id
 * (`inputs/<jobId>/…`) so any worker can read them. Every failure is a 400 whose `param` names the
 * field: `image`, `image[i]` (the i-th of repeated `image[]` parts), or `mask`.
 */
import { basename } from 'node:path';
import { sharp } from '../images/sharp.ts';
import { DomainError, invalidParam } from '../core/errors.ts';
import type { OutputFormat } from '../core/image-request.ts';
import { MEDIA_TYPES } from '../core/image-request.ts';
import { probeImage } from '../images/encode.ts';
import type { ImageStorage } from '../storage/image-storage.ts';

export interface UploadLimits {
  /** Largest single image or mask, in bytes. */
  maxFileBytes: number;
  /** Most input images one request may carry. */
  maxImages: number;
  /** Largest side of an uploaded image, in pixels. */
  maxDimension: number;
}

/** Smallest side accepted (the same floor as `size`). */
export const MIN_DIMENSION = 16;

export interface UploadedFile {
  /** What errors name: `image`, `image[1]`, `mask`. */
  param: string;
  filename: string;
  data: Buffer;
}

export interface CheckedImage {
  file: UploadedFile;
  format: OutputFormat;
  mediaType: string;
  width: number;
  height: number;
}

const FORMATS: ReadonlySet<string> = new Set(['png', 'jpeg', 'webp']);
const describe = (p: string) => `'${p}'`;

/** Checks one uploaded image: readable PNG/JPEG/WebP of sane dimensions. */
export async function checkImage(file: UploadedFile, limits: UploadLimits): Promise<CheckedImage> {
  const p = file.param;
  const info = await probeImage(file.data);
  if (!info) {
    throw invalidParam(p, `${describe(p)} is not an image we can read (${file.data.length} bytes). Upload a PNG, JPEG or WebP file.`, 'invalid_image');
  }
  if (!FORMATS.has(info.format)) {
    throw invalidParam(p, `${describe(p)} is a ${info.format.toUpperCase()} image; upload a PNG, JPEG or WebP file.`, 'invalid_image');
  }
  const { width, height } = info;
  if (width < MIN_DIMENSION || height < MIN_DIMENSION || width > limits.maxDimension || height > limits.maxDimension) {
    throw invalidParam(
      p,
      `${describe(p)} is ${width}x${height}; each side must be between ${MIN_DIMENSION} and ${limits.maxDimension} pixels.`,
      'invalid_image_dimensions',
    );
  }
  // The header alone can be fine on a truncated or corrupt file: decode it all (shrunk, so cheaply).
  try {
    await sharp()(file.data, { failOn: 'error' }).resize(8, 8, { fit: 'fill' }).raw().toBuffer();
  } catch (err) {
    const why = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw invalidParam(p, `${describe(p)} could not be decoded (truncated or corrupt ${info.format.toUpperCase()}): ${why}`, 'invalid_image');
  }
  const format = info.format as OutputFormat;
  return { file, format, mediaType: MEDIA_TYPES[format], width, height };
}

/**
 * Checks every upload (in order, so the first bad field is the one reported) and the mask against
 * the first image. OpenAI's rule: the mask is a PNG whose fully transparent pixels mark the area to
 * edit, the same size as the first image.
 */
export async function checkUploads(
  images: UploadedFile[],
  mask: UploadedFile | undefined,
  limits: UploadLimits,
): Promise<{ images: CheckedImage[]; mask?: CheckedImage }> {
  const files = mask ? [...images, mask] : images;
  const settled = await Promise.allSettled(files.map((f) => checkImage(f, limits)));
  const checked: CheckedImage[] = [];
  for (const s of settled) {
    if (s.status === 'rejected') throw s.reason;
    checked.push(s.value);
  }
  if (!mask) return { images: checked };

  const m = checked.pop()!;
  const first = checked[0]!;
  if (m.format !== 'png') {
    throw invalidParam('mask', `'mask' must be a PNG with an alpha channel (fully transparent pixels mark the area to edit); got ${m.format.toUpperCase()}.`, 'invalid_image');
  }
  const meta = await sharp()(mask.data).metadata();
  if (!meta.hasAlpha) {
    throw invalidParam('mask', "'mask' has no alpha channel; it must be a PNG whose fully transparent pixels mark the area to edit.", 'invalid_image');
  }
  if (m.width !== first.width || m.height !== first.height) {
    throw invalidParam(
      'mask',
      `'mask' is ${m.width}x${m.height} but ${describe(first.file.param)} is ${first.width}x${first.height}; the mask must be the same size as the first image.`,
      'invalid_image_dimensions',
    );
  }
  return { images: checked, mask: m };
}

export const inputKey = (jobId: string, name: string): string => `inputs/${jobId}/${name}`;

/** What a submission brings as input images: new uploads, or images already stored (a retry, a draft to refine). */
export type Inputs =
  | { kind: 'uploads'; images: UploadedFile[]; mask?: UploadedFile }
  | { kind: 'stored'; images: string[]; mask?: string };

export function inputCounts(inputs: Inputs | undefined): { images: number; mask: boolean } {
  return { images: inputs?.images.length ?? 0, mask: inputs?.mask !== undefined };
}

/**
 * Checks and stores the inputs under the job's id; returns the request fields naming them. Stored
 * inputs are copied, so two jobs never share (or delete) each other's objects.
 */
export async function storeInputs(storage: ImageStorage, jobId: string, inputs: Inputs, limits: UploadLimits): Promise<{ inputImages: string[]; mask?: string; stored: string[] }> {
  const stored: string[] = [];
  const put = async (key: string, data: Uint8Array, mediaType: string) => {
    try {
      await storage.put(key, data, mediaType);
    } catch (err) {
      throw new DomainError('unavailable', 'Image storage is unreachable; the input images could not be saved and nothing was queued. Retry shortly.', { code: 'storage_unavailable', cause: err });
    }
    stored.push(key);
    return key;
  };
  if (inputs.kind === 'uploads') {
    const checked = await checkUploads(inputs.images, inputs.mask, limits);
    const inputImages = await Promise.all(checked.images.map((img, i) => put(inputKey(jobId, `${i}.${img.format}`), img.file.data, img.mediaType)));
    const mask = checked.mask ? await put(inputKey(jobId, 'mask.png'), checked.mask.file.data, checked.mask.mediaType) : undefined;
    return { inputImages, ...(mask ? { mask } : {}), stored };
  }
  const copy = async (key: string) => {
    const obj = await storage.get(key);
    if (!obj) throw new DomainError('gone', 'The input images of the earlier job are no longer stored; submit the images again.', { code: 'inputs_gone' });
    return put(inputKey(jobId, basename(key)), obj.data, obj.contentType);
  };
  const inputImages = await Promise.all(inputs.images.map(copy));
  const mask = inputs.mask ? await copy(inputs.mask) : undefined;
  return { inputImages, ...(mask ? { mask } : {}), stored };
}
