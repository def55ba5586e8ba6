/**
 * Uploads for /v1/images/edits and /v1/images/variations: read the multipart body (files and text
 * fields) within the configured limits, then check every file before any work is done: a decodable
 * PNG, JPEG or WebP, each side between 16 px and `uploads.maxDimension`, and a mask that is a PNG
 * with an alpha channel and the same size as the first image. Every failure is a 400 whose `param`
 * names the field: `image` (one file sent as `image`), `image[i]` (the i-th file, 0-based, when they
 * came as repeated `image[]` parts, as the openai SDK sends arrays), or `mask`.
 *
 * A file over `uploads.maxFileBytes` is a 400 with code `file_too_large` naming the field, not a 413:
 * like every other upload problem it names the part at fault, and the SDK does not retry it.
 */
import type { FastifyRequest } from 'fastify';
import type { Multipart } from '@fastify/multipart';
import sharp from 'sharp';
import { ApiError, invalidParam } from '../core/errors.ts';
import type { OutputFormat } from '../core/image-request.ts';
import { MEDIA_TYPES } from '../core/image-request.ts';
import { probeImage } from '../images/encode.ts';

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
/** Largest text field value; a prompt of 32,000 characters fits with room to spare. */
export const MAX_FIELD_BYTES = 1024 * 1024;
const MAX_TEXT_FIELDS = 64;

export interface UploadedFile {
  /** What errors name: `image`, `image[1]`, `mask`. */
  param: string;
  filename: string;
  data: Buffer;
}

export interface MultipartForm {
  /** Text fields in arrival order of their first value; repeated fields keep every value. */
  fields: Map<string, unknown[]>;
  images: UploadedFile[];
  mask?: UploadedFile;
}

/** Options for the @fastify/multipart registration that feeds readUploadForm. */
export function multipartOptions(limits: UploadLimits) {
  return {
    // readUploadForm checks `truncated` itself so it can name the field and keep reading.
    throwFileSizeLimit: false,
    limits: {
      fileSize: limits.maxFileBytes,
      // The mask, plus one more so "too many images" is ours to say with a clear message.
      files: limits.maxImages + 2,
      fieldSize: MAX_FIELD_BYTES,
      fields: MAX_TEXT_FIELDS,
      parts: limits.maxImages + 2 + MAX_TEXT_FIELDS,
    },
  };
}

const tooManyImages = (max: number) =>
  invalidParam('image', `Too many images: this server takes at most ${max} input images per request.`, 'too_many_images');

/**
 * Reads the whole multipart body. Files stay in memory (each at most `maxFileBytes`). The body is
 * always read to its end, even after a problem, so the client gets the 400 rather than a reset
 * connection; the first problem found is thrown.
 */
export async function readUploadForm(req: FastifyRequest, limits: UploadLimits, opts: { allowMask: boolean }): Promise<MultipartForm> {
  const form: MultipartForm = { fields: new Map(), images: [] };
  let problem: ApiError | undefined;
  const fail = (err: ApiError) => {
    problem ??= err;
  };
  let imageParts = 0;

  try {
    for await (const part of req.parts() as AsyncIterableIterator<Multipart>) {
      const name = part.fieldname;
      if (part.type === 'field') {
        if (part.fieldnameTruncated) fail(new ApiError(400, 'A form field name is too long.', { code: 'invalid_request' }));
        else if (part.valueTruncated) fail(invalidParam(name, `'${name}' is longer than ${MAX_FIELD_BYTES} bytes.`));
        else if (name === 'image' || name === 'image[]' || (name === 'mask' && opts.allowMask)) {
          // A part without a filename is a text field to busboy (e.g. curl's `-F image=<file`).
          fail(invalidParam(name === 'mask' ? 'mask' : 'image', `'${name}' must be uploaded as a file (a form part with a filename), not as text.`, 'invalid_image'));
        }
        const values = form.fields.get(name);
        if (values) values.push(part.value);
        else form.fields.set(name, [part.value]);
        continue;
      }

      let param: string;
      if (name === 'image' || name === 'image[]') {
        const index = imageParts++;
        param = name === 'image' && index === 0 ? 'image' : `image[${index}]`;
        if (index >= limits.maxImages) fail(tooManyImages(limits.maxImages));
      } else if (name === 'mask' && opts.allowMask) {
        param = 'mask';
        if (form.mask) fail(invalidParam('mask', 'Only one mask may be sent.'));
      } else {
        fail(invalidParam(name, `Unrecognized file field: '${name}'. Send images as 'image' (or repeated 'image[]')${opts.allowMask ? " and the mask as 'mask'" : ''}.`, 'unknown_parameter'));
        param = name;
      }

      if (problem) {
        // Nothing more will be used: let the rest of the part flow past without keeping it.
        part.file.resume();
        continue;
      }
      const data = await part.toBuffer();
      if (part.file.truncated) {
        fail(invalidParam(param, `'${param}' is larger than this server accepts (${limits.maxFileBytes} bytes per file).`, 'file_too_large'));
        continue;
      }
      const file: UploadedFile = { param, filename: part.filename, data };
      if (param === 'mask') form.mask = file;
      else form.images.push(file);
    }
  } catch (err) {
    throw problem ?? multipartError(err, limits);
  }
  if (problem) throw problem;
  return form;
}

/** Parser and limit errors from @fastify/multipart (or busboy) as OpenAI-shaped errors. */
function multipartError(err: unknown, limits: UploadLimits): ApiError {
  if (err instanceof ApiError) return err;
  const code = (err as { code?: string }).code;
  switch (code) {
    case 'FST_FILES_LIMIT':
      return tooManyImages(limits.maxImages);
    case 'FST_FIELDS_LIMIT':
    case 'FST_PARTS_LIMIT':
      return new ApiError(400, `Too many form fields: at most ${MAX_TEXT_FIELDS} text fields are accepted.`, { code: 'invalid_request' });
    case 'FST_PROTO_VIOLATION':
      return new ApiError(400, 'A form field has a reserved name.', { code: 'invalid_request' });
    case 'FST_INVALID_JSON_FIELD_ERROR':
      return new ApiError(400, 'A form field sent as application/json is not valid JSON.', { code: 'invalid_request' });
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new ApiError(415, 'This endpoint takes multipart/form-data.', { code: 'unsupported_media_type' });
  }
  const why = err instanceof Error ? err.message : String(err);
  return new ApiError(400, `We could not parse the multipart/form-data body of your request: ${why}`, { code: 'invalid_multipart' });
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
    await sharp(file.data, { failOn: 'error' }).resize(8, 8, { fit: 'fill' }).raw().toBuffer();
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
  const meta = await sharp(mask.data).metadata();
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
