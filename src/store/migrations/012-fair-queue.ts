/**
 * Fair sharing on the embedded queue (src/queue/embedded-queue.ts, src/fairness): each message knows
 * its key and carries its place in the key's turn (`vtag`, a virtual start time), and the running
 * limits that applied when it was enqueued.
 *
 * - `key_id`: the job's API key ('' for messages enqueued before this migration, or without a key).
 * - `vtag`: consumers take messages in (priority, vtag, seq) order. A key's next message starts a
 *   turn after its previous one (1/weight later); a key with nothing waiting starts level with the
 *   head of the queue. Existing messages keep 0 and run first, in their old order.
 * - `max_running`, `grp`, `grp_max_running`: the key's (and its group's) running limits, or null.
 *
 * The waiting-message index per key answers "the key's last waiting turn" with one seek at enqueue.
 */
import { sql } from 'kysely';
import type { Kysely } from 'kysely';

export async function up(db: Kysely<any>): Promise<void> {
  // One column per statement: SQLite's ALTER TABLE adds one at a time.
  await db.schema.alterTable('queue_messages').addColumn('key_id', 'text', (c) => c.notNull().defaultTo('')).execute();
  await db.schema.alterTable('queue_messages').addColumn('vtag', 'double precision', (c) => c.notNull().defaultTo(0)).execute();
  await db.schema.alterTable('queue_messages').addColumn('max_running', 'integer').execute();
  await db.schema.alterTable('queue_messages').addColumn('grp', 'text').execute();
  await db.schema.alterTable('queue_messages').addColumn('grp_max_running', 'integer').execute();
  await db.schema.dropIndex('queue_messages_next').execute();
  await db.schema.createIndex('queue_messages_next').on('queue_messages').columns(['priority', 'vtag', 'seq']).execute();
  await db.schema
    .createIndex('queue_messages_waiting_key')
    .on('queue_messages')
    .columns(['key_id', 'priority', 'vtag'])
    .where(sql.ref('lease_owner'), 'is', null)
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex('queue_messages_waiting_key').ifExists().execute();
  await db.schema.dropIndex('queue_messages_next').execute();
  await db.schema.createIndex('queue_messages_next').on('queue_messages').columns(['priority', 'seq']).execute();
  for (const c of ['grp_max_running', 'grp', 'max_running', 'vtag', 'key_id']) await db.schema.alterTable('queue_messages').dropColumn(c).execute();
}
