/**
 * GET /files/<key>?expires&signature — images in local storage, behind signed expiring URLs (the
 * local twin of S3 presigned URLs). The bytes at a key never change, so they cache as immutable.
 */
import type { FastifyInstance } from 'fastify';
import { DomainError } from '../../core/errors.ts';
import type { ApiDeps } from '../server.ts';
import { InvalidStorageKeyError } from '../../storage/local-storage.ts';

export async function fileRoutes(app: FastifyInstance, deps: ApiDeps) {
  const verify = deps.verifyFileSignature;
  if (!verify) return;
  app.get<{ Params: { '*': string }; Querystring: { expires?: string; signature?: string } }>('/files/*', async (req, reply) => {
    const key = req.params['*'];
    const { expires, signature } = req.query;
    if (!expires || !signature || !verify(key, expires, signature)) {
      throw new DomainError('forbidden', 'This image link is invalid or has expired; fetch the job again for a fresh one.', { code: 'invalid_signature' });
    }
    // A key that is not a storage key (`..`, an absolute path) names no image, even when signed.
    const obj = await deps.storage.get(key).catch((err) => {
      if (err instanceof InvalidStorageKeyError) return undefined;
      throw err;
    });
    if (!obj) throw new DomainError('not_found', 'No such image.', { code: 'image_not_found' });
    return reply
      .header('content-type', obj.contentType)
      .header('cache-control', `public, max-age=${deps.config.storage.cacheMaxAgeSeconds}, immutable`)
      .header('content-length', obj.data.length)
      .send(obj.data);
  });
}
