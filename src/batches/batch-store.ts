/**
 * Batches and their requests in the metadata store (tables from migration 008). A request waits as
 * `pending`; a worker's pump `claim`s it (assigning the job id it will create, conditional on it
 * still being pending, so two pumps never take the same request), then marks it `submitted` once the
 * job exists, or `failed` with the reason it was refused, or hands it back to `pending` when the
 * batch's spend cap for this window is full.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { newJobId, ulid } from '../core/ids.ts';
import type { JobError, JobStatus, Priority } from '../core/job.ts';
import type { MetadataDb } from '../store/database.ts';
import type { Database, NewRow, Row } from '../store/schema.ts';

export type BatchStatus = 'in_progress' | 'canceled' | 'completed';
export type ItemStatus = 'pending' | 'claimed' | 'submitted' | 'failed' | 'canceled';

export interface Batch {
  id: string;
  keyId: string;
  status: BatchStatus;
  total: number;
  priority: Priority;
  hourlyCapUsd: number | null;
  metadata: Record<string, string> | null;
  idempotencyKey: string | null;
  /** Digest of what an idempotent submission asked for. */
  idempotencyFingerprint: string | null;
  createdAt: Date;
  canceledAt: Date | null;
  completedAt: Date | null;
}

/** One request of a batch as accepted (validated at submission). */
export interface ItemBody {
  model?: string;
  request: import('../core/image-request.ts').ImageRequest;
  cache: 'auto' | 'reuse' | 'similar' | 'off';
  webhookUrl: string | null;
  metadata: Record<string, string> | null;
}

export interface BatchItem {
  batchId: string;
  index: number;
  customId: string | null;
  body: ItemBody;
  status: ItemStatus;
  jobId: string | null;
  error: JobError | null;
}

export interface BatchCounts {
  total: number;
  pending: number;
  queued: number;
  running: number;
  succeeded: number;
  failed: number;
  canceled: number;
  costUsd: number;
}

export interface ItemResult {
  index: number;
  customId: string | null;
  status: ItemStatus | JobStatus;
  jobId: string | null;
  error: JobError | null;
  costUsd: number | null;
}

const toDate = (v: number | null): Date | null => (v == null ? null : new Date(v));

/** The input of BatchStore.create. */
export interface NewBatch {
  keyId: string;
  priority: Priority;
  hourlyCapUsd: number | null;
  metadata: Record<string, string> | null;
  idempotencyKey: string | null;
  idempotencyFingerprint?: string | null;
  items: { customId: string | null; body: ItemBody }[];
}

/** A `batches` row as the batch it describes. */
function rowToBatch(r: Row<'batches'>): Batch {
  return {
    id: r.id,
    keyId: r.key_id,
    status: r.status,
    total: r.total,
    priority: r.priority,
    hourlyCapUsd: r.hourly_cap_usd,
    metadata: r.metadata ? (JSON.parse(r.metadata) as Record<string, string>) : null,
    idempotencyKey: r.idempotency_key,
    idempotencyFingerprint: r.idempotency_fingerprint,
    createdAt: new Date(r.created_at),
    canceledAt: toDate(r.canceled_at),
    completedAt: toDate(r.completed_at),
  };
}

/** A new batch's row. */
function newBatchRow(id: string, input: NewBatch, now: number): NewRow<'batches'> {
  return {
    id,
    key_id: input.keyId,
    status: 'in_progress',
    total: input.items.length,
    priority: input.priority,
    hourly_cap_usd: input.hourlyCapUsd,
    metadata: input.metadata ? JSON.stringify(input.metadata) : null,
    idempotency_key: input.idempotencyKey,
    idempotency_fingerprint: input.idempotencyFingerprint ?? null,
    created_at: now,
    canceled_at: null,
    completed_at: null,
  };
}

/** A `batch_items` row as the request it holds. */
function rowToItem(r: Row<'batch_items'>): BatchItem {
  return {
    batchId: r.batch_id,
    index: r.idx,
    customId: r.custom_id,
    body: JSON.parse(r.body) as ItemBody,
    status: r.status,
    jobId: r.job_id,
    error: r.error ? (JSON.parse(r.error) as JobError) : null,
  };
}

