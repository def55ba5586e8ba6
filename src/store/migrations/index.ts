import type { Migration } from 'kysely/migration';
import * as m001 from './001-core.ts';
import * as m002 from './002-embedded-queue.ts';

// Names sort in the order they must run.
export const migrations: Record<string, Migration> = {
  '001-core': m001,
  '002-embedded-queue': m002,
};
