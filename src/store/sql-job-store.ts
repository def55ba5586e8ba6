/**
 * JobStore over Kysely, for SQLite and Postgres alike. Every state change is one conditional UPDATE
 * (status and attempt in the WHERE clause) with RETURNING where the caller needs the row, so two
 * workers or a worker and a cancel can race without either finishing a job twice. completeJob is the
 * one place that needs a transaction: the winning UPDATE and its image rows commit together.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import { JOB_STATUSES } from '../core/job.ts';
import type { ImageRequest } from '../core/image-request.ts';
import type { Job, JobError, JobResult, JobStatus, NewJob, Priority, StoredImage } from '../core/job.ts';
import type { MetadataDb } from './database.ts';
import type { Database, JobsTable, NewRow, Row } from './schema.ts';
import { rawStatement, rawStatementPerRows, valuesList } from './raw-statement.ts';
import type { RawStatement } from './raw-statement.ts';
import { TurnBatcher } from '../core/turn-batcher.ts';
import type { CancelOutcome, CompleteJob, ImagePage, JobPage, JobStore, ListImagesQuery, ListJobsQuery } from './job-store.ts';

const ACTIVE = ['queued', 'running'] as const satisfies readonly JobStatus[];

const parseJson = <T>(text: string | null): T | null => (text == null ? null : (JSON.parse(text) as T));
const toJson = (value: unknown): string | null => (value === undefined || value === null ? null : JSON.stringify(value));
const toDate = (v: number | null): Date | null => (v == null ? null : new Date(v));

/** A `jobs` row as the job it holds (the one place a job is read from a row). */
export function rowToJob(r: Row<'jobs'>): Job {
  return {
    id: r.id,
    keyId: r.key_id,
    kind: r.kind,
    status: r.status,
    priority: r.priority,
    model: r.model,
    backend: r.backend,
    request: JSON.parse(r.request) as ImageRequest,
    progress: r.progress,
    attempt: r.attempt,
    error: parseJson<JobError>(r.error),
    result: parseJson<JobResult>(r.result),
    metadata: parseJson<Record<string, string>>(r.metadata),
    webhookUrl: r.webhook_url,
    idempotencyKey: r.idempotency_key,
    idempotencyFingerprint: r.idempotency_fingerprint,
    cancelRequested: r.cancel_requested === 1,
    backendState: parseJson<unknown>(r.backend_state),
    costUsd: r.cost_usd,
    createdAt: new Date(r.created_at),
    startedAt: toDate(r.started_at),
    finishedAt: toDate(r.finished_at),
    updatedAt: new Date(r.updated_at),
  };
}

/** An `images` row as the stored image it describes. */
export function rowToImage(r: Row<'images'>): StoredImage {
  return {
    id: r.id,
    jobId: r.job_id,
    keyId: r.key_id,
    index: r.idx,
    storageKey: r.storage_key,
    mediaType: r.media_type,
    width: r.width,
    height: r.height,
    bytes: r.bytes,
    sha256: r.sha256,
    revisedPrompt: r.revised_prompt,
    ...(r.thumb_key ? { thumbKey: r.thumb_key } : {}),
    createdAt: new Date(r.created_at),
  };
}

/** A stored image as its `images` row (every column, so the positional VALUES below can rely on it). */
function imageToRow(i: StoredImage): NewRow<'images'> {
  return {
    id: i.id,
    job_id: i.jobId,
    key_id: i.keyId,
    idx: i.index,
    storage_key: i.storageKey,
    media_type: i.mediaType,
    width: i.width,
    height: i.height,
    bytes: i.bytes,
    sha256: i.sha256,
    revised_prompt: i.revisedPrompt ?? null,
    thumb_key: i.thumbKey ?? null,
    created_at: i.createdAt.getTime(),
  };
}

/**
 * True for a unique-constraint violation from either database, e.g. a second createJob with the same
 * (key, idempotency key): the caller then looks the first job up with findByIdempotencyKey.
 */
