/**
 * The `job_costs` table: what admission decided about a job (routing, estimate, reservation, cache
 * policy and hit, the draft it refines, its batch), GPU time measured by self-hosted backends, and
 * fallbacks taken at run time. Most jobs need no row; a process remembers the jobs it admitted
 * without one, so its own worker and its 202 answers skip the read.
 */
import type { Kysely } from 'kysely';
import type { Job } from '../core/job.ts';
import type { MetadataDb } from '../store/database.ts';
import type { Database, NewRow, Row } from '../store/schema.ts';
import type { RoutingRecord } from '../routing/router.ts';
import { TurnBatcher } from '../core/turn-batcher.ts';

type GpuTimeRow = NewRow<'job_costs'> & { backend: string; backend_model: string; images: number; megapixels: number; gpu_seconds: number; self_hosted: number };

/** A `job_costs` row: read as it is (settlement, fallbacks, the API's job extras use its columns). */
export type JobCostRow = Row<'job_costs'>;

/** What admission decided, for the row. */
export interface AdmissionRecord {
  requestedModel: string | null;
  /** Kept only when routing chose something worth showing (an alias, a fallback, a candidate). */
  routing: RoutingRecord | null;
  estimateUsd: number;
  reserved: boolean;
  cachePolicy: string;
  embedding: string | null;
  hit: { kind: string; sourceJobId: string | null; similarity?: number; savedUsd: number | null } | null;
  parent: { jobId: string; index: number } | null;
  batchId: string | null;
}

/** A nullable number column of a row that may itself be absent, as null (the API's job extras). */
export const num = (v: number | null | undefined): number | null => v ?? null;

/** The row admission writes for a job. */
function admissionRow(job: Job, a: AdmissionRecord): NewRow<'job_costs'> {
  return {
    job_id: job.id,
    key_id: job.keyId,
    requested_model: a.requestedModel,
    routing: a.routing ? JSON.stringify(a.routing) : null,
    estimate_usd: a.estimateUsd,
    reserved: a.reserved ? 1 : 0,
    cache_policy: a.cachePolicy,
    embedding: a.embedding,
    cache_kind: a.hit?.kind ?? null,
    cache_source_job: a.hit?.sourceJobId ?? null,
    cache_similarity: a.hit?.similarity ?? null,
    saved_usd: a.hit ? a.hit.savedUsd : null,
    self_hosted: 0,
    parent_job_id: a.parent?.jobId ?? null,
    parent_index: a.parent?.index ?? null,
    batch_id: a.batchId,
    created_at: job.createdAt.getTime(),
  };
}

export class JobCosts {
  private readonly db: Kysely<Database>;
  /**
   * Jobs admitted by this process with nothing worth a row: a worker in the same process
   * (`easel serve`) and the 202 answer then skip reading one. Bounded; other processes just read.
   */
  private readonly rowless = new Set<string>();
  /**
   * Rows this process wrote whole (a rowless job's GPU time): the end of the job reads them from
   * here. Bounded; other processes just read.
   */
  private readonly written = new Map<string, JobCostRow>();
  /**
   * Whether a write issued in the same turn of the event loop as another commits in the same
   * transaction (SQLite's group commit, src/store/sqlite-group-commit.ts), so a job's GPU time and
   * its completion can be sent together and still become visible together.
   */
  readonly commitsWithinTurn: boolean;

  /**
   * Postgres: the GPU-time rows of one turn go as one multi-row upsert (one statement per job made
   * them most of Postgres's statements per job). SQLite writes each at once, inside the group commit.
   */
  private readonly gpuTimes: TurnBatcher<GpuTimeRow, undefined> | undefined;

  constructor(mdb: MetadataDb) {
    this.db = mdb.db;
    this.commitsWithinTurn = mdb.dialect === 'sqlite';
    this.gpuTimes = this.commitsWithinTurn
      ? undefined
      : new TurnBatcher<GpuTimeRow, undefined>({ key: (row) => row.job_id, run: async (rows) => (await this.upsertGpuTimes(rows), rows.map(() => undefined)) });
  }

  private async upsertGpuTimes(rows: GpuTimeRow[]): Promise<void> {
    await this.db
      .insertInto('job_costs')
      .values(rows)
      .onConflict((oc) =>
        oc.column('job_id').doUpdateSet((eb) => ({
          backend: eb.ref('excluded.backend'),
          backend_model: eb.ref('excluded.backend_model'),
          images: eb.ref('excluded.images'),
          megapixels: eb.ref('excluded.megapixels'),
          gpu_seconds: eb.ref('excluded.gpu_seconds'),
          self_hosted: eb.ref('excluded.self_hosted'),
        })),
      )
      .execute();
  }

