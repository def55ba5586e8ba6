import type { Migration } from 'kysely/migration';
import * as m001 from './001-core.ts';
import * as m002 from './002-embedded-queue.ts';
import * as m003 from './003-job-events.ts';
import * as m004 from './004-webhooks.ts';
import * as m005 from './005-idempotency-fingerprint.ts';

// Names sort in the order they must run.
export const migrations: Record<string, Migration> = {
  '001-core': m001,
  '002-embedded-queue': m002,
  '003-job-events': m003,
  '004-webhooks': m004,
  '005-idempotency-fingerprint': m005,
};