export function isUniqueViolation(err: unknown): boolean {
  if (!err || typeof err !== 'object') return false;
  const e = err as { code?: unknown; message?: unknown };
  if (e.code === '23505') return true; // Postgres unique_violation
  if (typeof e.code === 'string' && e.code.startsWith('SQLITE_CONSTRAINT_UNIQUE')) return true;
  if (typeof e.code === 'string' && e.code.startsWith('SQLITE_CONSTRAINT_PRIMARYKEY')) return true;
  return typeof e.message === 'string' && /UNIQUE constraint failed/.test(e.message);
}

const CREATED_KEPT = 5000;

/** The columns of a new job that the insert statements take as parameters, in their order (the rest are literals). */
const JOB_KEYS = ['id', 'key_id', 'kind', 'priority', 'model', 'request', 'metadata', 'webhook_url', 'idempotency_key', 'idempotency_fingerprint', 'created_at', 'updated_at'] as const satisfies readonly (keyof JobsTable)[];
/** The values of `columns` of a row, in their order. */
type ValuesOf<R, K extends readonly (keyof R)[]> = { -readonly [I in keyof K]: R[K[I] & keyof R] };
/** A new job's parameters, JOB_KEYS order. */
type JobInsertValues = ValuesOf<Row<'jobs'>, typeof JOB_KEYS>;

interface PostgresBatchers {
  insertJob: TurnBatcher<JobInsertValues, undefined>;
  startAttempt: TurnBatcher<{ id: string; backend: string | null; now: number }, Row<'jobs'> | undefined>;
  completeJob: TurnBatcher<{ id: string; attempt: number; done: CompleteJob & { finishedAt: number } }, boolean>;
}

/**
 * The three statements every job runs, each taking a whole group as one JSON parameter. The job
 * insert's values are in insertJob's order (id … updated_at). Completion is one statement too (a
 * data-modifying CTE), so it needs no BEGIN/COMMIT: the winners' status change and their image rows
 * commit together, and a job that lost (canceled, or a stale attempt) gets neither.
 */
function postgresBatchers(db: Kysely<Database>, one: { insertJob: RawStatement; startAttempt: RawStatement }): PostgresBatchers {
  const insert = rawStatement(
    'postgres',
    `insert into jobs (id, key_id, kind, status, priority, model, backend, request, progress, attempt, error, result, metadata,
       webhook_url, idempotency_key, idempotency_fingerprint, cancel_requested, backend_state, cost_usd, created_at, started_at, finished_at, updated_at)
     select id, key_id, kind, 'queued', priority, model, null, request, 0, 0, null, null, metadata,
       webhook_url, idempotency_key, idempotency_fingerprint, 0, null, null, created_at, null, null, updated_at
     from json_populate_recordset(null::jobs, ?::json)`,
  );
  const start = rawStatement(
    'postgres',
    `update jobs j set status = 'running', attempt = j.attempt + 1, backend = v.backend, started_at = coalesce(j.started_at, v.now), updated_at = v.now
     from json_to_recordset(?::json) as v(id text, backend text, now bigint)
     where j.id = v.id and j.status in ('queued', 'running') returning j.*`,
  );
  const complete = rawStatement(
    'postgres',
    `with v as (select * from json_to_recordset(?::json) as v(id text, attempt integer, result text, cost_usd double precision, finished_at bigint)),
     won as (
       update jobs j set status = 'succeeded', result = v.result, cost_usd = v.cost_usd, progress = 1, finished_at = v.finished_at, updated_at = v.finished_at
       from v where j.id = v.id and j.status = 'running' and j.attempt = v.attempt and j.cancel_requested = 0
       returning j.id
     ),
     ins as (
       insert into images (${IMAGE_COLUMNS.join(', ')})
       select ${IMAGE_COLUMNS.join(', ')} from json_populate_recordset(null::images, ?::json) i where i.job_id in (select id from won)
     )
     select id from won`,
  );
  // A group of one (any sync request at a modest rate) takes plain parameters instead: the JSON forms
  // cost Postgres ~0.15 ms more to plan and run, and a round trip ~0.4 ms more when it was idle.
  const completeOneFor = rawStatementPerRows(
    'postgres',
    (images) => `with won as (
       update jobs set status = 'succeeded', result = ?, cost_usd = ?, progress = 1, finished_at = ?, updated_at = ?
       where id = ? and status = 'running' and attempt = ? and cancel_requested = 0 returning id
     )${images ? `, ins as (
       insert into images (${IMAGE_COLUMNS.join(', ')})
       select * from (values ${valuesList(images, IMAGE_CASTS)}) as v where exists (select 1 from won)
     )` : ''}
     select id from won`,
  );
  return {
    insertJob: new TurnBatcher({
      key: (values) => values[0],
      run: async (rows) => {
        if (rows.length === 1) await one.insertJob(db, rows[0]!);
        else await insert(db, [JSON.stringify(rows.map((values) => Object.fromEntries(JOB_KEYS.map((k, i) => [k, values[i]]))))]);
        return rows.map(() => undefined);
      },
    }),
    startAttempt: new TurnBatcher({
      key: (c) => c.id,
      run: async (calls) => {
        if (calls.length === 1) {
          const { id, backend, now } = calls[0]!;
          return [(await one.startAttempt<Row<'jobs'>>(db, [backend, now, now, id])).rows[0]];
        }
        const { rows } = await start<Row<'jobs'>>(db, [JSON.stringify(calls)]);
        const byId = new Map(rows.map((r) => [r.id, r]));
        return calls.map((c) => byId.get(c.id));
      },
    }),
    completeJob: new TurnBatcher({
      key: (c) => c.id,
      run: async (calls) => {
        if (calls.length === 1) {
          const { id, attempt, done } = calls[0]!;
          const { rows } = await completeOneFor(done.images.length)(db, [JSON.stringify(done.result), done.costUsd ?? null, done.finishedAt, done.finishedAt, id, attempt, ...imageValues(done.images)]);
          return [rows.length > 0];
        }
        const jobs = calls.map(({ id, attempt, done }) => ({ id, attempt, result: JSON.stringify(done.result), cost_usd: done.costUsd ?? null, finished_at: done.finishedAt }));
        const images = calls.flatMap(({ done }) => done.images.map(imageToRow));
        const { rows } = await complete<{ id: string }>(db, [JSON.stringify(jobs), JSON.stringify(images)]);
        const won = new Set(rows.map((r) => r.id));
        return calls.map((c) => won.has(c.id));
      },
    }),
  };
}

