/**
 * KeyStore over Kysely. Keys are stored by SHA-256 hash only; revoking sets revoked_at and keeps the
 * row so listings still show who had access.
 */
import type { Kysely } from 'kysely';
import type { MetadataDb } from './database.ts';
import type { ApiKey, KeyStore, NewApiKey } from './job-store.ts';
import type { Database, NewRow, Row } from './schema.ts';

/** Every column but the hash, which is only ever compared in SQL. */
const COLUMNS = ['id', 'name', 'prefix', 'admin', 'created_at', 'revoked_at'] as const;
type KeyRow = Pick<Row<'api_keys'>, (typeof COLUMNS)[number]>;

function rowToKey(r: KeyRow): ApiKey {
  return {
    id: r.id,
    name: r.name,
    prefix: r.prefix,
    admin: r.admin === 1,
    createdAt: new Date(r.created_at),
    revokedAt: r.revoked_at == null ? null : new Date(r.revoked_at),
  };
}

function newKeyRow(key: NewApiKey, now: number): NewRow<'api_keys'> {
  return { id: key.id, name: key.name, prefix: key.prefix, hash: key.hash, admin: key.admin ? 1 : 0, created_at: now, revoked_at: null };
}

export class SqlKeyStore implements KeyStore {
  private readonly db: Kysely<Database>;

  constructor(mdb: MetadataDb) {
    this.db = mdb.db;
  }

  async createKey(key: NewApiKey): Promise<ApiKey> {
    const now = Date.now();
    await this.db.insertInto('api_keys').values(newKeyRow(key, now)).execute();
    return { id: key.id, name: key.name, prefix: key.prefix, admin: key.admin, createdAt: new Date(now), revokedAt: null };
  }

  async findByHash(hash: string): Promise<ApiKey | undefined> {
    const row = await this.db
      .selectFrom('api_keys')
      .select(COLUMNS)
      .where('hash', '=', hash)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return row ? rowToKey(row) : undefined;
  }

  /** All keys, revoked ones included, oldest first. */
  async listKeys(): Promise<ApiKey[]> {
    const rows = await this.db.selectFrom('api_keys').select(COLUMNS).orderBy('created_at').orderBy('id').execute();
    return rows.map(rowToKey);
  }

  /** Revokes the live key with this id, or every live key with this name. */
  async revokeKey(idOrName: string): Promise<boolean> {
    const now = Date.now();
    const r = await this.db
      .updateTable('api_keys')
      .set({ revoked_at: now })
      .where((eb) => eb.or([eb('id', '=', idOrName), eb('name', '=', idOrName)]))
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  /** Live (unrevoked) keys. */
  async countKeys(): Promise<number> {
    const row = await this.db
      .selectFrom('api_keys')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('revoked_at', 'is', null)
      .executeTakeFirstOrThrow();
    return row.n;
  }
}
