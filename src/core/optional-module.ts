/**
 * Loads a part only some deployments use, when they configure it: BullMQ and ioredis (~9 MB of heap),
 * the AWS SDK (~8 MB), the AI SDK (~8 MB). The embedded stack then starts with 39 MB of heap instead
 * of 54, and a smaller heap is a shorter full collection, the worst pause a request can meet.
 * Synchronous (Node's require of ES modules), so constructors can call it; `from` is the caller's
 * `import.meta.url`, against which a relative specifier resolves.
 */
import { createRequire } from 'node:module';

export function loadOptional<T>(specifier: string, from: string): T {
  return createRequire(from)(specifier) as T;
}