const IMAGE_COLUMNS = ['id', 'job_id', 'key_id', 'idx', 'storage_key', 'media_type', 'width', 'height', 'bytes', 'sha256', 'revised_prompt', 'thumb_key', 'created_at'] as const;
/** The images' rows as one flat parameter list, IMAGE_COLUMNS order, for a multi-row VALUES. */
const imageValues = (images: StoredImage[]): unknown[] =>
  images.flatMap((i) => {
    const row = imageToRow(i);
    return IMAGE_COLUMNS.map((c) => row[c] ?? null);
  });
/** Postgres types of IMAGE_COLUMNS, for parameters in a VALUES list (which has no column to infer them from). */
const IMAGE_CASTS = ['text', 'text', 'text', 'integer', 'text', 'text', 'integer', 'integer', 'bigint', 'text', 'text', 'text', 'bigint'] as const;

export class SqlJobStore implements JobStore {
  private readonly db: Kysely<Database>;
  private readonly dialect: MetadataDb['dialect'];

  /**
   * Jobs created here and not yet taken by a worker here (see takeCreated); oldest first, bounded.
   * Sized for a few seconds of backlog at full speed (a job is ~1 KB here), since a backlog is
   * exactly when the reads it saves matter; a job that fell out is read from the database instead.
   */
  private readonly created = new Map<string, Job>();

  /** The statements every job runs, as fixed SQL text (see raw-statement.ts). */
  private readonly sql: {
    insertJob: RawStatement;
    startAttempt: RawStatement;
    completeJob: RawStatement;
    /** By number of images. */
    insertImages: (rows: number) => RawStatement;
  };

  /** On Postgres, the per-job statements of one event-loop turn share a statement (turn-batcher.ts). */
  private readonly pg: PostgresBatchers | undefined;

