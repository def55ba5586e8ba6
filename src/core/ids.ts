import { randomBytes } from 'node:crypto';

// Crockford base32: ids sort by creation time, which keyset pagination relies on.
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** A 26-character ULID: 48 bits of milliseconds, then 80 random bits. */
export function ulid(now: number = Date.now()): string {
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32] + time;
    t = Math.floor(t / 32);
  }
  const bytes = randomBytes(16);
  let rand = '';
  for (let i = 0; i < 16; i++) rand += ALPHABET[bytes[i]! & 31];
  return time + rand;
}

export const newJobId = (): string => `job_${ulid()}`;
export const newImageId = (): string => `img_${ulid()}`;
export const newKeyId = (): string => `key_${ulid()}`;
