import type { Migration } from 'kysely/migration';
import * as m001 from './001-core.ts';
import * as m002 from './002-embedded-queue.ts';
import * as m003 from './003-job-events.ts';
import * as m004 from './004-webhooks.ts';
import * as m005 from './005-idempotency-fingerprint.ts';
import * as m006 from './006-retention.ts';
import * as m007 from './007-cost-control.ts';
import * as m008 from './008-batches.ts';
import * as m009 from './009-thumbnails.ts';
import * as m010 from './010-batch-fingerprint.ts';
import * as m011 from './011-unique-key-names.ts';
import * as m012 from './012-fair-queue.ts';

// Migrations take `Kysely<any>`, not the app's `Kysely<Database>` (../schema.ts), and this is the one
// place outside a dialect's introspector where `Kysely<any>` belongs: a migration runs against the
// schema as the migrations before it left it, which is not the current `Database`, and it must keep
// compiling unchanged when later migrations change that interface (Kysely's migration guidance).

// Names sort in the order they must run.
export const migrations: Record<string, Migration> = {
  '001-core': m001,
  '002-embedded-queue': m002,
  '003-job-events': m003,
  '004-webhooks': m004,
  '005-idempotency-fingerprint': m005,
  '006-retention': m006,
  '007-cost-control': m007,
  '008-batches': m008,
  '009-thumbnails': m009,
  '010-batch-fingerprint': m010,
  '011-unique-key-names': m011,
  '012-fair-queue': m012,
};
