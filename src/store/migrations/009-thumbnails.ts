/**
 * The console's gallery: each image row may name a small WebP thumbnail stored beside it
 * (`thumbs/<job>/<i>.webp`, made by the worker at store time), and images are listed per key
 * newest job first, so that order gets an index.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable('images').addColumn('thumb_key', 'text').execute();
  await db.schema.createIndex('images_key_id_job_id_idx').on('images').columns(['key_id', 'job_id', 'idx']).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('images_key_id_job_id_idx').ifExists().execute();
  await db.schema.alterTable('images').dropColumn('thumb_key').execute();
}