  /** Writes the admission's row when there is anything to keep; remembers the job as rowless otherwise. */
  async recordAdmission(job: Job, a: AdmissionRecord): Promise<void> {
    const keep = !!a.routing || a.reserved || !!a.hit || !!a.batchId || !!a.parent || a.cachePolicy !== 'auto' || !!a.embedding;
    if (!keep) {
      this.rowless.add(job.id);
      if (this.rowless.size > 50_000) this.rowless.delete(this.rowless.values().next().value!);
      return;
    }
    await this.db
      .insertInto('job_costs')
      .values(admissionRow(job, a))
      .onConflict((oc) => oc.column('job_id').doNothing())
      .execute();
  }

  /** Whether this process knows the job has no row (and so `get` needs no read). */
  knownRowless(jobId: string): boolean {
    return this.rowless.has(jobId);
  }

  /** Forgets a rowless job once its end has been handled. */
  forget(jobId: string): boolean {
    this.written.delete(jobId);
    return this.rowless.delete(jobId);
  }

  async get(jobId: string): Promise<JobCostRow | undefined> {
    if (this.rowless.has(jobId)) return undefined;
    const written = this.written.get(jobId);
    if (written) return written;
    return this.db.selectFrom('job_costs').selectAll().where('job_id', '=', jobId).executeTakeFirst();
  }

  /** A cache hit that could not be served after all: the job runs, so the row stops claiming a hit. */
  async clearHit(jobId: string): Promise<void> {
    await this.db.updateTable('job_costs').set({ cache_kind: null, cache_source_job: null, cache_similarity: null, saved_usd: null }).where('job_id', '=', jobId).execute();
  }

  /** Records a move down the job's fallback chain. */
  async recordRouting(job: Job, record: RoutingRecord): Promise<void> {
    this.rowless.delete(job.id);
    this.written.delete(job.id);
    const routing = JSON.stringify(record);
    await this.db
      .insertInto('job_costs')
      .values({ job_id: job.id, key_id: job.keyId, requested_model: job.model, routing, reserved: 0, self_hosted: 0, created_at: job.createdAt.getTime() })
      .onConflict((oc) => oc.column('job_id').doUpdateSet({ routing }))
      .execute();
  }

  /** Self-hosted work: the GPU time it measured, on record before the job shows as succeeded. */
  async recordGpuTime(job: Job, values: { backend: string; backendModel: string; images: number; megapixels: number; gpuSeconds: number }): Promise<void> {
    const wasRowless = this.rowless.delete(job.id);
    this.written.delete(job.id);
    const row = { backend: values.backend, backend_model: values.backendModel, images: values.images, megapixels: values.megapixels, gpu_seconds: values.gpuSeconds, self_hosted: 1 };
    // No row before this one: the row is exactly what is written (the table's defaults elsewhere).
    // Known at once, so the job's end, committed in the same transaction, need not read it.
    if (wasRowless) {
      this.written.set(job.id, {
        job_id: job.id, key_id: job.keyId, requested_model: null, routing: null, estimate_usd: null, reserved: 0, cache_policy: null, embedding: null,
        cache_kind: null, cache_source_job: null, cache_similarity: null, saved_usd: null, ...row, parent_job_id: null, parent_index: null, batch_id: null,
        created_at: job.createdAt.getTime(),
      });
      if (this.written.size > 10_000) this.written.delete(this.written.keys().next().value!);
    }
    try {
      const full: GpuTimeRow = { job_id: job.id, key_id: job.keyId, reserved: 0, created_at: job.createdAt.getTime(), ...row };
      if (this.gpuTimes) await this.gpuTimes.call(full);
      else await this.upsertGpuTimes([full]);
    } catch (err) {
      this.written.delete(job.id);
      throw err;
    }
  }

  /** Jobs that refine this one (draft → refine links). */
  async refinements(jobId: string, limit = 50): Promise<string[]> {
    const rows = await this.db.selectFrom('job_costs').select(['job_id']).where('parent_job_id', '=', jobId).orderBy('job_id').limit(limit).execute();
    return rows.map((r) => r.job_id);
  }
}