/** The row of a batch's request, waiting. */
function newItemRow(batchId: string, index: number, item: NewBatch['items'][number], now: number): NewRow<'batch_items'> {
  return { batch_id: batchId, idx: index, custom_id: item.customId, body: JSON.stringify(item.body), status: 'pending', job_id: null, error: null, updated_at: now };
}

export class BatchStore {
  private readonly db: Kysely<Database>;

  constructor(mdb: MetadataDb) {
    this.db = mdb.db;
  }

  async create(input: NewBatch): Promise<Batch> {
    const id = `batch_${ulid()}`;
    const now = Date.now();
    await this.db.transaction().execute(async (trx) => {
      await trx.insertInto('batches').values(newBatchRow(id, input, now)).execute();
      for (let i = 0; i < input.items.length; i += 200) {
        await trx
          .insertInto('batch_items')
          .values(input.items.slice(i, i + 200).map((it, k) => newItemRow(id, i + k, it, now)))
          .execute();
      }
    });
    return (await this.get(id))!;
  }

  async get(id: string): Promise<Batch | undefined> {
    const r = await this.db.selectFrom('batches').selectAll().where('id', '=', id).executeTakeFirst();
    return r ? rowToBatch(r) : undefined;
  }

  async findByIdempotencyKey(keyId: string, key: string): Promise<Batch | undefined> {
    const r = await this.db.selectFrom('batches').selectAll().where('key_id', '=', keyId).where('idempotency_key', '=', key).executeTakeFirst();
    return r ? rowToBatch(r) : undefined;
  }

  async list(keyId: string, limit: number, after?: string): Promise<{ batches: Batch[]; hasMore: boolean }> {
    let q = this.db.selectFrom('batches').selectAll().where('key_id', '=', keyId);
    if (after) q = q.where('id', '<', after);
    const rows = await q.orderBy('id', 'desc').limit(limit + 1).execute();
    return { batches: rows.slice(0, limit).map(rowToBatch), hasMore: rows.length > limit };
  }

  async open(limit = 100): Promise<Batch[]> {
    const rows = await this.db.selectFrom('batches').selectAll().where('status', '=', 'in_progress').orderBy('created_at').limit(limit).execute();
    return rows.map(rowToBatch);
  }

  async counts(batchId: string): Promise<BatchCounts> {
    // A raw statement: the status it groups by is the item's or its job's, whichever is current.
    const rows = (await sql<{ s: ItemStatus | JobStatus; n: number; cost: number | null }>`
      select case when i.status = 'submitted' then coalesce(j.status, 'queued') else i.status end as s, count(*) as n, sum(j.cost_usd) as cost
      from batch_items i left join jobs j on j.id = i.job_id and i.status = 'submitted'
      where i.batch_id = ${batchId}
      group by case when i.status = 'submitted' then coalesce(j.status, 'queued') else i.status end`.execute(this.db)).rows;
    const c: BatchCounts = { total: 0, pending: 0, queued: 0, running: 0, succeeded: 0, failed: 0, canceled: 0, costUsd: 0 };
    for (const r of rows) {
      const n = r.n;
      c.total += n;
      const s = r.s === 'claimed' ? 'pending' : r.s;
      if (s in c) (c as unknown as Record<string, number>)[s]! += n;
      c.costUsd = Math.round((c.costUsd + (r.cost ?? 0)) * 1e6) / 1e6;
    }
    return c;
  }

  /** Jobs of the batch still queued or running. */
  async inFlight(batchId: string): Promise<number> {
    const r = await this.db
      .selectFrom('batch_items as i')
      .innerJoin('jobs as j', 'j.id', 'i.job_id')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('i.batch_id', '=', batchId)
      .where('i.status', '=', 'submitted')
      .where('j.status', 'in', ['queued', 'running'])
      .executeTakeFirst();
    return r?.n ?? 0;
  }

  async waiting(batchId: string): Promise<number> {
    const r = await this.db.selectFrom('batch_items').select((eb) => eb.fn.countAll<number>().as('n')).where('batch_id', '=', batchId).where('status', 'in', ['pending', 'claimed']).executeTakeFirst();
    return r?.n ?? 0;
  }

