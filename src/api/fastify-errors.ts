/**
 * What Fastify and its plugins throw (bad JSON, bodies over the limit, unknown content types, bad
 * URLs, schema validation) as domain errors, so every answer easel sends has OpenAI's error shape.
 */
import type { FastifyError, FastifyRequest } from 'fastify';
import { DomainError } from '../core/errors.ts';

export function asDomainError(err: FastifyError | DomainError | Error, req: FastifyRequest, bodyLimitBytes: number): DomainError {
  if (err instanceof DomainError) return err;
  const e = err as FastifyError;
  const status = e.statusCode ?? 500;
  if (status === 413 || e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return new DomainError('too_large', `Request body is larger than this server accepts (${bodyLimitBytes} bytes).`, { code: 'request_too_large' });
  }
  if (e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
    return new DomainError('unsupported_media', `Unsupported Content-Type "${String(req.headers['content-type'] ?? '').slice(0, 100)}"; send application/json.`, { code: 'unsupported_media_type' });
  }
  if (e instanceof SyntaxError || e.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || e.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
    return new DomainError('invalid', `We could not parse the JSON body of your request: ${e.message}`, { code: 'invalid_json' });
  }
  if (e.code === 'FST_ERR_BAD_URL' || e.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    const path = String(req.url ?? '').split('?')[0]!.slice(0, 200);
    const why = e.code === 'FST_ERR_BAD_URL' ? 'it is not valid percent-encoding' : 'a path segment is longer than this server accepts';
    return new DomainError('invalid', `The URL path '${path}' cannot be read: ${why}.`, { code: 'invalid_url' });
  }
  if (status >= 400 && status < 500) return new DomainError('invalid', e.message, { code: 'invalid_request' });
  return new DomainError('internal', `The server had an error while processing your request (request id ${req.id}; the details are in the server's logs).`, { code: 'internal_error' });
}
