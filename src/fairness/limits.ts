/**
 * The admission step `checkQueueLimit`: a key (and its group) may have at most `maxQueued` jobs
 * waiting. Past it a submission is refused with 429 `queue_limit_exceeded`, in OpenAI's shape, before
 * anything is reserved or stored; a batch's request is not refused but waits (the batch pump pauses
 * the batch until the key has room).
 *
 * "Queued" is what the store says: the key's jobs in state `queued`, on either stack. The count is one
 * statement over the jobs table's (key_id, status) index, bounded by the limit (it stops counting at
 * the limit), and runs only for keys that have a limit. Two submissions racing for the last place may
 * both get in: the limit can be passed by the submissions in flight at that instant, never more.
 */
import { sql } from 'kysely';
import { DomainError } from '../core/errors.ts';
import type { MetadataDb } from '../store/database.ts';
import type { FairPolicy } from './policy.ts';

/** A submission over a queue limit: 429 at the API; a batch waits instead. */
export class QueueLimitReached extends DomainError {
  readonly scope: 'key' | 'group';
  constructor(scope: 'key' | 'group', message: string) {
    // A retry succeeds once some of the key's jobs have started; a few seconds is a fair first guess.
    super('rate_limited', message, { code: 'queue_limit_exceeded', retryable: true, retryAfterSeconds: 5 });
    this.name = 'QueueLimitReached';
    this.scope = scope;
  }
}

export interface QueueLimitsDeps {
  policy: FairPolicy;
  mdb: MetadataDb;
  /** Told of every refusal (metrics). */
  onRefusal?: (scope: 'key' | 'group') => void;
}

export class QueueLimits {
  private readonly deps: QueueLimitsDeps;

  constructor(deps: QueueLimitsDeps) {
    this.deps = deps;
  }

  /** Throws QueueLimitReached when the key, or its group, has as many jobs queued as its limit. */
  async check(key: { id: string; name: string }): Promise<void> {
    const { policy } = this.deps;
    policy.remember(key);
    if (!policy.limitsQueued) return;
    const s = policy.settingsFor(key);
    if (s.maxQueued === null && s.groupMaxQueued === null) return;
    const counts = await this.count(key.id, s.maxQueued, s.groupKeys, s.groupMaxQueued);
    if (s.maxQueued !== null && counts.key >= s.maxQueued) {
      this.deps.onRefusal?.('key');
      throw new QueueLimitReached(
        'key',
        `The key '${key.name}' has ${counts.key} jobs queued, its limit (fairness maxQueued ${s.maxQueued}). Submit again when some of them have started, or cancel some.`,
      );
    }
    if (s.groupMaxQueued !== null && counts.group >= s.groupMaxQueued) {
      this.deps.onRefusal?.('group');
      throw new QueueLimitReached(
        'group',
        `The key group '${s.group}' has ${counts.group} jobs queued, its limit (fairness maxQueued ${s.groupMaxQueued}). Submit again when some of them have started, or cancel some.`,
      );
    }
  }

  /** Queued jobs of the key and of its group's keys, each counted up to its limit: one statement. */
  private async count(keyId: string, keyMax: number | null, groupKeys: readonly string[], groupMax: number | null): Promise<{ key: number; group: number }> {
    const keyCount = keyMax === null ? sql`0` : sql`(select count(*) from (select 1 from jobs where key_id = ${keyId} and status = 'queued' limit ${keyMax}) k)`;
    const members = sql.join(groupKeys.map((k) => sql`${k}`));
    const groupCount =
      groupMax === null
        ? sql`0`
        : sql`(select count(*) from (select 1 from jobs where status = 'queued' and key_id in (select id from api_keys where id in (${members}) or name in (${members})) limit ${groupMax}) g)`;
    const { rows } = await sql<{ k: number | string; g: number | string }>`select ${keyCount} as k, ${groupCount} as g`.execute(this.deps.mdb.db);
    return { key: Number(rows[0]?.k ?? 0), group: Number(rows[0]?.g ?? 0) };
  }
}
