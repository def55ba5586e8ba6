/**
 * Moves batch requests onto the queue, in every worker process. Each tick, per open batch: if fewer
 * than `batches.maxInFlight` of its jobs are queued or running, claim that many waiting requests and
 * admit each one like an API request (route → moderation → cache → budget and spend cap → create +
 * enqueue), at the batch's priority (low by default, so interactive traffic goes first).
 *
 * The hourly spend cap is a row of the budget ledger per window: a request that would take the
 * window past the cap goes back to waiting and the batch rests until the next window, so a batch is
 * paced under its cap instead of failing. A request refused for another reason (its key's budget,
 * moderation, an unknown model) ends `failed` with that reason. A batch with nothing waiting and
 * nothing in flight is completed. Everything is in the database, so a restarted worker carries on
 * where the last one stopped.
 *
 * A key whose queue is full (its `fairness` maxQueued, or its group's) does not fail the batch's
 * requests either: they go back to waiting and the batch rests a moment, until the key has room.
 *
 * Each request is admitted by the same submission pipeline as an HTTP request (src/submissions):
 * the pump adds nothing of its own but the batch's window cap and the job id its claim assigned.
 */
import type { Logger } from 'pino';
import { DomainError } from '../core/errors.ts';
import type { JobError } from '../core/job.ts';
import type { BatchesConfig } from './config.ts';
import { CapReached } from '../budgets/gate.ts';
import { QueueLimitReached } from '../fairness/limits.ts';
import type { JobStore, KeyStore } from '../store/job-store.ts';
import type { Submissions } from '../submissions/submissions.ts';
import type { Batch, BatchItem, BatchStore } from './batch-store.ts';

export interface BatchPumpDeps {
  batches: BatchStore;
  store: JobStore;
  keys: KeyStore;
  submissions: Submissions;
  config: BatchesConfig;
  log: Logger;
}

const errorOf = (err: unknown): JobError =>
  err instanceof DomainError ? { code: err.code ?? 'invalid_request', message: err.message } : { code: 'internal_error', message: (err as Error)?.message ?? String(err) };

export class BatchPump {
  private readonly deps: BatchPumpDeps;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly pausedUntil = new Map<string, number>();
  private keyNames = new Map<string, { name: string; revoked: boolean }>();
  private keysAt = 0;
  private lastRecovery = 0;

  constructor(deps: BatchPumpDeps) {
    this.deps = deps;
  }

  start(): void {
    this.stopped = false;
    const loop = () => {
      if (this.stopped) return;
      this.running = this.tick()
        .catch((err) => this.deps.log.warn({ err }, 'batch pump tick failed'))
        .finally(() => {
          this.running = undefined;
          if (!this.stopped) this.timer = setTimeout(loop, this.deps.config.pumpIntervalMs);
        });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One pass over every open batch (tests call it directly). */
  async tick(): Promise<void> {
    const { batches } = this.deps;
    if (Date.now() - this.lastRecovery > 30_000) {
      this.lastRecovery = Date.now();
      await batches.recoverClaims(60_000);
    }
    for (const batch of await batches.open()) {
      if (this.stopped) return;
      await this.pumpBatch(batch);
    }
  }

  private async keyOf(keyId: string): Promise<{ name: string; revoked: boolean } | undefined> {
    if (!this.keyNames.has(keyId) || Date.now() - this.keysAt > 60_000) {
      const all = await this.deps.keys.listKeys();
      this.keyNames = new Map(all.map((k) => [k.id, { name: k.name, revoked: k.revokedAt !== null }]));
      this.keysAt = Date.now();
    }
    return this.keyNames.get(keyId);
  }

  private async pumpBatch(batch: Batch): Promise<void> {
    const { batches, config } = this.deps;
    const waiting = await batches.waiting(batch.id);
    const inFlight = await batches.inFlight(batch.id);
    if (waiting === 0) {
      if (inFlight === 0 && (await batches.markCompleted(batch.id))) this.deps.log.info({ batchId: batch.id }, 'batch completed');
      return;
    }
    if ((this.pausedUntil.get(batch.id) ?? 0) > Date.now()) return;
    const room = config.maxInFlight - inFlight;
    if (room <= 0) return;
    const key = await this.keyOf(batch.keyId);
    const items = await batches.claim(batch.id, room);
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      // Canceled meanwhile (by any API instance): what was claimed ends canceled too.
      if (i % 20 === 0 && (await batches.get(batch.id))?.status !== 'in_progress') {
        for (const rest of items.slice(i)) await batches.setStatus(batch.id, rest.index, 'canceled', { clearJob: true });
        return;
      }
      if (!key || key.revoked) {
        await batches.setStatus(batch.id, item.index, 'failed', { error: { code: 'invalid_api_key', message: 'the batch\'s API key was revoked' }, clearJob: true });
        continue;
      }
      const outcome = await this.admit(batch, { id: batch.keyId, name: key.name }, item).catch(async (err) => {
        this.deps.log.error({ err, batchId: batch.id, index: item.index }, 'batch request could not be admitted');
        await batches.setStatus(batch.id, item.index, 'failed', { error: errorOf(err), clearJob: true });
        return 'failed' as const;
      });
      if (outcome === 'cap' || outcome === 'queue_full') {
        // The window's cap (or the key's queue) is full: this and the rest of the claim wait.
        for (const rest of items.slice(i)) await batches.setStatus(batch.id, rest.index, 'pending', { clearJob: true });
        return;
      }
    }
  }

  private async admit(batch: Batch, key: { id: string; name: string }, item: BatchItem): Promise<'submitted' | 'failed' | 'cap' | 'queue_full'> {
    const { batches, store, submissions } = this.deps;
    const jobId = item.jobId!;
    // A claim recovered after a crash may already have its job.
    if (await store.getJob(jobId)) {
      await batches.setStatus(batch.id, item.index, 'submitted');
      return 'submitted';
    }
    const body = item.body;
    try {
      await submissions.submit(
        {
          entry: 'batch',
          kind: 'generation',
          model: body.model,
          request: body.request,
          priority: batch.priority,
          webhookUrl: body.webhookUrl,
          metadata: body.metadata,
          cachePolicy: body.cache,
          batch: { id: batch.id, capUsd: batch.hourlyCapUsd, windowSeconds: this.deps.config.capWindowSeconds, jobId },
        },
        { keyId: key.id, keyName: key.name, admin: false },
      );
    } catch (err) {
      if (err instanceof CapReached) {
        this.pausedUntil.set(batch.id, err.resetsAt.getTime());
        this.deps.log.info({ batchId: batch.id, until: err.resetsAt.toISOString() }, 'batch spend cap reached; resuming in the next window');
        return 'cap';
      }
      if (err instanceof QueueLimitReached) {
        // Batches count against their key's queue limit, and wait for room rather than fail.
        this.pausedUntil.set(batch.id, Date.now() + Math.max(1_000, this.deps.config.pumpIntervalMs));
        this.deps.log.debug({ batchId: batch.id, scope: err.scope }, 'key queue full; batch waits');
        return 'queue_full';
      }
      if (!(err instanceof DomainError)) throw err;
      // Refused (a budget, moderation, a model gone since submission): the request ends failed with the reason.
      // A job that exists (its enqueue failed) has been failed by the submission; the item follows it.
      const exists = await store.getJob(jobId).catch(() => undefined);
      if (exists) await batches.setStatus(batch.id, item.index, 'submitted');
      else await batches.setStatus(batch.id, item.index, 'failed', { error: errorOf(err), clearJob: true });
      return 'failed';
    }
    await batches.setStatus(batch.id, item.index, 'submitted');
    return 'submitted';
  }
}
