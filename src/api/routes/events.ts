/**
 * GET /v1/images/jobs/:id/events — a job's status, progress and partial images as Server-Sent Events
 * until it ends; the stream closes after the terminal status (followed by a `done` event).
 *
 *   id: 2
 *   event: status            data: the job object (as GET /v1/images/jobs/:id returns it)
 *   event: progress          data: {"id", "progress"}   (only ever growing on one stream)
 *   event: partial_image     data: {"id", "index", "partial_image_index", "b64_json", "media_type"}
 *   event: done              data: {"id", "status"}     (no id: it is not resumable)
 *
 * Ids are numbers that grow through the job (src/events/event-ids.ts); a client reconnecting with
 * `Last-Event-ID` (or `?last_event_id=`) gets exactly the events after that id, and one that already
 * saw the terminal event gets 204, which tells an EventSource to stop reconnecting.
 *
 * Where events come from: the stream subscribes to the job's bus events first, then reads the job row
 * (and recorded partial images), and from then on emits anything with an id above the last one sent,
 * so the read and the subscription cannot race. Status events are always rendered from the job row;
 * progress and partial images are emitted straight from the bus. The row is re-read every second as
 * well, which is what carries a job run by a worker in another process when there is no Redis.
 */
import type { FastifyInstance } from 'fastify';
import type { ServerResponse } from 'node:http';
import { DomainError } from '../../core/errors.ts';
import { isTerminal } from '../../core/job.ts';
import type { Job, JobStatus } from '../../core/job.ts';
import {
  QUEUED_EVENT_ID,
  RUNNING_EVENT_ID,
  TERMINAL_EVENT_ID,
  parseLastEventId,
  permilleOf,
  progressEventId,
  progressPermille,
  recordedCountOf,
} from '../../events/event-ids.ts';
import { partialImageData } from '../../events/job-events.ts';
import type { BusEvent } from '../../events/job-events.ts';
import { SSE_HEADERS, sseComment, sseEvent, sseRetry } from '../../events/sse.ts';
import { JobViews } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';
import { jobExtras } from '../job-extras.ts';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses } from '../schemas/common.ts';
import { documentedOnly } from '../schemas/compile.ts';
import { jobParams } from './jobs.ts';

/** Stream timings; tests shorten them. */
export const streamTiming = {
  /** A `: ping` comment this often keeps proxies from closing an idle stream. */
  heartbeatMs: 15_000,
  /** How often the job row is re-read (events from a worker in another process, without Redis). */
  pollMs: 1_000,
  /** The reconnect delay suggested to clients. */
  retryMs: 2_000,
};

type Render = (job: Job) => Promise<Record<string, unknown>>;

/** One client's stream of one job. Everything it writes goes through `pump`, one step at a time. */
class JobEventStream {
  private readonly jobId: string;
  private readonly res: ServerResponse;
  private readonly deps: ApiDeps;
  private readonly render: Render;
  private readonly onEnd: () => void;
  /** The id of the last event sent (or the client's Last-Event-ID). */
  private lastId: number;
  /** Recorded events (partial images) known to precede the next progress event. */
  private recorded: number;
  /** The highest progress sent (permille): progress on a stream only grows. */
  private progressSent: number;
  private started = false;
  private ended = false;
  private busy = false;
  private again = false;
  private needSync = false;
  private readonly live: BusEvent[] = [];
  private snapshot: Job | undefined;
  private readonly timers: NodeJS.Timeout[] = [];
  private unsubscribe: () => void = () => {};

  constructor(opts: { jobId: string; res: ServerResponse; deps: ApiDeps; render: Render; lastId: number; onEnd: () => void }) {
    this.jobId = opts.jobId;
    this.res = opts.res;
    this.deps = opts.deps;
    this.render = opts.render;
    this.onEnd = opts.onEnd;
    this.lastId = opts.lastId;
    this.recorded = recordedCountOf(opts.lastId);
    this.progressSent = permilleOf(opts.lastId);
  }

