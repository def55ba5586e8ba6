/**
 * Uploads for /v1/images/edits and /v1/images/variations: read the multipart body (files and text
 * fields) within the configured limits. The files are checked by the submission (src/submissions/
 * inputs.ts) before any work is done. Problems are 400s whose `param` names the field: `image` (one
 * file sent as `image`), `image[i]` (the i-th file, 0-based, when they came as repeated `image[]`
 * parts, as the openai SDK sends arrays), or `mask`.
 *
 * A file over `uploads.maxFileBytes` is a 400 with code `file_too_large` naming the field, not a 413:
 * like every other upload problem it names the part at fault, and the SDK does not retry it.
 */
import type { FastifyRequest } from 'fastify';
import type { Multipart } from '@fastify/multipart';
import { DomainError, invalidParam } from '../core/errors.ts';
import type { UploadLimits, UploadedFile } from '../submissions/inputs.ts';

export type { UploadLimits, UploadedFile } from '../submissions/inputs.ts';

/** Largest text field value; a prompt of 32,000 characters fits with room to spare. */
export const MAX_FIELD_BYTES = 1024 * 1024;
const MAX_TEXT_FIELDS = 64;

export interface MultipartForm {
  /** Text fields in arrival order of their first value; repeated fields keep every value. */
  fields: Map<string, unknown[]>;
  /** Every text field in arrival order (the openai SDK's `loras[][name]`, `loras[][weight]`, … are grouped by it). */
  sequence: Array<[string, unknown]>;
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
  const form: MultipartForm = { fields: new Map(), sequence: [], images: [] };
  let problem: DomainError | undefined;
  const fail = (err: DomainError) => {
    problem ??= err;
  };
  let imageParts = 0;

  try {
    for await (const part of req.parts() as AsyncIterableIterator<Multipart>) {
      const name = part.fieldname;
      if (part.type === 'field') {
        if (part.fieldnameTruncated) fail(new DomainError('invalid', 'A form field name is too long.', { code: 'invalid_request' }));
        else if (part.valueTruncated) fail(invalidParam(name, `'${name}' is longer than ${MAX_FIELD_BYTES} bytes.`));
        else if (name === 'image' || name === 'image[]' || (name === 'mask' && opts.allowMask)) {
          // A part without a filename is a text field to busboy (e.g. curl's `-F image=<file`).
          fail(invalidParam(name === 'mask' ? 'mask' : 'image', `'${name}' must be uploaded as a file (a form part with a filename), not as text.`, 'invalid_image'));
        }
        const values = form.fields.get(name);
        if (values) values.push(part.value);
        else form.fields.set(name, [part.value]);
        form.sequence.push([name, part.value]);
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
function multipartError(err: unknown, limits: UploadLimits): DomainError {
  if (err instanceof DomainError) return err;
  const code = (err as { code?: string }).code;
  switch (code) {
    case 'FST_FILES_LIMIT':
      return tooManyImages(limits.maxImages);
    case 'FST_FIELDS_LIMIT':
    case 'FST_PARTS_LIMIT':
      return new DomainError('invalid', `Too many form fields: at most ${MAX_TEXT_FIELDS} text fields are accepted.`, { code: 'invalid_request' });
    case 'FST_PROTO_VIOLATION':
      return new DomainError('invalid', 'A form field has a reserved name.', { code: 'invalid_request' });
    case 'FST_INVALID_JSON_FIELD_ERROR':
      return new DomainError('invalid', 'A form field sent as application/json is not valid JSON.', { code: 'invalid_request' });
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return new DomainError('unsupported_media', 'This endpoint takes multipart/form-data.', { code: 'unsupported_media_type' });
  }
  const why = err instanceof Error ? err.message : String(err);
  return new DomainError('invalid', `We could not parse the multipart/form-data body of your request: ${why}`, { code: 'invalid_multipart' });
}

