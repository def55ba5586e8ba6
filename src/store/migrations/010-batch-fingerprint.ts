/**
 * A batch submitted with an `Idempotency-Key` keeps the digest of what it asked for, so the same key
 * with another body is refused (422) instead of answering the first batch.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('batches').addColumn('idempotency_fingerprint', 'text').execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('batches').dropColumn('idempotency_fingerprint').execute();
}
