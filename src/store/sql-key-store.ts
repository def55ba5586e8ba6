/**
 * KeyStore over Kysely. Keys are stored by SHA-256 hash only; revoking sets revoked_at and keeps the
 * row so listings still show who had access.
 */
import type { Kysely } from 'kysely';
import type { MetadataDb } from './database.ts';
import type { ApiKey, KeyStore, NewApiKey } from './job-store.ts';

interface KeyRow {
  id: string;
  name: string;
  prefix: string;
  admin: number | string | boolean;
  created_at: number | string;
  revoked_at: number | string | null;
}

const COLUMNS = ['id', 'name', 'prefix', 'admin', 'created_at', 'revoked_at'] as const;

function rowToKey(r: KeyRow): ApiKey {
  return {
    id: r.id,
    name: r.name,
    prefix: r.prefix,
    admin: r.admin === true || Number(r.admin) === 1,
    createdAt: new Date(Number(r.created_at)),
    revokedAt: r.revoked_at == null ? null : new Date(Number(r.revoked_at)),
  };
}

export class SqlKeyStore implements KeyStore {
  private readonly db: Kysely<any>;

  constructor(mdb: MetadataDb) {
    this.db = mdb.db;
  }

  async createKey(key: NewApiKey): Promise<ApiKey> {
    const now = Date.now();
    await this.db
      .insertInto('api_keys')
      .values({
        id: key.id,
        name: key.name,
        prefix: key.prefix,
        hash: key.hash,
        admin: key.admin ? 1 : 0,
        created_at: now,
        revoked_at: null,
      })
      .execute();
    return { id: key.id, name: key.name, prefix: key.prefix, admin: key.admin, createdAt: new Date(now), revokedAt: null };
  }

  async findByHash(hash: string): Promise<ApiKey | undefined> {
    const row = await this.db
      .selectFrom('api_keys')
      .select(COLUMNS)
      .where('hash', '=', hash)
      .where('revoked_at', 'is', null)
      .executeTakeFirst();
    return row ? rowToKey(row as KeyRow) : undefined;
  }

  /** All keys, revoked ones included, oldest first. */
  async listKeys(): Promise<ApiKey[]> {
    const rows = await this.db.selectFrom('api_keys').select(COLUMNS).orderBy('created_at').orderBy('id').execute();
    return (rows as KeyRow[]).map(rowToKey);
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
      .select((eb) => eb.fn.countAll().as('n'))
      .where('revoked_at', 'is', null)
      .executeTakeFirstOrThrow();
    return Number((row as { n: number | string | bigint }).n);
  }
}
