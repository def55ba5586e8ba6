/** Storage keys (src/images/keys.ts): one folder per minute of job creation, never one per job. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ulid } from '../../src/core/ids.ts';
import { imageKey, jobFolder, jobIdOfKey, thumbKey, ulidTime } from '../../src/images/keys.ts';

test('keys group jobs by the UTC minute their id was made, and name the job and index', () => {
  const at = Date.UTC(2026, 10, 21, 17, 5, 42, 123);
  const a = `job_${ulid(at)}`;
  const b = `job_${ulid(at + 10_000)}`;
  assert.equal(ulidTime(a), at);
  assert.equal(jobFolder(a), '20261121/1705');
  assert.equal(imageKey(a, 2, 'png'), `images/20261121/1705/${a}-2.png`);
  assert.equal(thumbKey(a, 0), `thumbs/20261121/1705/${a}-0.webp`);
  assert.equal(jobFolder(b), jobFolder(a), 'jobs of the same minute share a folder');
  assert.notEqual(jobFolder(`job_${ulid(at + 60_000)}`), jobFolder(a));
  assert.equal(jobIdOfKey(imageKey(a, 11, 'webp')), a);
  assert.equal(jobIdOfKey(thumbKey(a, 3)), a);
});

test('an id that is not a ULID still gets a valid, distinct key', () => {
  assert.equal(imageKey('job_x', 0, 'png'), 'images/other/job_x-0.png');
  assert.equal(jobIdOfKey('images/other/job_x-0.png'), 'job_x');
  assert.equal(jobIdOfKey('inputs/job_x/image-1.png'), undefined);
});
