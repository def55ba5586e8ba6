import type { Kysely } from 'kysely';

// What an idempotent submission asked for, so a retry with the same key but a different body is refused.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('jobs').addColumn('idempotency_fingerprint', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('jobs').dropColumn('idempotency_fingerprint').execute();
}