  constructor(mdb: MetadataDb) {
    this.db = mdb.db;
    this.dialect = mdb.dialect;
    const d = mdb.dialect;
    this.sql = {
      insertJob: rawStatement(
        d,
        `insert into jobs (id, key_id, kind, status, priority, model, backend, request, progress, attempt, error, result, metadata,
           webhook_url, idempotency_key, idempotency_fingerprint, cancel_requested, backend_state, cost_usd, created_at, started_at, finished_at, updated_at)
         values (?, ?, ?, 'queued', ?, ?, null, ?, 0, 0, null, null, ?, ?, ?, ?, 0, null, null, ?, null, null, ?)`,
      ),
      startAttempt: rawStatement(
        d,
        `update jobs set status = 'running', attempt = attempt + 1, backend = ?, started_at = coalesce(started_at, ?), updated_at = ?
         where id = ? and status in ('queued', 'running') returning *`,
      ),
      completeJob: rawStatement(
        d,
        `update jobs set status = 'succeeded', result = ?, cost_usd = ?, progress = 1, finished_at = ?, updated_at = ?
         where id = ? and status = 'running' and attempt = ? and cancel_requested = 0`,
      ),
      insertImages: rawStatementPerRows(d, (rows) => `insert into images (${IMAGE_COLUMNS.join(', ')}) values ${valuesList(rows, IMAGE_COLUMNS.length)}`),
    };
    if (d === 'postgres') this.pg = postgresBatchers(this.db, this.sql);
  }

  takeCreated(id: string): Job | undefined {
    const job = this.created.get(id);
    if (job) this.created.delete(id);
    return job;
  }

  async createJob(job: NewJob): Promise<Job> {
    const now = Date.now();
    const requestJson = JSON.stringify(job.request);
    const values: JobInsertValues = [
      job.id,
      job.keyId,
      job.kind,
      job.priority,
      job.model,
      requestJson,
      toJson(job.metadata),
      job.webhookUrl ?? null,
      job.idempotencyKey ?? null,
      job.idempotencyFingerprint ?? null,
      now,
      now,
    ];
    if (this.pg) await this.pg.insertJob.call(values);
    else await this.sql.insertJob(this.db, values);
    // Built from what was written rather than read back: the insert either stored exactly this or threw.
    // The request goes through JSON so the caller gets the same shape getJob would return.
    const created: Job = {
      id: job.id,
      keyId: job.keyId,
      kind: job.kind,
      status: 'queued',
      priority: job.priority,
      model: job.model,
      backend: null,
      request: JSON.parse(requestJson) as ImageRequest,
      progress: 0,
      attempt: 0,
      error: null,
      result: null,
      metadata: job.metadata ? { ...job.metadata } : null,
      webhookUrl: job.webhookUrl ?? null,
      idempotencyKey: job.idempotencyKey ?? null,
      idempotencyFingerprint: job.idempotencyFingerprint ?? null,
      cancelRequested: false,
      backendState: null,
      costUsd: null,
      createdAt: new Date(now),
      startedAt: null,
      finishedAt: null,
      updatedAt: new Date(now),
    };
    if (this.created.size >= CREATED_KEPT) this.created.delete(this.created.keys().next().value!);
    this.created.set(job.id, { ...created, request: JSON.parse(requestJson) as ImageRequest, metadata: created.metadata ? { ...created.metadata } : null });
    return created;
  }

  async getJob(id: string): Promise<Job | undefined> {
    const row = await this.db.selectFrom('jobs').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? rowToJob(row) : undefined;
  }

  async findByIdempotencyKey(keyId: string, idempotencyKey: string): Promise<Job | undefined> {
    const row = await this.db
      .selectFrom('jobs')
      .selectAll()
      .where('key_id', '=', keyId)
      .where('idempotency_key', '=', idempotencyKey)
      .executeTakeFirst();
    return row ? rowToJob(row) : undefined;
  }

  async listJobs(query: ListJobsQuery): Promise<JobPage> {
    const limit = Math.max(1, Math.min(100, Math.floor(query.limit)));
    let q = this.db.selectFrom('jobs').selectAll().where('key_id', '=', query.keyId);
    if (query.status) q = q.where('status', '=', query.status);
    if (query.after) q = q.where('id', '<', query.after);
    const rows = await q.orderBy('id', 'desc').limit(limit + 1).execute();
    const hasMore = rows.length > limit;
    return { jobs: (hasMore ? rows.slice(0, limit) : rows).map(rowToJob), hasMore };
  }

