/**
 * The metadata database as the migrations in ./migrations leave it (001–012): every table and column,
 * for `Kysely<Database>`. A migration that adds or changes a column changes this file too;
 * tests/store/schema.test.ts compares it with a freshly migrated SQLite and Postgres database.
 *
 * Types are what either driver returns (see database.ts):
 * - BIGINT columns (epoch-millisecond timestamps, micro-dollars, byte counts, sequence numbers) are
 *   `number`: SQLite returns numbers, and pg's BIGINT and NUMERIC parsers are set to `Number`.
 * - INTEGER 0/1 flags are `number`, DOUBLE PRECISION is `number`.
 * - JSON is `string` (TEXT); the row mappers beside each store parse it.
 * - A TEXT column holding one of a closed set of values (a job's status, a batch item's state…) is
 *   typed with that set, so a write of anything else does not compile; every writer goes through this
 *   interface or writes a literal in a raw statement of the same store.
 * - `Generated<T>`: a NOT NULL column with a default, optional on insert. Nullable columns are
 *   optional on insert as they are (Kysely inserts NULL for them).
 *
 * Migrations do not use these types: each sees the schema as it was before it (migrations/index.ts).
 */
import type { Generated, Insertable, Selectable } from 'kysely';
import type { JobKind, JobStatus, Priority } from '../core/job.ts';
import type { RecordedJobEvent } from '../events/job-events.ts';
import type { DeliveryStatus } from '../webhooks/delivery-store.ts';
import type { ReservationStatus } from '../budgets/ledger.ts';
import type { BatchStatus, ItemStatus } from '../batches/batch-store.ts';

/** `jobs` (001; `webhook_swept_at` from 004, `idempotency_fingerprint` from 005). */
export interface JobsTable {
  id: string;
  key_id: string;
  kind: JobKind;
  status: JobStatus;
  priority: Priority;
  model: string;
  backend: string | null;
  /** JSON: the ImageRequest. */
  request: string;
  progress: Generated<number>;
  attempt: Generated<number>;
  /** JSON: JobError. */
  error: string | null;
  /** JSON: JobResult. */
  result: string | null;
  /** JSON: Record<string, string>. */
  metadata: string | null;
  webhook_url: string | null;
  idempotency_key: string | null;
  /** 0/1. */
  cancel_requested: Generated<number>;
  /** JSON: whatever the backend saved. */
  backend_state: string | null;
  cost_usd: number | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
  webhook_swept_at: number | null;
  idempotency_fingerprint: string | null;
}

/** `images` (001; `thumb_key` from 009). */
export interface ImagesTable {
  id: string;
  job_id: string;
  key_id: string;
  idx: number;
  storage_key: string;
  media_type: string;
  width: number;
  height: number;
  bytes: number;
  sha256: string;
  revised_prompt: string | null;
  created_at: number;
  thumb_key: string | null;
}

/** `api_keys` (001). */
export interface ApiKeysTable {
  id: string;
  name: string;
  prefix: string;
  hash: string;
  /** 0/1. */
  admin: Generated<number>;
  created_at: number;
  revoked_at: number | null;
}

/** `queue_messages` (002; `key_id` … `grp_max_running` from 012), the embedded queue. */
export interface QueueMessagesTable {
  job_id: string;
  /** PRIORITY_RANK: lower runs first. */
  priority: number;
  seq: number;
  enqueued_at: number;
  available_at: number;
  lease_owner: string | null;
  lease_until: number | null;
  delivery_count: Generated<number>;
  /** The job's API key ('' for none). */
  key_id: Generated<string>;
  /** The message's turn within its priority (a virtual start time; src/fairness). */
  vtag: Generated<number>;
  max_running: number | null;
  grp: string | null;
  grp_max_running: number | null;
}

/** `job_events` (003). */
export interface JobEventsTable {
  job_id: string;
  event_id: number;
  type: RecordedJobEvent['type'];
  /** JSON: the event's data on the stream. */
  data: string;
  created_at: number;
}

