/**
 * `stream: true` on generations and edits: OpenAI's image event stream (PROTOCOLS.md §1.6), so an
 * SDK call such as `images.generate({ stream: true, partial_images: 2 })` works against easel.
 *
 * The job is queued and run like any other (durable; a client that leaves does not stop it). The
 * answer is `text/event-stream`: each partial image the backend reports becomes an
 * `image_generation.partial_image` (`image_edit.partial_image`) event, and when the job succeeds
 * every image becomes an `*.completed` event carrying its base64 bytes; the stream then ends. A
 * failed, canceled or timed-out job ends it with an `error` event in OpenAI's error shape, which the
 * SDK raises as an APIError. easel adds `index` (which of the request's images) to each event, and
 * sends the job id in `x-easel-job-id`.
 */
import type { FastifyReply } from 'fastify';
import type { ErrorBody } from './http-errors.ts';
import type { Job, StoredImage } from '../core/job.ts';
import { isTerminal } from '../core/job.ts';
import type { JobEventBus, PartialImageEvent } from '../events/job-events.ts';
import { SSE_HEADERS, sseComment, sseEvent } from '../events/sse.ts';
import type { JobStore } from '../store/job-store.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import type { JobWatch } from './job-waiter.ts';

/** Partial images of one job, kept from before it is queued until the stream takes them. */
export interface PartialTap {
  take(listener: (e: PartialImageEvent) => void): void;
  stop(): void;
}

export function tapPartials(events: JobEventBus, jobId: string): PartialTap {
  const early: PartialImageEvent[] = [];
  let listener: ((e: PartialImageEvent) => void) | undefined;
  const unsubscribe = events.subscribe(jobId, (e) => {
    if (e.type !== 'partial_image') return;
    if (listener) listener(e);
    else early.push(e);
  });
  return {
    take(l) {
      for (const e of early.splice(0)) l(e);
      listener = l;
    },
    stop() {
      listener = undefined;
      early.length = 0;
      unsubscribe();
    },
  };
}

export interface StreamDeps {
  store: JobStore;
  storage: ImageStorage;
  heartbeatMs: number;
  syncTimeoutSeconds: number;
  /** The error a finished-but-not-succeeded job answers with (the same as a sync request's). */
  failure(job: Job): ErrorBody;
}

const unix = (d: Date | undefined | null) => Math.floor((d ?? new Date()).getTime() / 1000);

export async function streamImages(deps: StreamDeps, reply: FastifyReply, job: Job, location: string, watch: JobWatch | undefined, tap: PartialTap | undefined): Promise<void> {
  const prefix = job.kind === 'edit' ? 'image_edit' : 'image_generation';
  const req = job.request;
  const common = {
    quality: req.quality ?? 'auto',
    background: req.background ?? 'auto',
    output_format: req.outputFormat,
  };
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    ...(reply.getHeaders() as Record<string, string>),
    ...SSE_HEADERS,
    'x-request-id': reply.request.id,
    'x-easel-job-id': job.id,
    'content-location': location,
  });
  let open = true;
  const heartbeat = setInterval(() => res.write(sseComment('ping')), deps.heartbeatMs);
  const close = () => {
    open = false;
    clearInterval(heartbeat);
    tap?.stop();
  };
  // The client left: the job goes on (it can be fetched by id); only this answer stops.
  res.on('close', () => {
    if (open) {
      close();
      watch?.cancel();
    }
  });
  const write = (event: string, data: unknown) => {
    if (open && !res.destroyed) res.write(sseEvent(event, data));
  };
  tap?.take((e) => {
    const type = `${prefix}.partial_image`;
    write(type, { type, b64_json: e.b64Json, created_at: unix(new Date(e.at)), ...common, partial_image_index: e.partialIndex, index: e.index });
  });

  try {
    const done = isTerminal(job.status) ? { job } : await watch?.done;
    if (!open) return;
    if (!done) {
      write('error', {
        error: {
          message: `Job ${job.id} did not finish within ${deps.syncTimeoutSeconds}s. It is still running: fetch it at GET /v1/images/jobs/${job.id}.`,
          type: 'timeout_error',
          param: null,
          code: 'sync_timeout',
        },
      });
      return;
    }
    const finished = done.job;
    if (finished.status !== 'succeeded') {
      write('error', deps.failure(finished));
      return;
    }
    const images: StoredImage[] = ('images' in done && done.images) || (await deps.store.listImagesForJob(finished.id));
    const bytes = 'bytes' in done ? done.bytes : undefined;
    const type = `${prefix}.completed`;
    for (const [index, img] of images.entries()) {
      const data = bytes?.get(img.storageKey) ?? (await deps.storage.get(img.storageKey))?.data;
      if (!data) {
        write('error', { error: { message: `Image ${index} of job ${finished.id} is missing from storage.`, type: 'server_error', param: null, code: 'image_missing' } });
        return;
      }
      write(type, {
        type,
        b64_json: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64'),
        created_at: unix(finished.finishedAt),
        size: `${img.width}x${img.height}`,
        ...common,
        index,
        ...(img.revisedPrompt ? { revised_prompt: img.revisedPrompt } : {}),
      });
    }
  } catch (err) {
    write('error', { error: { message: `Streaming job ${job.id} failed: ${(err as Error)?.message ?? String(err)}`, type: 'server_error', param: null, code: 'internal_error' } });
  } finally {
    if (open) {
      close();
      res.end();
    }
  }
}