  async startAttempt(id: string, backend: string | null): Promise<Job | undefined> {
    const now = Date.now();
    const row = this.pg ? await this.pg.startAttempt.call({ id, backend, now }) : (await this.sql.startAttempt<Row<'jobs'>>(this.db, [backend, now, now, id])).rows[0];
    return row ? rowToJob(row) : undefined;
  }

  async setProgress(id: string, attempt: number, progress: number): Promise<boolean> {
    const p = Number.isFinite(progress) ? Math.min(1, Math.max(0, progress)) : 0;
    const r = await this.db
      .updateTable('jobs')
      .set({ progress: p, updated_at: Date.now() })
      .where('id', '=', id)
      .where('status', '=', 'running')
      .where('attempt', '=', attempt)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async saveBackendState(id: string, attempt: number, state: unknown): Promise<boolean> {
    const r = await this.db
      .updateTable('jobs')
      .set({ backend_state: toJson(state), updated_at: Date.now() })
      .where('id', '=', id)
      .where('status', '=', 'running')
      .where('attempt', '=', attempt)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async completeJob(id: string, attempt: number, done: CompleteJob): Promise<boolean> {
    const now = done.finishedAt ?? Date.now();
    if (this.pg) return this.pg.completeJob.call({ id, attempt, done: { ...done, finishedAt: now } });
    const win = async (db: Kysely<Database>) =>
      (await this.sql.completeJob(db, [JSON.stringify(done.result), done.costUsd ?? null, now, now, id, attempt])).numAffectedRows! > 0n;
    // Without images there is nothing to commit alongside: one statement, no transaction.
    if (done.images.length === 0) return win(this.db);
    return this.db.transaction().execute(async (trx) => {
      if (!(await win(trx))) return false;
      await this.insertImages(trx, done.images);
      return true;
    });
  }

  private insertImages(db: Kysely<Database>, images: StoredImage[]): Promise<unknown> {
    return this.sql.insertImages(images.length)(db, imageValues(images));
  }

  async failJob(id: string, attempt: number | null, error: JobError): Promise<boolean> {
    const now = Date.now();
    let q = this.db
      .updateTable('jobs')
      .set({ status: 'failed', error: JSON.stringify(error), finished_at: now, updated_at: now })
      .where('id', '=', id)
      .where('status', 'in', ACTIVE);
    if (attempt !== null) q = q.where('attempt', '=', attempt);
    const r = await q.executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async cancelJob(id: string): Promise<CancelOutcome> {
    // One statement decides from the row's current state: queued → canceled, running → cancel
    // requested. SET expressions all see the old row, so the CASEs agree with each other.
    for (let tries = 0; tries < 3; tries++) {
      const now = Date.now();
      const row = await this.db
        .updateTable('jobs')
        .set({
          status: sql`case when status = 'queued' then 'canceled' else status end`,
          cancel_requested: sql`case when status = 'running' then 1 else cancel_requested end`,
          finished_at: sql`case when status = 'queued' then ${now} else finished_at end`,
          updated_at: now,
        })
        .where('id', '=', id)
        .where('status', 'in', ACTIVE)
        .returningAll()
        .executeTakeFirst();
      if (row) {
        const job = rowToJob(row);
        return job.status === 'canceled' ? { outcome: 'canceled', job } : { outcome: 'cancel_requested', job };
      }
      const job = await this.getJob(id);
      if (!job) return { outcome: 'not_found' };
      if (job.status !== 'queued' && job.status !== 'running') return { outcome: 'already_terminal', job };
      // Terminal states never change back, so this only happens if something outside the store
      // re-queued the job between the two statements: decide again.
    }
    throw new Error(`cancelJob(${id}): job kept changing state`);
  }

  async finishCanceled(id: string, attempt: number): Promise<boolean> {
    const now = Date.now();
    const r = await this.db
      .updateTable('jobs')
      .set({ status: 'canceled', finished_at: now, updated_at: now })
      .where('id', '=', id)
      .where('status', '=', 'running')
      .where('attempt', '=', attempt)
      .where('cancel_requested', '=', 1)
      .executeTakeFirst();
    return r.numUpdatedRows > 0n;
  }

  async getImage(id: string): Promise<StoredImage | undefined> {
    const row = await this.db.selectFrom('images').selectAll().where('id', '=', id).executeTakeFirst();
    return row ? rowToImage(row) : undefined;
  }

  async listImagesForJob(jobId: string): Promise<StoredImage[]> {
    const rows = await this.db.selectFrom('images').selectAll().where('job_id', '=', jobId).orderBy('idx').execute();
    return rows.map(rowToImage);
  }

  async listImages(query: ListImagesQuery): Promise<ImagePage> {
    const limit = Math.max(1, Math.min(100, Math.floor(query.limit)));
    let q = this.db
      .selectFrom('images as i')
      .innerJoin('jobs as j', 'j.id', 'i.job_id')
      .selectAll('i')
      .where('i.key_id', '=', query.keyId);
    if (query.after) {
      const cursor = await this.db.selectFrom('images').select(['job_id', 'idx']).where('id', '=', query.after).where('key_id', '=', query.keyId).executeTakeFirst();
      if (!cursor) return { items: [], hasMore: false };
      q = q.where((eb) => eb.or([eb('i.job_id', '<', cursor.job_id), eb.and([eb('i.job_id', '=', cursor.job_id), eb('i.idx', '>', cursor.idx)])]));
    }
    if (query.model) q = q.where('j.model', '=', query.model);
    if (query.createdFrom !== undefined) q = q.where('i.created_at', '>=', query.createdFrom);
    if (query.createdTo !== undefined) q = q.where('i.created_at', '<', query.createdTo);
    if (query.prompt) {
      // A substring of the prompt only (not of the rest of the stored request), case-insensitive, with
      // LIKE's wildcards in the search text taken literally.
      const pattern = `%${query.prompt.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
      q = this.dialect === 'postgres'
        ? q.where(sql<boolean>`(j.request::json ->> 'prompt') ilike ${pattern} escape '\\'`)
        : q.where(sql<boolean>`lower(json_extract(j.request, '$.prompt')) like lower(${pattern}) escape '\\'`);
    }
    const rows = await q.orderBy('i.job_id', 'desc').orderBy('i.idx', 'asc').limit(limit + 1).execute();
    const hasMore = rows.length > limit;
    const images = (hasMore ? rows.slice(0, limit) : rows).map(rowToImage);
    const jobIds = [...new Set(images.map((i) => i.jobId))];
    const jobs = jobIds.length ? (await this.db.selectFrom('jobs').selectAll().where('id', 'in', jobIds).execute()).map(rowToJob) : [];
    const byId = new Map(jobs.map((j) => [j.id, j]));
    return { items: images.flatMap((image) => (byId.has(image.jobId) ? [{ image, job: byId.get(image.jobId)! }] : [])), hasMore };
  }

  async countByStatus(keyId?: string): Promise<Record<JobStatus, number>> {
    let q = this.db.selectFrom('jobs').select(['status', (eb) => eb.fn.countAll<number>().as('n')]);
    if (keyId !== undefined) q = q.where('key_id', '=', keyId);
    const rows = await q.groupBy('status').execute();
    const counts = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0])) as Record<JobStatus, number>;
    for (const r of rows) {
      if (r.status in counts) counts[r.status] = r.n;
    }
    return counts;
  }

  async countActiveByModel(keyId?: string): Promise<{ model: string; status: 'queued' | 'running'; count: number }[]> {
    let q = this.db
      .selectFrom('jobs')
      .select(['model', 'status', (eb) => eb.fn.countAll<number>().as('n')])
      .where('status', 'in', ACTIVE)
      .$narrowType<{ status: (typeof ACTIVE)[number] }>();
    if (keyId !== undefined) q = q.where('key_id', '=', keyId);
    const rows = await q.groupBy(['model', 'status']).execute();
    return rows.map((r) => ({ model: r.model, status: r.status, count: r.n }));
  }

  async listUnfinished(limit: number, after?: string): Promise<{ id: string; priority: Priority; keyId: string }[]> {
    let q = this.db.selectFrom('jobs').select(['id', 'priority', 'key_id as keyId']).where('status', 'in', ACTIVE);
    if (after) q = q.where('id', '>', after);
    return q.orderBy('id', 'asc').limit(limit).execute();
  }
}