/** `webhook_deliveries` (004). */
export interface WebhookDeliveriesTable {
  id: string;
  job_id: string;
  event_type: string;
  url: string;
  /** The exact body signed and sent. */
  payload: string;
  status: DeliveryStatus;
  attempts: Generated<number>;
  next_attempt_at: number;
  first_attempt_at: number | null;
  last_error: string | null;
  lease_owner: string | null;
  lease_until: number | null;
  created_at: number;
  delivered_at: number | null;
  updated_at: number;
}

/** `webhook_attempts` (004). */
export interface WebhookAttemptsTable {
  delivery_id: string;
  attempt: number;
  at: number;
  status_code: number | null;
  error: string | null;
  duration_ms: number;
}

/** `leases` (006). */
export interface LeasesTable {
  name: string;
  owner: string | null;
  lease_until: Generated<number>;
  last_run_at: number | null;
  last_finished_at: number | null;
  /** JSON: what the last run reported. */
  last_result: string | null;
  updated_at: number;
}

/** `budget_ledger` (007). */
export interface BudgetLedgerTable {
  scope: string;
  period: string;
  spent_micros: Generated<number>;
  reserved_micros: Generated<number>;
  updated_at: number;
}

/** `budget_reservations` (007). */
export interface BudgetReservationsTable {
  job_id: string;
  key_id: string;
  /** JSON: [[scope, period], …]. */
  rows: string;
  amount_micros: number;
  status: ReservationStatus;
  charged_micros: number | null;
  actual_micros: number | null;
  created_at: number;
  settled_at: number | null;
}

/** `job_costs` (007). */
export interface JobCostsTable {
  job_id: string;
  key_id: string;
  requested_model: string | null;
  /** JSON: RoutingRecord. */
  routing: string | null;
  estimate_usd: number | null;
  /** 0/1. */
  reserved: Generated<number>;
  cache_policy: string | null;
  embedding: string | null;
  cache_kind: string | null;
  cache_source_job: string | null;
  cache_similarity: number | null;
  saved_usd: number | null;
  backend: string | null;
  backend_model: string | null;
  images: number | null;
  megapixels: number | null;
  gpu_seconds: number | null;
  /** 0/1. */
  self_hosted: Generated<number>;
  parent_job_id: string | null;
  parent_index: number | null;
  batch_id: string | null;
  created_at: number;
}

/** `image_cache` (007). */
export interface ImageCacheTable {
  id: string;
  cache_key: string;
  params_key: string;
  job_id: string;
  key_id: string;
  model: string;
  prompt: string;
  /** `<embedder id>|<base64 float32s>` (semantic cache), or null. */
  embedding: string | null;
  cost_usd: number | null;
  hits: Generated<number>;
  created_at: number;
  expires_at: number;
}

/** `batches` (008; `idempotency_fingerprint` from 010). */
export interface BatchesTable {
  id: string;
  key_id: string;
  status: BatchStatus;
  total: number;
  priority: Priority;
  hourly_cap_usd: number | null;
  /** JSON: Record<string, string>. */
  metadata: string | null;
  idempotency_key: string | null;
  created_at: number;
  canceled_at: number | null;
  completed_at: number | null;
  idempotency_fingerprint: string | null;
}

/** `batch_items` (008). */
export interface BatchItemsTable {
  batch_id: string;
  idx: number;
  custom_id: string | null;
  /** JSON: ItemBody. */
  body: string;
  status: ItemStatus;
  job_id: string | null;
  /** JSON: JobError. */
  error: string | null;
  updated_at: number;
}

export interface Database {
  jobs: JobsTable;
  images: ImagesTable;
  api_keys: ApiKeysTable;
  queue_messages: QueueMessagesTable;
  job_events: JobEventsTable;
  webhook_deliveries: WebhookDeliveriesTable;
  webhook_attempts: WebhookAttemptsTable;
  leases: LeasesTable;
  budget_ledger: BudgetLedgerTable;
  budget_reservations: BudgetReservationsTable;
  job_costs: JobCostsTable;
  image_cache: ImageCacheTable;
  batches: BatchesTable;
  batch_items: BatchItemsTable;
}

/** A row of `T` as a select returns it. */
export type Row<T extends keyof Database> = Selectable<Database[T]>;
/** The values of a new row of `T`. */
export type NewRow<T extends keyof Database> = Insertable<Database[T]>;
