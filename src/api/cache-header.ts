/** The `Easel-Cache` request header: how a request may use the image cache. */
import { DomainError } from '../core/errors.ts';
import { CACHE_POLICIES } from '../cache/image-cache.ts';
import type { CachePolicy } from '../cache/image-cache.ts';

export function parseCachePolicy(raw: string | string[] | undefined): CachePolicy {
  if (raw === undefined) return 'auto';
  if (Array.isArray(raw)) throw new DomainError('invalid', "The 'Easel-Cache' header was sent more than once; send it once.", { param: 'Easel-Cache', code: 'invalid_value' });
  const v = raw.trim().toLowerCase();
  if ((CACHE_POLICIES as readonly string[]).includes(v)) return v as CachePolicy;
  throw new DomainError('invalid', `Invalid 'Easel-Cache' header: expected one of ${CACHE_POLICIES.join(', ')}, got "${v.slice(0, 40)}".`, { param: 'Easel-Cache', code: 'invalid_value' });
}
