/**
 * A live API key's name is unique: budgets, rate limits, retention and the CLI refer to keys by
 * name, and `keys revoke <name>` must mean one key. Names of live keys that were shared before this
 * migration are made unique by suffixing the later keys' names with their id's last characters
 * (the oldest keeps its name). Revoked keys may share names (a revoked `ci-bot` can be replaced by a
 * new `ci-bot`).
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  const live = (await db.selectFrom('api_keys').select(['id', 'name']).where('revoked_at', 'is', null).orderBy('created_at').orderBy('id').execute()) as { id: string; name: string }[];
  const seen = new Set<string>();
  for (const k of live) {
    if (!seen.has(k.name)) {
      seen.add(k.name);
      continue;
    }
    const renamed = `${k.name}-${k.id.slice(-6).toLowerCase()}`;
    await db.updateTable('api_keys').set({ name: renamed }).where('id', '=', k.id).execute();
    seen.add(renamed);
  }
  await db.schema.createIndex('api_keys_live_name_idx').on('api_keys').column('name').unique().where(sql.ref('revoked_at'), 'is', null).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('api_keys_live_name_idx').ifExists().execute();
}
