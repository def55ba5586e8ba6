/**
 * Events of a job that its row cannot hold, kept so an event stream that reconnects with
 * `Last-Event-ID` misses none: today the partial images a backend reports while running. Status and
 * progress are not here (they are derived from the job row). `event_id` is the event's id on the
 * stream (see src/events/event-ids.ts); rows are written only by the attempt running the job.
 */
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable('job_events')
    .addColumn('job_id', 'text', (c) => c.notNull())
    .addColumn('event_id', 'bigint', (c) => c.notNull())
    .addColumn('type', 'text', (c) => c.notNull())
    // The event's data on the stream, as JSON.
    .addColumn('data', 'text', (c) => c.notNull())
    .addColumn('created_at', 'bigint', (c) => c.notNull())
    .addPrimaryKeyConstraint('job_events_pk', ['job_id', 'event_id'])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable('job_events').ifExists().execute();
}
