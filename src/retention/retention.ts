/**
 * The retention sweep: jobs that ended (succeeded, failed or canceled) longer ago than their key's
 * retention are deleted with everything they own — image objects and uploaded inputs in storage,
 * then `images`, `job_events`, webhook deliveries and attempts, and the job row itself.
 *
 * Policy: `retention.days` for every key, `retention.keys` per key (by name or id; a number of days,
 * or null to keep forever) winning over it. A key-id match wins over a name match.
 *
 * Crash-safe and idempotent: objects go first (deleting a missing object is a no-op), then the rows
 * in one transaction, so a sweep killed half-way leaves jobs that the next sweep finishes deleting,
 * never rows pointing at nothing that nobody will clean up.
 */
import { rmdir } from 'node:fs/promises';
import path from 'node:path';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import type { EaselConfig } from '../config/schema.ts';
import type { MetadataDb } from '../store/database.ts';
import type { Database, Row } from '../store/schema.ts';
import type { JobStatus } from '../core/job.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import { LocalStorage } from '../storage/local-storage.ts';

export const DAY_MS = 24 * 60 * 60 * 1000;
const TERMINAL: JobStatus[] = ['succeeded', 'failed', 'canceled'];
/** Storage deletes in flight at once. */
const DELETE_CONCURRENCY = 16;

export type RetentionConfig = EaselConfig['retention'];

export interface RetentionDeps {
  mdb: MetadataDb;
  storage: ImageStorage;
  config: RetentionConfig;
  log?: Logger;
  /** Aborted when the run must stop (lease lost, shutdown): it stops between batches. */
  signal?: AbortSignal;
}

export interface RetentionResult {
  /** Jobs deleted (with their rows in every table). */
  jobs: number;
  /** `images` rows deleted. */
  images: number;
  /** Storage objects deleted (images and uploaded inputs). */
  objects: number;
  /** Per policy: `default` or the key id, with the cutoff used (epoch ms) and jobs deleted. */
  policies: { policy: string; cutoff: number; jobs: number }[];
  startedAt: number;
  durationMs: number;
  /** True when the run stopped early (signal). */
  interrupted: boolean;
}

/** Whether any retention is configured at all (else no sweep is scheduled). */
export function retentionEnabled(config: RetentionConfig): boolean {
  return config.days !== undefined || Object.values(config.keys).some((d) => d !== null);
}

interface Scope {
  policy: string;
  cutoff: number;
  /** Only these keys… */
  keyId?: string;
  /** …or every key but these. */
  exceptKeyIds?: string[];
}

/** The scopes one run deletes in: one per key with its own number of days, then the default. */
export async function retentionScopes(db: Kysely<Database>, config: RetentionConfig, now: number): Promise<Scope[]> {
  const overrides = Object.entries(config.keys);
  const perKey = new Map<string, number | null>();
  if (overrides.length) {
    const keys = await db.selectFrom('api_keys').select(['id', 'name']).execute();
    // Names first, then ids, so an id match wins.
    for (const k of keys) if (Object.hasOwn(config.keys, k.name)) perKey.set(k.id, config.keys[k.name]!);
    for (const k of keys) if (Object.hasOwn(config.keys, k.id)) perKey.set(k.id, config.keys[k.id]!);
  }
  const scopes: Scope[] = [];
  for (const [keyId, days] of perKey) if (days !== null) scopes.push({ policy: keyId, keyId, cutoff: now - days * DAY_MS });
  if (config.days !== undefined) scopes.push({ policy: 'default', cutoff: now - config.days * DAY_MS, exceptKeyIds: [...perKey.keys()] });
  return scopes;
}

type ExpiredJob = Pick<Row<'jobs'>, 'id' | 'request'>;

