/**
 * Gathers the calls made within one turn of the event loop and runs them as one operation. On
 * Postgres every statement is a round trip and a parse/plan on the server, and on Redis every command
 * a round trip; at a few hundred jobs a second the same few operations per job (create, start,
 * complete, enqueue) arrive many at a time, so sending each group at once cuts the servers' work and
 * the client's socket writes. (SQLite gets the same from group commit: its statements cost
 * microseconds, its commits more.)
 *
 * - A call settles when its group has run, with its own result.
 * - Should the group's operation fail, each call is run again alone and settles with its own result
 *   or error: one bad row (a duplicate idempotency key) never fails the others. So the operation must
 *   be all-or-nothing (one SQL statement) or safe to repeat (adding a BullMQ job id that exists).
 * - A call whose key is already in the open group runs alone, so a group never holds two changes
 *   to one row (Postgres's UPDATE … FROM would apply only one of them).
 */
export interface TurnBatcherOptions<I, O> {
  /** Runs a group; answers one result per item, in order. */
  run(items: I[]): Promise<O[]>;
  /** Identifies the row an item changes. */
  key(item: I): string;
  /** Largest group. Default 200. */
  max?: number;
}

interface Pending<I, O> {
  item: I;
  resolve: (o: O) => void;
  reject: (err: unknown) => void;
}

export class TurnBatcher<I, O> {
  private readonly opts: TurnBatcherOptions<I, O>;
  private readonly max: number;
  private open: Map<string, Pending<I, O>> | undefined;

  constructor(opts: TurnBatcherOptions<I, O>) {
    this.opts = opts;
    this.max = opts.max ?? 200;
  }

  call(item: I): Promise<O> {
    const key = this.opts.key(item);
    if (this.open?.has(key)) return this.one(item);
    return new Promise<O>((resolve, reject) => {
      if (!this.open) {
        const group = new Map<string, Pending<I, O>>();
        this.open = group;
        setImmediate(() => this.flush(group));
      }
      this.open.set(key, { item, resolve, reject });
      if (this.open.size >= this.max) this.flush(this.open);
    });
  }

  private async one(item: I): Promise<O> {
    return (await this.opts.run([item]))[0]!;
  }

  private flush(group: Map<string, Pending<I, O>>): void {
    if (this.open === group) this.open = undefined;
    if (group.size === 0) return;
    const members = [...group.values()];
    group.clear(); // a second flush of the same group (size limit, then setImmediate) finds it empty
    this.opts.run(members.map((m) => m.item)).then(
      (results) => members.forEach((m, i) => m.resolve(results[i]!)),
      (err: unknown) => {
        if (members.length === 1) return members[0]!.reject(err);
        for (const m of members) this.one(m.item).then(m.resolve, m.reject);
      },
    );
  }
}
