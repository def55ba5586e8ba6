/**
 * GET /files/<key>?expires&signature — images in local storage, behind signed expiring URLs (the
 * local twin of S3 presigned URLs). The bytes at a key never change, so they cache as immutable, and
 * the key names them: the ETag is the key's digest with the size. Sent from disk as a stream (no
 * copy of the image in memory), with single byte ranges (`Range`, `If-Range`) and `If-None-Match`.
 */
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { DomainError } from '../../core/errors.ts';
import type { ApiDeps } from '../server.ts';
import { InvalidStorageKeyError } from '../../storage/local-storage.ts';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses } from '../schemas/common.ts';

const binary = z.custom<Uint8Array>(() => true).meta({ type: 'string', format: 'binary' });
const imageContent = { 'image/png': { schema: binary }, 'image/jpeg': { schema: binary }, 'image/webp': { schema: binary } };

/** `Range: bytes=…` against a file of `size` bytes: one [start, end] (inclusive), 'unsatisfiable', or undefined to send it whole. */
export function byteRange(header: string | undefined, size: number): [number, number] | 'unsatisfiable' | undefined {
  if (!header) return undefined;
  // Whitespace dropped first: one unambiguous pattern, linear in the header's length.
  const m = /^bytes=(\d*)-(\d*)$/i.exec(header.replace(/\s+/g, ''));
  // Several ranges, or another unit: a server may ignore Range and send everything (RFC 9110 §14.2).
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return [Math.max(0, size - suffix), size - 1];
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return [start, end];
}

function etagOf(key: string, size: number): string {
  return `"${createHash('sha256').update(key).digest('base64url').slice(0, 22)}-${size.toString(36)}"`;
}

/** Whether an `If-None-Match` list names this ETag (weak comparison, as RFC 9110 §13.1.2 asks). */
function matches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').some((t) => t.trim().replace(/^W\//, '') === etag);
}

export async function fileRoutes(app: FastifyInstance, deps: ApiDeps) {
  const verify = deps.verifyFileSignature;
  if (!verify) return;
  const cacheControl = `public, max-age=${deps.config.storage.cacheMaxAgeSeconds}, immutable`;
  app.withTypeProvider<ZodTypeProvider>().get('/files/*', {
    schema: {
      summary: 'A stored image, behind the signed, expiring link a job or the gallery gave',
      description: 'Cached as immutable, with an `ETag` (`If-None-Match` answers 304) and single byte ranges (`Range`, `If-Range`: 206, or 416 outside the file).',
      operationId: 'getFile',
      tags: ['files'],
      security: [],
      params: z.object({ '*': z.string().describe('The storage key') }),
      // Optional here so that a link without them is the same 403 as a forged one.
      querystring: z.object({ expires: z.string().max(32).optional().describe('Unix seconds'), signature: z.string().max(256).optional() }).strict(),
      produces: ['image/png', 'image/jpeg', 'image/webp'],
      response: {
        200: { description: 'The image bytes (cached as immutable)', content: imageContent },
        206: { description: 'The byte range asked for (`Content-Range` says which)', content: imageContent },
        304: z.undefined().describe('Not modified: the `If-None-Match` ETag is this image\'s'),
        ...errorResponses,
      },
    },
  }, async (req, typedReply) => {
    // Streams and empty bodies are not what the response schemas' types describe: send untyped.
    const reply = typedReply as unknown as FastifyReply;
    const key = req.params['*'];
    const { expires, signature } = req.query;
    if (!expires || !signature || !verify(key, expires, signature)) {
      throw new DomainError('forbidden', 'This image link is invalid or has expired; fetch the job again for a fresh one.', { code: 'invalid_signature' });
    }
    const storage = deps.storage;
    // A key that is not a storage key (`..`, an absolute path) names no image, even when signed.
    const invalidKey = (err: unknown) => {
      if (err instanceof InvalidStorageKeyError) return undefined;
      throw err;
    };
    if (!storage.file) {
      const obj = await storage.get(key).catch(invalidKey);
      if (!obj) throw new DomainError('not_found', 'No such image.', { code: 'image_not_found' });
      return reply.header('content-type', obj.contentType).header('cache-control', cacheControl).header('content-length', obj.data.length).send(obj.data);
    }
    const file = await storage.file(key).catch(invalidKey);
    if (!file) throw new DomainError('not_found', 'No such image.', { code: 'image_not_found' });
    const etag = etagOf(key, file.size);
    reply.header('etag', etag).header('cache-control', cacheControl).header('accept-ranges', 'bytes');
    if (matches(req.headers['if-none-match'], etag)) return reply.code(304).send();
    const ifRange = req.headers['if-range'];
    const range = ifRange === undefined || ifRange === etag ? byteRange(req.headers.range, file.size) : undefined;
    if (range === 'unsatisfiable') {
      reply.header('content-range', `bytes */${file.size}`);
      throw new DomainError('range_not_satisfiable', `The range ${req.headers.range} is outside this image of ${file.size} bytes.`, { param: 'range', code: 'range_not_satisfiable' });
    }
    const [start, end] = range ?? [0, file.size - 1];
    if (range) reply.code(206).header('content-range', `bytes ${start}-${end}/${file.size}`);
    reply.header('content-type', file.contentType).header('content-length', end - start + 1);
    // HEAD: an empty stream, so Fastify keeps the Content-Length above (it sets 0 for no body).
    if (req.method === 'HEAD' || file.size === 0) return reply.send(Readable.from([]));
    return reply.send(createReadStream(file.path, { start, end }));
  });
}
