/**
 * KeyStore over Kysely. Keys are stored by SHA-256 hash only; revoking sets revoked_at and keeps the
 * row so listings still show who had access.
 */
import type { Kysely } from 'kysely';
import type { MetadataDb } from './database.ts';
import type { ApiKey, KeyStore, NewApiKey } from './job-store.ts';
import { DomainError } from '../core/errors.ts';
import { isUniqueViolation } from './sql-job-store.ts';
import type { Database, NewRow, Row } from './schema.ts';

const keyNameTaken = (name: string) =>
  new DomainError('conflict', `An API key named '${name}' already exists; names are unique among live keys (revoke it first, or choose another name).`, { param: 'name', code: 'key_name_taken' });

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

  /** Creates a key; a live key of the same name is a `conflict` (names are unique among live keys). */
  async createKey(key: NewApiKey): Promise<ApiKey> {
    const now = Date.now();
    const taken = await this.db.selectFrom('api_keys').select('id').where('name', '=', key.name).where('revoked_at', 'is', null).executeTakeFirst();
    if (taken) throw keyNameTaken(key.name);
    await this.db
      .insertInto('api_keys')
      .values(newKeyRow(key, now))
      .execute()
      .catch(async (err) => {
        // Two creations with one name raced past the check: the unique index decides (the hash is unique too).
        if (isUniqueViolation(err) && (await this.db.selectFrom('api_keys').select('id').where('name', '=', key.name).where('revoked_at', 'is', null).executeTakeFirst())) throw keyNameTaken(key.name);
        throw err;
      });
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

  /**
   * Revokes the live key with this id, or the live key with this name. A name that matches more than
   * one live key (possible only on data written before names were unique) is refused, not guessed.
   */
  async revokeKey(idOrName: string): Promise<boolean> {
    const matches = await this.db
      .selectFrom('api_keys')
      .select(['id'])
      .where((eb) => eb.or([eb('id', '=', idOrName), eb('name', '=', idOrName)]))
      .where('revoked_at', 'is', null)
      .execute();
    if (matches.length === 0) return false;
    if (matches.length > 1) {
      throw new DomainError('conflict', `"${idOrName}" names ${matches.length} live keys; revoke one by its id (${matches.map((m) => m.id).join(', ')}).`, { code: 'ambiguous_key_name' });
    }
    const r = await this.db.updateTable('api_keys').set({ revoked_at: Date.now() }).where('id', '=', matches[0]!.id).where('revoked_at', 'is', null).executeTakeFirst();
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