  /** Claims up to `limit` pending requests, lowest index first, each with the id of the job it will become. */
  async claim(batchId: string, limit: number): Promise<BatchItem[]> {
    const candidates = await this.db.selectFrom('batch_items').selectAll().where('batch_id', '=', batchId).where('status', '=', 'pending').orderBy('idx').limit(limit).execute();
    const claimed: BatchItem[] = [];
    for (const c of candidates) {
      const jobId = newJobId();
      const r = await this.db
        .updateTable('batch_items')
        .set({ status: 'claimed', job_id: jobId, updated_at: Date.now() })
        .where('batch_id', '=', batchId)
        .where('idx', '=', c.idx)
        .where('status', '=', 'pending')
        .executeTakeFirst();
      if (r.numUpdatedRows > 0n) claimed.push({ ...rowToItem(c), status: 'claimed', jobId });
    }
    return claimed;
  }

  async setStatus(batchId: string, index: number, status: ItemStatus, opts: { error?: JobError; clearJob?: boolean } = {}): Promise<void> {
    await this.db
      .updateTable('batch_items')
      .set({ status, updated_at: Date.now(), ...(opts.error ? { error: JSON.stringify(opts.error) } : {}), ...(opts.clearJob ? { job_id: null } : {}) })
      .where('batch_id', '=', batchId)
      .where('idx', '=', index)
      .execute();
  }

  /** Claims left behind by a pump that stopped: submitted when their job exists, else pending again. */
  async recoverClaims(olderThanMs: number): Promise<number> {
    const stale = await this.db
      .selectFrom('batch_items as i')
      .leftJoin('jobs as j', 'j.id', 'i.job_id')
      .select(['i.batch_id', 'i.idx', 'j.id as job'])
      .where('i.status', '=', 'claimed')
      .where('i.updated_at', '<', Date.now() - olderThanMs)
      .limit(500)
      .execute();
    for (const s of stale) {
      await this.db
        .updateTable('batch_items')
        .set(s.job ? { status: 'submitted', updated_at: Date.now() } : { status: 'pending', job_id: null, updated_at: Date.now() })
        .where('batch_id', '=', s.batch_id)
        .where('idx', '=', s.idx)
        .where('status', '=', 'claimed')
        .execute();
    }
    return stale.length;
  }

  async markCompleted(batchId: string): Promise<boolean> {
    const r = await this.db.updateTable('batches').set({ status: 'completed', completed_at: Date.now() }).where('id', '=', batchId).where('status', '=', 'in_progress').executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  /** Cancels the batch: waiting requests end canceled; returns the jobs still queued or running. */
  async cancel(batchId: string): Promise<string[]> {
    const now = Date.now();
    await this.db.updateTable('batches').set({ status: 'canceled', canceled_at: now }).where('id', '=', batchId).where('status', '=', 'in_progress').execute();
    await this.db.updateTable('batch_items').set({ status: 'canceled', updated_at: now }).where('batch_id', '=', batchId).where('status', '=', 'pending').execute();
    const active = await this.db
      .selectFrom('batch_items as i')
      .innerJoin('jobs as j', 'j.id', 'i.job_id')
      .select('j.id')
      .where('i.batch_id', '=', batchId)
      .where('j.status', 'in', ['queued', 'running'])
      .execute();
    return active.map((a) => a.id);
  }

  async results(batchId: string, afterIndex: number, limit: number): Promise<{ items: ItemResult[]; hasMore: boolean }> {
    const rows = await this.db
      .selectFrom('batch_items as i')
      .leftJoin('jobs as j', 'j.id', 'i.job_id')
      .select(['i.idx', 'i.custom_id', 'i.status', 'i.job_id', 'i.error', 'j.status as job_status', 'j.error as job_error', 'j.cost_usd'])
      .where('i.batch_id', '=', batchId)
      .where('i.idx', '>', afterIndex)
      .orderBy('i.idx')
      .limit(limit + 1)
      .execute();
    const items = rows.slice(0, limit).map((r): ItemResult => ({
      index: r.idx,
      customId: r.custom_id,
      status: r.status === 'submitted' ? (r.job_status ?? 'queued') : r.status === 'claimed' ? 'pending' : r.status,
      jobId: r.status === 'submitted' ? r.job_id : null,
      error: r.job_error ? (JSON.parse(r.job_error) as JobError) : r.error ? (JSON.parse(r.error) as JobError) : null,
      costUsd: r.cost_usd,
    }));
    return { items, hasMore: rows.length > limit };
  }
}
