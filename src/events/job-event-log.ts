/**
 * `job_events` (migration 003) over Kysely, for SQLite and Postgres: the recorded events of a job
 * (partial images) that a reconnecting event stream replays. One statement both checks that the
 * reporting attempt still runs the job and numbers the event, so a stale attempt records nothing and
 * ids follow the order of the rows.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';
import type { MetadataDb } from '../store/database.ts';
import type { Database, Row } from '../store/schema.ts';
import { isUniqueViolation } from '../store/sql-job-store.ts';
import { RECORDED_BAND, RUNNING_PHASE_BASE } from './event-ids.ts';
import { partialImageData } from './job-events.ts';
import type { JobEventLog, PartialImageEvent, RecordedJobEvent } from './job-events.ts';

/** A `job_events` row as the event it recorded. */
function rowToEvent(r: Pick<Row<'job_events'>, 'event_id' | 'type' | 'data'>): RecordedJobEvent {
  return { id: r.event_id, type: r.type, data: JSON.parse(r.data) as Record<string, unknown> };
}

export class SqlJobEventLog implements JobEventLog {
  private readonly db: Kysely<Database>;

  constructor(mdb: MetadataDb) {
    this.db = mdb.db;
  }

  async append(event: PartialImageEvent): Promise<number | undefined> {
    const data = JSON.stringify(partialImageData(event));
    // Two attempts of one job only overlap while a lease changes hands; the loser of the key retries.
    for (let tries = 0; ; tries++) {
      try {
        const res = await sql<Pick<Row<'job_events'>, 'event_id'>>`
          insert into job_events (job_id, event_id, type, data, created_at)
          select j.id,
                 ${sql.lit(RUNNING_PHASE_BASE)} + ${sql.lit(RECORDED_BAND)} * (1 + (select count(*) from job_events e where e.job_id = j.id)),
                 cast(${event.type} as text),
                 cast(${data} as text),
                 cast(${event.at} as bigint)
          from jobs j
          where j.id = ${event.jobId} and j.status = 'running' and j.attempt = ${event.attempt}
          returning event_id`.execute(this.db);
        const row = res.rows[0];
        return row?.event_id;
      } catch (err) {
        if (tries < 3 && isUniqueViolation(err)) continue;
        throw err;
      }
    }
  }

  async listAfter(jobId: string, afterId: number): Promise<RecordedJobEvent[]> {
    const rows = await this.db
      .selectFrom('job_events')
      .select(['event_id', 'type', 'data'])
      .where('job_id', '=', jobId)
      .where('event_id', '>', afterId)
      .orderBy('event_id')
      .execute();
    return rows.map(rowToEvent);
  }
}