  /** Subscribes before anything is read; events arriving until `start` wait in `live`. */
  subscribe(): void {
    this.unsubscribe = this.deps.events.subscribe(this.jobId, (e) => {
      if (this.ended || e.type === 'cancel_requested') return;
      this.live.push(e);
      if (this.started) void this.pump();
    });
    this.res.on('close', () => this.end());
    this.res.on('error', () => this.end());
  }

  /** Starts writing, from the job as read after subscribing. */
  start(job: Job): void {
    this.started = true;
    if (this.res.destroyed) return this.end(); // the client left while the job was read
    this.res.write(sseRetry(streamTiming.retryMs));
    this.timers.push(setInterval(() => this.res.write(sseComment('ping')), streamTiming.heartbeatMs));
    this.timers.push(
      setInterval(() => {
        this.needSync = true;
        void this.pump();
      }, streamTiming.pollMs),
    );
    this.snapshot = job;
    void this.pump();
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const t of this.timers) clearInterval(t);
    this.unsubscribe();
    this.live.length = 0;
    this.onEnd();
    if (this.started && !this.res.writableEnded) this.res.end();
  }

  private async pump(): Promise<void> {
    if (this.busy) {
      this.again = true;
      return;
    }
    this.busy = true;
    try {
      do {
        this.again = false;
        // The first read goes out before anything that arrived live meanwhile.
        if (this.snapshot) await this.sync();
        while (this.live.length > 0 && !this.ended) this.takeLive(this.live.shift()!);
        if (this.needSync && !this.ended) {
          this.needSync = false;
          await this.sync();
        }
      } while (!this.ended && (this.again || this.live.length > 0 || this.needSync));
    } catch (err) {
      // The store was unreachable: the next event or poll tries again.
      this.deps.log.warn({ err, jobId: this.jobId }, 'job event stream could not read the job');
    } finally {
      this.busy = false;
    }
  }

  /** A bus event: sent at once when it follows what was sent, else left to a re-read of the store. */
  private takeLive(e: BusEvent): void {
    if (e.type === 'status') {
      this.needSync = true; // rendered from the row, which also carries the result
    } else if (e.type === 'progress') {
      if (this.lastId < RUNNING_EVENT_ID) this.needSync = true;
      else this.sendProgress(e.progress);
    } else if (e.type === 'partial_image') {
      if (e.eventId === undefined) {
        // Not recorded (the store failed): live only, without an id.
        if (this.lastId >= RUNNING_EVENT_ID) this.send('partial_image', { id: this.jobId, ...partialImageData(e) });
        return;
      }
      if (e.eventId <= this.lastId) return;
      const ordinal = recordedCountOf(e.eventId);
      if (this.lastId < RUNNING_EVENT_ID || ordinal !== this.recorded + 1) {
        this.needSync = true; // something before it was missed: the store has it
        return;
      }
      this.send('partial_image', { id: this.jobId, ...partialImageData(e) }, e.eventId);
      this.recorded = ordinal;
    }
  }

  /** Reads the job (and its recorded events) and sends whatever comes after the last id sent. */
  private async sync(): Promise<void> {
    const job = this.snapshot ?? (await this.deps.store.getJob(this.jobId));
    this.snapshot = undefined;
    if (this.ended) return;
    if (!job) return this.end();
    const brief = (status: JobStatus) => ({ id: job.id, object: 'image.job', status, progress: 0 });

    if (this.lastId < QUEUED_EVENT_ID) {
      this.send('status', job.status === 'queued' ? await this.render(job) : brief('queued'), QUEUED_EVENT_ID);
    }
    if (job.startedAt || job.status === 'running') {
      if (this.lastId < RUNNING_EVENT_ID) {
        this.send('status', job.status === 'running' ? await this.render(job) : brief('running'), RUNNING_EVENT_ID);
      }
      // Read after the row: everything recorded before a terminal status we saw is in here.
      const recorded = this.deps.events.history ? await this.deps.events.history(this.jobId, this.lastId) : [];
      for (const r of recorded) {
        if (this.send(r.type, { id: this.jobId, ...r.data }, r.id)) this.recorded = Math.max(this.recorded, recordedCountOf(r.id));
      }
      if (job.status === 'running') this.sendProgress(job.progress);
    }
    if (isTerminal(job.status)) {
      if (this.lastId < TERMINAL_EVENT_ID) this.send('status', await this.render(job), TERMINAL_EVENT_ID);
      this.send('done', { id: job.id, status: job.status });
      this.end();
    }
  }

  private sendProgress(progress: number): void {
    const permille = progressPermille(progress);
    if (permille <= this.progressSent) return;
    if (this.send('progress', { id: this.jobId, progress }, progressEventId(this.recorded, progress))) this.progressSent = permille;
  }

  /** Writes one event unless its id was already sent; true when written. */
  private send(event: string, data: unknown, id?: number): boolean {
    if (this.ended) return false;
    if (id !== undefined) {
      if (id <= this.lastId) return false;
      this.lastId = id;
    }
    this.res.write(sseEvent(event, data, id));
    return true;
  }
}

