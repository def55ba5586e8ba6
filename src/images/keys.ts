/**
 * Where a job's files live in storage. Keys are grouped by the minute the job was created (read from
 * its ULID), not one folder per job: on a local disk a folder is an inode like a file, and creating
 * one per job cost as much as the image itself. `images/20261121/1705/job_01J…-0.png`.
 */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** Milliseconds encoded in the first ten characters of a ULID (after any `job_` prefix); NaN if none. */
export function ulidTime(id: string): number {
  const u = id.slice(id.indexOf('_') + 1);
  if (u.length < 10) return NaN;
  let t = 0;
  for (let i = 0; i < 10; i++) {
    const v = ALPHABET.indexOf(u[i]!.toUpperCase());
    if (v < 0) return NaN;
    t = t * 32 + v;
  }
  return t;
}

const two = (n: number) => String(n).padStart(2, '0');

/** The job's folder: `YYYYMMDD/HHMM` (UTC) of its creation, or `other` for an id that is not a ULID. */
export function jobFolder(jobId: string): string {
  const t = ulidTime(jobId);
  if (!Number.isFinite(t)) return 'other';
  const d = new Date(t);
  return `${d.getUTCFullYear()}${two(d.getUTCMonth() + 1)}${two(d.getUTCDate())}/${two(d.getUTCHours())}${two(d.getUTCMinutes())}`;
}

/** Deterministic per job and index, so a re-run overwrites rather than duplicates. */
export const imageKey = (jobId: string, index: number, ext: string): string => `images/${jobFolder(jobId)}/${jobId}-${index}.${ext}`;

export const thumbKey = (jobId: string, index: number): string => `thumbs/${jobFolder(jobId)}/${jobId}-${index}.webp`;

/** The job id a key made by imageKey or thumbKey belongs to. */
export function jobIdOfKey(key: string): string | undefined {
  const m = /^(?:images|thumbs)\/(?:\d{8}\/\d{4}|other)\/(.+)-\d+\.[a-z]+$/.exec(key);
  return m?.[1];
}
