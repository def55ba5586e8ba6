/**
 * GET /v1/images/jobs/{id}/events: status, progress and partial images as Server-Sent Events, resumed
 * exactly with Last-Event-ID, within one process and across an API and a worker process.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import OpenAI, { APIError, toFile } from 'openai';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { openEvents } from '../support/sse.ts';
import type { SseEvent } from '../support/sse.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { startPostgres } from '../support/postgres.ts';
import { startRedis } from '../support/redis.ts';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { OpenAIBackend } from '../../src/backends/openai/openai-backend.ts';
import type { BackendCallContext, BackendRequest, BackendResult, ImageBackend } from '../../src/backends/image-backend.ts';
import type { BackendConfig } from '../../src/config/schema.ts';
import type { BackendFactory } from '../../src/backends/registry.ts';
import { TERMINAL_EVENT_ID, parseLastEventId } from '../../src/events/event-ids.ts';
import { streamTiming } from '../../src/api/routes/events.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const statusOf = (e: SseEvent) => (e.event === 'status' ? e.json.status : undefined);
const ids = (events: SseEvent[]) => events.filter((e) => e.id !== undefined).map((e) => Number(e.id));

function assertIncreasing(events: SseEvent[]) {
  const seen = ids(events);
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, `ids must grow: ${seen.join(',')}`);
}

/**
 * The OpenAI backend (against the stand-in, whose latency sets the run time) that also reports
 * progress every 50 ms and, optionally, two partial images at 30 % and 60 % of `expectedMs`.
 */
function progressBackends(opts: { expectedMs: number; partials: boolean; png: () => Buffer }): Record<string, BackendFactory> {
  return {
    openai: (config: BackendConfig): ImageBackend => {
      const inner = new OpenAIBackend(config);
      return {
        name: inner.name,
        type: inner.type,
        capabilities: inner.capabilities,
        modelSpec: (model: string) => inner.modelSpec(model),
        health: () => inner.health(),
        async generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
          const started = Date.now();
          let partial = 0;
          const timer = setInterval(() => {
            const p = Math.min(0.95, (Date.now() - started) / opts.expectedMs);
            ctx.reportProgress(p);
            if (opts.partials && partial < 2 && p >= 0.3 * (partial + 1)) {
              ctx.reportPartialImage?.({ index: 0, partialIndex: partial++, data: opts.png(), mediaType: 'image/png' });
            }
          }, 50);
          try {
            return await inner.generate(request, ctx);
          } finally {
            clearInterval(timer);
          }
        },
      };
    },
  };
}

async function submit(easel: TestEasel, prompt: string, key?: string): Promise<string> {
  const res = await easel.api('/v1/images/generations', { method: 'POST', key, headers: { prefer: 'respond-async' }, json: { prompt, model: 'test-model', response_format: 'url' } });
  assert.equal(res.status, 202);
  return ((await res.json()) as any).id;
}