export async function eventRoutes(app: FastifyInstance, deps: ApiDeps) {
  // The same job object GET answers, cost control's fields included.
  const views = new JobViews(deps.storage, deps.config.storage.urlTtlSeconds, jobExtras(deps.jobCosts, deps.budgets.ledger));
  const renderFor = (admin: boolean): Render => async (job) => {
    const view = await views.job(job, job.status === 'succeeded' ? await deps.store.listImagesForJob(job.id) : undefined, { admin });
    if (job.webhookUrl && deps.webhookInfo) view.webhook = (await deps.webhookInfo(job.id)) ?? null;
    return view;
  };
  const open = new Set<JobEventStream>();
  // Streams would hold the server open until their jobs end; a client reconnects elsewhere with Last-Event-ID.
  app.addHook('preClose', async () => {
    for (const s of [...open]) s.end();
  });

  app.withTypeProvider<ZodTypeProvider>().get('/images/jobs/:id/events', {
    schema: {
      summary: "Server-Sent Events of the job's status, progress and partial images until it ends (`Last-Event-ID` resumes)",
      description:
        'Events: `status` (data: the job object), `progress` (`{id, progress}`), `partial_image` (`{id, index, partial_image_index, b64_json, media_type}`) and a final `done` (`{id, status}`). ' +
        'Ids are numbers that only grow through the job, so a client reconnecting with `Last-Event-ID` gets exactly the events after the last one it saw; a `: ping` comment keeps idle streams open.',
      operationId: 'jobEvents',
      tags: ['jobs'],
      params: jobParams,
      querystring: z.object({ last_event_id: z.string().max(64).optional().describe('The same as the `Last-Event-ID` header, for clients that cannot set it') }).strict(),
      headers: documentedOnly(z.object({ 'last-event-id': z.string().optional().describe('The id of the last event seen: the stream resumes after it') })),
      response: {
        200: { description: 'An event stream', content: { 'text/event-stream': { schema: z.string().describe('Server-Sent Events') } } },
        204: z.undefined().describe('The client already saw the terminal event: nothing more will come (an EventSource stops reconnecting)'),
        ...errorResponses,
      },
    },
  }, async (req, reply) => {
    const jobId = req.params.id;
    const header = req.headers['last-event-id'];
    const lastId = parseLastEventId(header !== undefined ? header : req.query.last_event_id);
    const stream = new JobEventStream({ jobId, res: reply.raw, deps, render: renderFor(req.apiKey.admin), lastId, onEnd: () => open.delete(stream) });
    stream.subscribe();
    let job: Job | undefined;
    try {
      job = await deps.store.getJob(jobId);
    } catch (err) {
      stream.end();
      throw err;
    }
    if (!job || job.keyId !== req.apiKey.id) {
      stream.end();
      throw new DomainError('not_found', `No job with id '${jobId}'.`, { param: 'id', code: 'job_not_found' });
    }
    if (isTerminal(job.status) && lastId >= TERMINAL_EVENT_ID) {
      stream.end();
      return reply.status(204).send();
    }

    reply.hijack();
    // Headers set by hooks so far (CORS and the like) are kept; onSend hooks do not run for a hijacked reply.
    reply.raw.writeHead(200, { ...(reply.getHeaders() as Record<string, string>), ...SSE_HEADERS, 'x-request-id': req.id });
    reply.raw.flushHeaders();
    open.add(stream);
    stream.start(job);
  });
}
