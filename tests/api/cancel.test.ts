/**
 * POST /v1/images/jobs/{id}/cancel: a queued job is canceled at once and never runs; a running one is
 * aborted through its backend's abort signal (the stand-in sees the client go away) and ends
 * canceled; a job never ends `succeeded` once a cancel was accepted.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { openEvents } from '../support/sse.ts';
import type { SseEvent } from '../support/sse.ts';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { until } from '../support/until.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const statusOf = (e: SseEvent) => (e.event === 'status' ? e.json.status : undefined);

async function submit(easel: TestEasel, prompt: string, key?: string): Promise<string> {
  const res = await easel.api('/v1/images/generations', { method: 'POST', key, headers: { prefer: 'respond-async' }, json: { prompt, model: 'test-model' } });
  assert.equal(res.status, 202);
  return ((await res.json()) as any).id;
}

const getJob = async (easel: TestEasel, id: string, key?: string): Promise<any> => (await easel.api(`/v1/images/jobs/${id}`, { key })).json();
const cancel = (easel: TestEasel, id: string, key?: string) => easel.api(`/v1/images/jobs/${id}/cancel`, { method: 'POST', key });
/** The stand-in's requests carrying this prompt. */
const sent = (easel: TestEasel, prompt: string) => easel.standin.requests.filter((r) => r.body?.prompt === prompt);

describe('cancel (one worker slot, a slow backend)', () => {
  let easel: TestEasel;
  before(async () => {
    easel = await startEasel({ standin: { latencyMs: 1500 }, overrides: { worker: { concurrency: 1 } } });
  });
  after(() => easel.close());

  test('a queued job is canceled at once and never runs', async () => {
    const blocker = await submit(easel, 'cancel: blocker');
    await until('the blocker to run', async () => (await getJob(easel, blocker)).status === 'running');
    const prompt = 'cancel: queued and never run';
    const id = await submit(easel, prompt);
    assert.equal((await getJob(easel, id)).status, 'queued');
    const stream = await openEvents(easel, id);

    const res = await cancel(easel, id);
    assert.equal(res.status, 200);
    const body = (await res.json()) as any;
    assert.equal(body.id, id);
    assert.equal(body.status, 'canceled');
    assert.equal(typeof body.finished_at, 'number');
    assert.equal(body.started_at, null);

    // The stream ends with it, at once (long before the blocker frees the worker).
    const events = await stream.ended(1000);
    assert.deepEqual(events.filter((e) => e.event === 'status').map(statusOf), ['queued', 'canceled']);
    assert.equal(events.at(-1)!.event, 'done');

    // The worker moves on past it: a job submitted after it runs, and the canceled one never did.
    const next = await submit(easel, 'cancel: after the canceled one');
    assert.equal((await waitForJob(easel, blocker)).status, 'succeeded');
    assert.equal((await waitForJob(easel, next)).status, 'succeeded');
    const job = await getJob(easel, id);
    assert.equal(job.status, 'canceled');
    assert.equal(job.attempts, 0);
    assert.equal(job.backend, null);
    assert.equal(sent(easel, prompt).length, 0, 'the backend never saw the canceled prompt');
  });

  test('a running job is aborted on its backend and ends canceled, never succeeded', async () => {
    const prompt = 'cancel: running';
    const id = await submit(easel, prompt);
    const stream = await openEvents(easel, id);
    await stream.waitFor((e) => statusOf(e) === 'running');
    // The backend call is in flight on the stand-in.
    await until('the backend request', () => sent(easel, prompt).length === 1);
    const abortedBefore = easel.standin.aborted();

    const res = await cancel(easel, id);
    assert.equal(res.status, 200);
    const body = (await res.json()) as any;
    assert.equal(body.status, 'running');
    assert.equal(body.cancel_requested, true);

    const events = await stream.ended(5000);
    const statuses = events.filter((e) => e.event === 'status').map(statusOf);
    assert.deepEqual(statuses, ['queued', 'running', 'canceled']);
    const last = events.filter((e) => e.event === 'status').at(-1)!;
    assert.equal(last.json.cancel_requested, true);
    assert.equal(last.json.result, null);

    await until('the stand-in to see the abort', () => easel.standin.aborted() === abortedBefore + 1, 3000);
    assert.equal(sent(easel, prompt)[0]!.aborted, true);
    // Well past the stand-in's latency, it is still canceled: nothing completed it afterwards.
    await sleep(1700);
    const job = await getJob(easel, id);
    assert.equal(job.status, 'canceled');
    assert.equal(job.result, null);
    assert.equal(sent(easel, prompt).length, 1, 'not retried');
  });

  test('a finished job cannot be canceled (409); an unknown or foreign one is 404', async () => {
    const id = await submit(easel, 'cancel: too late');
    assert.equal((await waitForJob(easel, id)).status, 'succeeded');
    const res = await cancel(easel, id);
    assert.equal(res.status, 409);
    const body = (await res.json()) as any;
    assert.equal(body.error.code, 'job_already_finished');
    assert.equal(body.error.type, 'invalid_request_error');
    assert.equal((await getJob(easel, id)).status, 'succeeded');

    const { secret } = await createApiKey(easel.runtime.keys, { name: 'cancel-other' });
    assert.equal((await cancel(easel, id, secret)).status, 404);
    assert.equal((await cancel(easel, 'job_01HZZZZZZZZZZZZZZZZZZZZZZZ')).status, 404);
  });

  test('a synchronous request whose job is canceled answers 409 job_canceled', async () => {
    const { secret } = await createApiKey(easel.runtime.keys, { name: 'cancel-sync' });
    const pending = easel.api('/v1/images/generations', { method: 'POST', key: secret, json: { prompt: 'cancel: sync caller', model: 'test-model' } });
    const job = await until('the sync job to run', async () => {
      const list = (await (await easel.api('/v1/images/jobs?status=running', { key: secret })).json()) as any;
      return list.data[0];
    });
    assert.equal((await cancel(easel, job.id, secret)).status, 200);
    const res = await pending;
    assert.equal(res.status, 409);
    const body = (await res.json()) as any;
    assert.equal(body.error.code, 'job_canceled');
    assert.match(body.error.message, new RegExp(job.id));
    assert.equal(res.headers.get('x-should-retry'), 'false');
    assert.equal((await getJob(easel, job.id, secret)).status, 'canceled');
  });
});

describe('cancel racing completion', () => {
  let easel: TestEasel;
  before(async () => {
    easel = await startEasel({ standin: { latencyMs: 25 } });
  });
  after(() => easel.close());

  test('every accepted cancel ends canceled; a refused one found the job finished', async () => {
    const ids = await Promise.all(Array.from({ length: 40 }, (_, i) => submit(easel, `cancel race ${i}`)));
    const answers = await Promise.all(
      ids.map(async (id, i) => {
        await sleep((i * 7) % 80);
        const res = await cancel(easel, id);
        return { id, status: res.status, body: (await res.json()) as any };
      }),
    );
    let accepted = 0;
    for (const a of answers) {
      const final = await waitForJob(easel, a.id);
      if (a.status === 200) {
        accepted++;
        assert.equal(final.status, 'canceled', `job ${a.id}: cancel accepted (${a.body.status}) but it ended ${final.status}`);
      } else {
        assert.equal(a.status, 409);
        assert.equal(a.body.error.code, 'job_already_finished');
        assert.notEqual(final.status, 'canceled');
      }
    }
    assert.ok(accepted > 0, 'some cancels landed before the end');
  });
});