function expiredBatch(db: Kysely<Database>, scope: Scope, limit: number): Promise<ExpiredJob[]> {
  let q = db
    .selectFrom('jobs')
    .select(['id', 'request'])
    .where('finished_at', '<', scope.cutoff)
    .where('status', 'in', TERMINAL);
  if (scope.keyId !== undefined) q = q.where('key_id', '=', scope.keyId);
  if (scope.exceptKeyIds?.length) q = q.where('key_id', 'not in', scope.exceptKeyIds);
  return q.orderBy('finished_at').limit(limit).execute();
}

/** Storage keys of a job's uploaded inputs (edits, variations), from its stored request. */
function inputKeys(requestJson: string): string[] {
  try {
    const req = JSON.parse(requestJson) as { inputImages?: unknown; mask?: unknown };
    const keys = Array.isArray(req.inputImages) ? req.inputImages.filter((k): k is string => typeof k === 'string') : [];
    if (typeof req.mask === 'string') keys.push(req.mask);
    return keys;
  } catch {
    return [];
  }
}

async function mapLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** Deletes the given jobs: objects first, then every row they own, in one transaction. */
async function deleteJobs(deps: RetentionDeps, jobs: ExpiredJob[]): Promise<{ images: number; objects: number }> {
  const { mdb, storage } = deps;
  const ids = jobs.map((j) => j.id);
  const images = await mdb.db.selectFrom('images').select(['storage_key', 'thumb_key']).where('job_id', 'in', ids).execute();
  const imageKeys = images.flatMap((r) => [r.storage_key, ...(r.thumb_key ? [r.thumb_key] : [])]);
  const keys = [...new Set([...imageKeys, ...jobs.flatMap((j) => inputKeys(j.request))])];
  await mapLimit(keys, DELETE_CONCURRENCY, (key) => storage.delete(key));
  if (storage instanceof LocalStorage) {
    // Images and thumbnails sit in per-minute folders (src/images/keys.ts), uploads in `inputs/<job>/`: drop the folders left empty.
    const dirs = new Set(keys.map((k) => path.dirname(storage.pathFor(k))));
    await Promise.all([...dirs].map((d) => rmdir(d).catch(() => {})));
  }
  let deletedImages = 0;
  await mdb.db.transaction().execute(async (trx) => {
    const res = await trx.deleteFrom('images').where('job_id', 'in', ids).executeTakeFirst();
    deletedImages = Number(res.numDeletedRows);
    await trx.deleteFrom('job_events').where('job_id', 'in', ids).execute();
    await trx
      .deleteFrom('webhook_attempts')
      .where('delivery_id', 'in', trx.selectFrom('webhook_deliveries').select('id').where('job_id', 'in', ids))
      .execute();
    await trx.deleteFrom('webhook_deliveries').where('job_id', 'in', ids).execute();
    await trx.deleteFrom('queue_messages').where('job_id', 'in', ids).execute();
    // Only jobs still terminal: a row is never deleted from under a worker.
    await trx.deleteFrom('jobs').where('id', 'in', ids).where('status', 'in', TERMINAL).execute();
  });
  return { images: deletedImages, objects: keys.length };
}

/** One retention run over every scope. */
export async function runRetention(deps: RetentionDeps, now = Date.now()): Promise<RetentionResult> {
  const started = Date.now();
  const result: RetentionResult = { jobs: 0, images: 0, objects: 0, policies: [], startedAt: started, durationMs: 0, interrupted: false };
  const scopes = await retentionScopes(deps.mdb.db, deps.config, now);
  for (const scope of scopes) {
    let deleted = 0;
    for (;;) {
      if (deps.signal?.aborted) {
        result.interrupted = true;
        break;
      }
      const batch = await expiredBatch(deps.mdb.db, scope, deps.config.batchSize);
      if (batch.length === 0) break;
      const { images, objects } = await deleteJobs(deps, batch);
      deleted += batch.length;
      result.images += images;
      result.objects += objects;
      if (batch.length < deps.config.batchSize) break;
    }
    result.jobs += deleted;
    result.policies.push({ policy: scope.policy, cutoff: scope.cutoff, jobs: deleted });
    if (result.interrupted) break;
  }
  result.durationMs = Date.now() - started;
  return result;
}