describe('job event stream', () => {
  let easel: TestEasel;
  before(async () => {
    easel = await startEasel({ standin: { latencyMs: 800 } });
  });
  after(() => easel.close());

  test('streams queued/running, then succeeded with image URLs, then closes', async () => {
    const id = await submit(easel, 'sse basic');
    const stream = await openEvents(easel, id);
    assert.equal(stream.status, 200);
    assert.match(stream.res.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.match(stream.res.headers.get('cache-control') ?? '', /no-cache/);
    assert.equal(stream.res.headers.get('x-accel-buffering'), 'no');
    assert.ok(stream.res.headers.get('x-request-id'));
    const events = await stream.ended();
    assert.equal(stream.retry, streamTiming.retryMs);
    const statuses = events.filter((e) => e.event === 'status').map(statusOf);
    assert.deepEqual(statuses, ['queued', 'running', 'succeeded']);
    assertIncreasing(events);
    const last = events.filter((e) => e.event === 'status').at(-1)!;
    assert.equal(Number(last.id), TERMINAL_EVENT_ID);
    assert.equal(last.json.id, id);
    assert.equal(last.json.object, 'image.job');
    assert.equal(last.json.progress, 1);
    const url = last.json.result.data[0].url as string;
    assert.match(url, new RegExp(`^${easel.url}/files/`));
    assert.equal((await fetch(url)).status, 200);
    // The same job object GET answers.
    const got = (await (await easel.api(`/v1/images/jobs/${id}`)).json()) as any;
    assert.deepEqual({ ...last.json, result: { ...last.json.result, data: [] } }, { ...got, result: { ...got.result, data: [] } });
    // A `done` event (no id) closes the stream.
    assert.equal(events.at(-1)!.event, 'done');
    assert.equal(events.at(-1)!.id, undefined);
    assert.deepEqual(events.at(-1)!.json, { id, status: 'succeeded' });
  });

  test('a stream opened after the job finished replays it and closes', async () => {
    const id = await submit(easel, 'sse late');
    await waitForJob(easel, id);
    const stream = await openEvents(easel, id);
    const events = await stream.ended(5000);
    assert.deepEqual(events.filter((e) => e.event === 'status').map(statusOf), ['queued', 'running', 'succeeded']);
    const last = events.find((e) => statusOf(e) === 'succeeded')!;
    assert.match(last.json.result.data[0].url, /\/files\//);
    // Earlier statuses are brief; the terminal one is the whole job.
    assert.deepEqual(events[0]!.json, { id, object: 'image.job', status: 'queued', progress: 0 });
    assertIncreasing(events);
  });

  test('a client that already saw the terminal event gets 204 (EventSource stops reconnecting)', async () => {
    const id = await submit(easel, 'sse after end');
    await waitForJob(easel, id);
    const stream = await openEvents(easel, id, { lastEventId: TERMINAL_EVENT_ID });
    assert.equal(stream.status, 204);
  });

  test('reconnecting with Last-Event-ID after `running` gets only the later events', async () => {
    const id = await submit(easel, 'sse reconnect');
    const whole = await openEvents(easel, id);
    const first = await openEvents(easel, id);
    const running = await first.waitFor((e) => statusOf(e) === 'running');
    first.close();
    const seenBefore = first.events.slice(0, first.events.indexOf(running) + 1);
    const second = await openEvents(easel, id, { lastEventId: running.id });
    const rest = await second.ended();
    assert.ok(rest.every((e) => e.id === undefined || Number(e.id) > Number(running.id)), `only later ids: ${ids(rest).join(',')}`);
    assert.ok(!rest.some((e) => ['queued', 'running'].includes(statusOf(e))));
    assert.equal(statusOf(rest.filter((e) => e.event === 'status').at(-1)!), 'succeeded');
    // Together the two connections saw every status the uninterrupted stream saw, each once.
    const all = [...seenBefore, ...rest];
    const statusIds = (evs: SseEvent[]) => evs.filter((e) => e.event === 'status').map((e) => `${e.id}:${statusOf(e)}`);
    assert.deepEqual(statusIds(all), statusIds(await whole.ended()));
    assert.equal(new Set(ids(all)).size, ids(all).length, 'no event twice');
    // The query parameter works as well (EventSource cannot set headers on its first request).
    const viaQuery = await openEvents(easel, id, { query: `?last_event_id=${running.id}` });
    assert.deepEqual((await viaQuery.ended()).filter((e) => e.event === 'status').map(statusOf), ['succeeded']);
  });

  test("another key's job and an unknown job are 404 in OpenAI's error shape", async () => {
    const { secret } = await createApiKey(easel.runtime.keys, { name: 'sse-other' });
    const id = await submit(easel, 'sse private');
    for (const [jobId, key] of [[id, secret], ['job_01HZZZZZZZZZZZZZZZZZZZZZZZ', undefined]] as const) {
      const res = await easel.api(`/v1/images/jobs/${jobId}/events`, { key });
      assert.equal(res.status, 404);
      const body = (await res.json()) as any;
      assert.equal(body.error.code, 'job_not_found');
      assert.equal(body.error.type, 'not_found_error');
      assert.equal(body.error.param, 'id');
    }
    const noKey = await fetch(`${easel.url}/v1/images/jobs/${id}/events`);
    assert.equal(noKey.status, 401);
    await waitForJob(easel, id);
  });

  test('a stream of a failed job ends with the error', async () => {
    easel.standin.failNext(1, 400, { error: { message: 'nope', type: 'invalid_request_error', code: 'bad', param: null } });
    const id = await submit(easel, 'sse fails');
    const events = await (await openEvents(easel, id)).ended();
    const last = events.filter((e) => e.event === 'status').at(-1)!;
    assert.equal(last.json.status, 'failed');
    assert.ok(last.json.error?.message);
  });

  test('heartbeats are comments', async () => {
    const saved = streamTiming.heartbeatMs;
    streamTiming.heartbeatMs = 100;
    try {
      const id = await submit(easel, 'sse ping');
      const stream = await openEvents(easel, id);
      await stream.ended();
      assert.ok(stream.comments.includes('ping'), `comments: ${stream.comments.join(',')}`);
    } finally {
      streamTiming.heartbeatMs = saved;
    }
  });

  test('a client that hangs up is let go (no listener left behind)', async () => {
    const id = await submit(easel, 'sse hang up');
    const bus = easel.runtime.events;
    let listeners = 0;
    const subscribe = bus.subscribe.bind(bus);
    bus.subscribe = (jobId, listener) => {
      const off = subscribe(jobId, listener);
      listeners++;
      return () => {
        listeners--;
        off();
      };
    };
    try {
      const stream = await openEvents(easel, id);
      await stream.waitFor((e) => e.event === 'status');
      assert.equal(listeners, 1);
      stream.close();
      for (let i = 0; i < 100 && listeners > 0; i++) await sleep(10);
      assert.equal(listeners, 0);
    } finally {
      bus.subscribe = subscribe;
      await waitForJob(easel, id);
    }
  });

  test('only the attempt running the job records partial images; later events wait for them', async () => {
    const id = await submit(easel, 'sse recorded');
    const stream = await openEvents(easel, id);
    await stream.waitFor((e) => statusOf(e) === 'running');
    const job = await easel.runtime.store.getJob(id);
    const bus = easel.runtime.events;
    const partial = { type: 'partial_image' as const, jobId: id, index: 0, partialIndex: 0, b64Json: 'AAAA', mediaType: 'image/png', at: Date.now() };
    bus.publish({ ...partial, attempt: job!.attempt + 1 }); // a stale (or future) attempt: dropped
    bus.publish({ ...partial, attempt: job!.attempt, partialIndex: 1 });
    bus.publish({ type: 'progress', jobId: id, progress: 0.5, at: Date.now() }); // must not overtake it
    const p = await stream.waitFor((e) => e.event === 'partial_image');
    assert.equal(p.id, '1003');
    assert.equal(p.json.partial_image_index, 1);
    const prog = await stream.waitFor((e) => e.event === 'progress');
    assert.equal(prog.id, '1503');
    assert.deepEqual((await bus.history!(id, 0)).map((r) => r.id), [1003]);
    await stream.ended();
    // A job that is not running records nothing.
    bus.publish({ ...partial, attempt: job!.attempt, partialIndex: 2 });
    await sleep(50);
    assert.deepEqual((await bus.history!(id, 0)).map((r) => r.id), [1003]);
  });

  test('ids: a malformed Last-Event-ID starts from the beginning', async () => {
    assert.equal(parseLastEventId('abc'), 0);
    assert.equal(parseLastEventId('-3'), 0);
    assert.equal(parseLastEventId(' 42 '), 42);
    assert.equal(parseLastEventId('99999999999999999'), 0);
    assert.equal(parseLastEventId(String(TERMINAL_EVENT_ID)), TERMINAL_EVENT_ID);
    const id = await submit(easel, 'sse bad last id');
    const events = await (await openEvents(easel, id, { lastEventId: 'not-a-number' })).ended();
    assert.deepEqual(events.filter((e) => e.event === 'status').map(statusOf), ['queued', 'running', 'succeeded']);
  });

  test('headers set by hooks (CORS) reach the hijacked stream', async () => {
    const other = await startEasel({ existingStandin: easel.standin, overrides: { cors: { origins: ['https://app.example'] } } });
    try {
      const id = await submit(other, 'sse cors');
      const res = await fetch(`${other.url}/v1/images/jobs/${id}/events`, { headers: { authorization: `Bearer ${other.adminKey}`, origin: 'https://app.example' } });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('access-control-allow-origin'), 'https://app.example');
      await res.text(); // to the end of the stream
    } finally {
      await other.close();
    }
  });

  test('stopping the server ends open streams instead of waiting for their jobs', async () => {
    const other = await startEasel({ existingStandin: easel.standin, overrides: { worker: { concurrency: 1 } } });
    await submit(other, 'sse blocker');
    const id = await submit(other, 'sse never runs here');
    const stream = await openEvents(other, id);
    await stream.waitFor((e) => statusOf(e) === 'queued');
    const t0 = Date.now();
    await other.close();
    const events = await stream.ended(5000);
    assert.ok(Date.now() - t0 < 1500, `close took ${Date.now() - t0} ms`);
    // Ended by the server going away, not by the job: a client reconnects elsewhere with Last-Event-ID.
    assert.ok(!events.some((e) => e.event === 'done'), events.map((e) => e.event).join(','));
  });
});

describe('progress and partial images', () => {
  let easel: TestEasel;
  const LATENCY = 1500;
  before(async () => {
    const standin = await startOpenAIStandin({ strict: false, latencyMs: LATENCY });
    easel = await startEasel({
      existingStandin: standin,
      runtime: { backendFactories: progressBackends({ expectedMs: LATENCY, partials: true, png: () => standin.png }) },
    });
  });
  after(async () => {
    await easel.close();
    await easel.standin.close();
  });

  test('progress events appear and grow; partial images come with ids and decodable bytes', async () => {
    const id = await submit(easel, 'sse progress');
    const events = await (await openEvents(easel, id)).ended();
    assertIncreasing(events);
    const progress = events.filter((e) => e.event === 'progress').map((e) => e.json.progress as number);
    assert.ok(progress.length >= 2, `progress events: ${progress.join(',')}`);
    for (let i = 1; i < progress.length; i++) assert.ok(progress[i]! > progress[i - 1]!, `progress must grow: ${progress.join(',')}`);
    assert.ok(progress.every((p) => p > 0 && p < 1));
    for (const e of events.filter((e) => e.event === 'progress')) assert.equal(e.json.id, id);

    const partials = events.filter((e) => e.event === 'partial_image');
    assert.deepEqual(partials.map((e) => e.json.partial_image_index), [0, 1]);
    assert.deepEqual(partials.map((e) => Number(e.id)), [1003, 2003]);
    for (const p of partials) {
      assert.equal(p.json.id, id);
      assert.equal(p.json.index, 0);
      assert.equal(p.json.media_type, 'image/png');
      assert.equal((await sharp(Buffer.from(p.json.b64_json, 'base64')).metadata()).format, 'png');
    }
    const statuses = events.filter((e) => e.event === 'status').map(statusOf);
    assert.deepEqual(statuses, ['queued', 'running', 'succeeded']);
    // Status, then the running phase, then the end.
    const order = events.map((e) => e.event).filter((e) => e !== 'done');
    assert.equal(order.indexOf('progress') > order.indexOf('status'), true);
    assert.equal(order.at(-1), 'status');
  });

  test('reconnecting after a partial image resumes exactly after it, live and after the job ended', async () => {
    const id = await submit(easel, 'sse partial reconnect');
    const first = await openEvents(easel, id);
    const p0 = await first.waitFor((e) => e.event === 'partial_image');
    first.close();
    const second = await openEvents(easel, id, { lastEventId: p0.id });
    const rest = await second.ended();
    assertIncreasing(rest);
    assert.ok(ids(rest).every((n) => n > Number(p0.id)));
    assert.deepEqual(rest.filter((e) => e.event === 'partial_image').map((e) => e.json.partial_image_index), [1]);
    assert.ok(!rest.some((e) => statusOf(e) === 'queued' || statusOf(e) === 'running'));
    assert.equal(statusOf(rest.filter((e) => e.event === 'status').at(-1)!), 'succeeded');

    // After the end: the recorded partial is replayed from the store, then the terminal status.
    const late = await (await openEvents(easel, id, { lastEventId: p0.id })).ended(5000);
    assert.deepEqual(late.filter((e) => e.id !== undefined).map((e) => e.event), ['partial_image', 'status']);
    assert.equal(late[0]!.json.partial_image_index, 1);
    const whole = await (await openEvents(easel, id)).ended(5000);
    assert.deepEqual(whole.filter((e) => e.id !== undefined).map((e) => `${e.event}:${statusOf(e) ?? e.json.partial_image_index}`), [
      'status:queued',
      'status:running',
      'partial_image:0',
      'partial_image:1',
      'status:succeeded',
    ]);
  });

  test('a progress Last-Event-ID resumes with higher progress only', async () => {
    const id = await submit(easel, 'sse progress resume');
    const first = await openEvents(easel, id);
    const prog = await first.waitFor((e) => e.event === 'progress');
    first.close();
    const rest = await (await openEvents(easel, id, { lastEventId: prog.id })).ended();
    assertIncreasing(rest);
    assert.ok(ids(rest).every((n) => n > Number(prog.id)));
    for (const e of rest.filter((e) => e.event === 'progress')) assert.ok(e.json.progress > prog.json.progress);
  });
});

/** An API process and a worker process: the API hears nothing from the worker but the store (or Redis). */
async function withApiAndWorker(overrides: Record<string, any>, fn: (api: TestEasel) => Promise<void>, latency = 1500) {
  const standin: OpenAIStandin = await startOpenAIStandin({ strict: false, latencyMs: latency });
  const factories = progressBackends({ expectedMs: latency, partials: true, png: () => standin.png });
  const api = await startEasel({ existingStandin: standin, roles: { api: true, worker: false }, overrides });
  const worker = await startEasel({ existingStandin: standin, roles: { api: false, worker: true }, dataDir: api.dataDir, overrides, runtime: { backendFactories: factories } });
  try {
    await fn(api);
  } finally {
    await worker.close();
    await api.close();
    await standin.close();
  }
}

async function checkCrossProcessStream(api: TestEasel) {
  const id = await submit(api, 'sse across processes');
  const stream = await openEvents(api, id);
  const p0 = await stream.waitFor((e) => e.event === 'partial_image', 20_000);
  const events = await stream.ended(20_000);
  assertIncreasing(events);
  assert.deepEqual(events.filter((e) => e.event === 'status').map(statusOf), ['queued', 'running', 'succeeded']);
  assert.deepEqual(events.filter((e) => e.event === 'partial_image').map((e) => e.json.partial_image_index), [0, 1]);
  assert.ok(events.some((e) => e.event === 'progress'));
  const last = events.filter((e) => e.event === 'status').at(-1)!;
  assert.match(last.json.result.data[0].url, /\/files\//);
  const again = await (await openEvents(api, id, { lastEventId: p0.id })).ended(5000);
  assert.deepEqual(again.filter((e) => e.id !== undefined).map((e) => e.event), ['partial_image', 'status']);
}

describe('across processes', () => {
  test('without Redis: the API re-reads the store (SQLite shared by an api and a worker)', async () => {
    const saved = streamTiming.pollMs;
    streamTiming.pollMs = 200;
    try {
      await withApiAndWorker({ queue: { pollIntervalMs: 50 } }, checkCrossProcessStream);
    } finally {
      streamTiming.pollMs = saved;
    }
  });

  test('with Redis and Postgres: events cross over pub/sub', async (t) => {
    const redis = await startRedis();
    const pg = await startPostgres();
    const saved = streamTiming.pollMs;
    try {
      if (!redis || !pg) return t.skip('redis-server or Postgres not installed');
      streamTiming.pollMs = 60_000; // the events must come over Redis, not from re-reading the store
      await withApiAndWorker({ redis: { url: redis.url, prefix: `sse${Date.now()}` }, database: { url: pg.url } }, checkCrossProcessStream);
    } finally {
      streamTiming.pollMs = saved;
      await redis?.stop();
      await pg?.stop();
    }
  });
});

describe('partial images from the openai backend (partial_images → stream: true upstream)', () => {
  let easel: TestEasel;
  before(async () => {
    // A gap between events spreads the partials over the run, as a real GPU would.
    easel = await startEasel({ standin: { streamGapMs: 200 } });
  });
  after(() => easel.close());

  test('the partials OpenAI streams arrive on the job stream before it succeeds, and are replayed later', async () => {
    const res = await easel.api('/v1/images/generations', {
      method: 'POST',
      headers: { prefer: 'respond-async' },
      json: { prompt: 'a streamed lighthouse', model: 'test-model', partial_images: 2 },
    });
    assert.equal(res.status, 202);
    const id = ((await res.json()) as any).id as string;
    const events = await (await openEvents(easel, id)).ended();
    const named = events.filter((e) => e.event === 'status' || e.event === 'partial_image').map((e) => (e.event === 'status' ? statusOf(e) : `${e.event}:${e.json.partial_image_index}`));
    assert.deepEqual(named, ['queued', 'running', 'partial_image:0', 'partial_image:1', 'succeeded']);
    // The partials also move the job's progress.
    assert.ok(events.some((e) => e.event === 'progress' && e.json.progress > 0 && e.json.progress < 1));
    assertIncreasing(events);
    for (const p of events.filter((e) => e.event === 'partial_image')) {
      assert.equal(p.json.id, id);
      assert.equal(p.json.index, 0);
      assert.equal(p.json.media_type, 'image/png');
      assert.deepEqual(Buffer.from(p.json.b64_json, 'base64'), easel.standin.partialPng);
    }
    const [sent] = easel.standin.requests.filter((r) => r.path === '/v1/images/generations');
    assert.equal(sent!.body?.stream, true);
    assert.equal(sent!.body?.partial_images, 2);
    const job = await waitForJob(easel, id);
    assert.equal(job.status, 'succeeded');
    const image = await fetch(job.result.data[0].url);
    assert.deepEqual(Buffer.from(await image.arrayBuffer()), easel.standin.png);

    // Recorded: a client that connects after the end still gets them.
    const late = await (await openEvents(easel, id)).ended(5000);
    assert.deepEqual(late.filter((e) => e.event === 'partial_image').map((e) => e.json.partial_image_index), [0, 1]);
  });

  test('the openai SDK with stream: true gets OpenAI\'s event stream: the partials, then the finished image', async () => {
    const client = new OpenAI({ apiKey: easel.adminKey, baseURL: `${easel.url}/v1`, maxRetries: 0 });
    const { data: stream, response } = await client.images
      .generate({ model: 'test-model', prompt: 'a streamed harbour', stream: true, partial_images: 2 })
      .withResponse();
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);
    const events: any[] = [];
    for await (const event of stream) events.push(event);
    assert.deepEqual(events.map((e) => `${e.type}${e.type.endsWith('partial_image') ? `:${e.partial_image_index}` : ''}`), [
      'image_generation.partial_image:0',
      'image_generation.partial_image:1',
      'image_generation.completed',
    ]);
    assert.deepEqual(Buffer.from(events[0].b64_json, 'base64'), easel.standin.partialPng);
    const done = events[2];
    assert.deepEqual(Buffer.from(done.b64_json, 'base64'), easel.standin.png);
    assert.equal(done.size, '64x64');
    assert.equal(done.output_format, 'png');
    // It was a job like any other: durable, fetchable by id.
    const job = await waitForJob(easel, response.headers.get('x-easel-job-id')!);
    assert.equal(job.status, 'succeeded');
  });

  test('stream: true with n=2 sends one completed event per image; edits stream as image_edit.*', async () => {
    const client = new OpenAI({ apiKey: easel.adminKey, baseURL: `${easel.url}/v1`, maxRetries: 0 });
    const two: any[] = [];
    for await (const e of await client.images.generate({ model: 'test-model', prompt: 'two streamed', n: 2, stream: true, partial_images: 1 })) two.push(e);
    const completed = two.filter((e) => e.type === 'image_generation.completed');
    assert.deepEqual(completed.map((e) => e.index), [0, 1]);
    assert.equal(two.filter((e) => e.type === 'image_generation.partial_image').length, 2);

    const edit: any[] = [];
    const image = await toFile(easel.standin.png, 'in.png', { type: 'image/png' });
    for await (const e of await client.images.edit({ model: 'test-model', prompt: 'streamed edit', image, stream: true, partial_images: 1 })) edit.push(e);
    assert.deepEqual(edit.map((e) => e.type), ['image_edit.partial_image', 'image_edit.completed']);
  });

  test('a job that fails ends the stream with an error the SDK raises, naming the cause', async () => {
    const client = new OpenAI({ apiKey: easel.adminKey, baseURL: `${easel.url}/v1`, maxRetries: 0 });
    easel.standin.failNext({ status: 400, body: { error: { message: 'Your request was rejected by the safety system.', type: 'image_generation_user_error', param: null, code: 'moderation_blocked' } } });
    const stream = await client.images.generate({ model: 'test-model', prompt: 'refused', stream: true, partial_images: 1 });
    await assert.rejects(
      (async () => {
        for await (const _ of stream) void _;
      })(),
      (err: unknown) => err instanceof APIError && err.code === 'content_policy_violation' && /safety system/.test(err.message),
    );
  });

  test('stream: true cannot be combined with an async submission', async () => {
    const res = await easel.api('/v1/images/generations', { method: 'POST', headers: { prefer: 'respond-async' }, json: { prompt: 'x', stream: true } });
    assert.equal(res.status, 400);
    assert.equal(((await res.json()) as any).error.param, 'stream');
  });
});
