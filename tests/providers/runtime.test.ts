/**
 * Hosted providers inside a running easel (API + worker in this process): the cost recorded on each
 * job, provider webhooks through easel's endpoint as the fast path, and crash-resume — a worker
 * stopped abruptly while a provider job is in flight, a new runtime on the same data folder, and
 * the stand-in seeing exactly one submission while the job still succeeds.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import type { OpenAIStandin } from '../support/openai-standin.ts';
import { REPLICATE_TOKEN, startReplicateStandin } from '../support/replicate-standin.ts';
import { FAL_KEY, startFalStandin } from '../support/fal-standin.ts';
import { BFL_KEY, startBflStandin } from '../support/bfl-standin.ts';
import { signStandardWebhook } from '../../src/backends/http/webhooks.ts';
import { until } from './standin-kit.ts';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

async function submit(easel: TestEasel, body: Record<string, unknown>, async = true): Promise<any> {
  const res = await easel.api('/v1/images/generations', { method: 'POST', json: body, headers: async ? { prefer: 'respond-async' } : {} });
  const json = (await res.json()) as any;
  assert.ok(res.status === 202 || res.status === 200, `submit answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

describe('hosted providers in a running easel', () => {
  let openai: OpenAIStandin;
  before(async () => {
    openai = await startOpenAIStandin({ strict: false });
  });
  after(() => openai.close());

  describe('cost per job', () => {
    test('from the price table when the backend reports none (OpenAI: dall-e-3 hd, gpt-image-1 low × 2)', async () => {
      const easel = await startEasel({ existingStandin: openai });
      try {
        const hd = await waitForJob(easel, (await submit(easel, { model: 'dall-e-3', prompt: 'a fox', quality: 'hd', size: '1024x1024' })).id);
        assert.equal(hd.status, 'succeeded');
        assert.equal(hd.cost_usd, 0.08);
        const low = await waitForJob(easel, (await submit(easel, { model: 'test-model', prompt: 'a fox', quality: 'low', n: 2, size: '1024x1024' })).id);
        assert.equal(low.status, 'succeeded');
        assert.equal(low.cost_usd, 0.022);
        const wide = await waitForJob(easel, (await submit(easel, { model: 'dall-e-3', prompt: 'a fox', size: '1792x1024' })).id);
        assert.equal(wide.cost_usd, 0.08);
      } finally {
        await easel.close();
      }
    });

    test('config overrides replace the defaults', async () => {
      const easel = await startEasel({
        existingStandin: openai,
        overrides: { pricing: { overrides: [{ backend: 'standin', model: 'dall-e-3', usdPerImage: 0.5 }] } },
      });
      try {
        const job = await waitForJob(easel, (await submit(easel, { model: 'dall-e-3', prompt: 'a fox' })).id);
        assert.equal(job.cost_usd, 0.5);
      } finally {
        await easel.close();
      }
    });

    test('a provider-reported cost wins over the table (BFL credits; Replicate predict time × hardware price)', async () => {
      const bfl = await startBflStandin({ cost: 7 });
      const rep = await startReplicateStandin({ predictTime: 2 });
      const easel = await startEasel({
        existingStandin: openai,
        overrides: {
          backends: [
            { type: 'bfl', name: 'bfl', baseUrl: bfl.url, apiKey: BFL_KEY, pollIntervalMs: 10 },
            { type: 'replicate', name: 'rep', baseUrl: rep.url, apiKey: REPLICATE_TOKEN, pollIntervalMs: 10, usdPerSecond: 0.0014 },
          ],
          models: [
            { name: 'flux-pro', backend: 'bfl', model: 'flux-pro-1.1', default: true },
            { name: 'schnell', backend: 'rep', model: 'black-forest-labs/flux-schnell' },
            { name: 'sdxl', backend: 'rep', model: 'stability-ai/sdxl' },
          ],
          pricing: { overrides: [{ backend: 'bfl', model: '*', usdPerImage: 9 }] },
        },
      });
      try {
        const b = await waitForJob(easel, (await submit(easel, { model: 'flux-pro', prompt: 'a fox', n: 2 })).id);
        assert.equal(b.status, 'succeeded');
        assert.equal(b.cost_usd, 0.14, '2 tasks × 7 credits, not the $9 table price');
        const r = await waitForJob(easel, (await submit(easel, { model: 'schnell', prompt: 'a fox', n: 2 })).id);
        assert.equal(r.status, 'succeeded');
        assert.equal(r.cost_usd, 0.0028, 'one prediction of 2 s at $0.0014/s');
      } finally {
        await easel.close();
        await bfl.close();
        await rep.close();
      }
    });

    test('Replicate without a hardware price: the table’s per-image price', async () => {
      const rep = await startReplicateStandin();
      const easel = await startEasel({
        existingStandin: openai,
        overrides: {
          backends: [{ type: 'replicate', name: 'rep', baseUrl: rep.url, apiKey: REPLICATE_TOKEN, pollIntervalMs: 10 }],
          models: [{ name: 'schnell', backend: 'rep', model: 'black-forest-labs/flux-schnell', default: true }],
        },
      });
      try {
        const job = await waitForJob(easel, (await submit(easel, { model: 'schnell', prompt: 'a fox', n: 3 })).id);
        assert.equal(job.status, 'succeeded');
        assert.equal(job.cost_usd, 0.009);
      } finally {
        await easel.close();
        await rep.close();
      }
    });
  });

  describe('provider webhooks at /hooks/providers/:backend', () => {
    test('Replicate: a signed webhook finishes the job long before the next poll; bad ones are refused', async () => {
      const rep = await startReplicateStandin();
      const port = await freePort();
      const easel = await startEasel({
        existingStandin: openai,
        overrides: {
          server: { port },
          backends: [
            {
              type: 'replicate',
              name: 'rep',
              baseUrl: rep.url,
              apiKey: REPLICATE_TOKEN,
              // The secret is fetched from GET /v1/webhooks/default/secret.
              webhookUrl: `http://127.0.0.1:${port}/hooks/providers/rep`,
              pollIntervalMs: 30_000,
              maxPollIntervalMs: 30_000,
            },
          ],
          models: [{ name: 'schnell', backend: 'rep', model: 'black-forest-labs/flux-schnell', default: true }],
        },
      });
      try {
        const started = Date.now();
        const job = await waitForJob(easel, (await submit(easel, { prompt: 'a fox' })).id, { timeoutMs: 10_000 });
        assert.equal(job.status, 'succeeded');
        assert.ok(Date.now() - started < 10_000, 'finished through the webhook, not a 30 s poll');
        const [create] = rep.creates();
        assert.equal(create.json.webhook, `http://127.0.0.1:${port}/hooks/providers/rep`);
        assert.deepEqual(create.json.webhook_events_filter, ['completed']);
        assert.ok(rep.deliveries.some((d) => d.status === 200));
        assert.equal(rep.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/predictions/')).length, 0, 'no poll was needed');

        const body = JSON.stringify({ id: 'p-x', status: 'succeeded', output: [] });
        const ts = Math.floor(Date.now() / 1000);
        const post = (headers: Record<string, string>, name = 'rep') =>
          fetch(`${easel.url}/hooks/providers/${name}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
        const good = signStandardWebhook(rep.webhookSecret, 'msg_1', ts, body);
        assert.equal((await post({ 'webhook-id': 'msg_1', 'webhook-timestamp': String(ts), 'webhook-signature': good })).status, 200);
        const wrong = signStandardWebhook('whsec_' + Buffer.alloc(24, 7).toString('base64'), 'msg_2', ts, body);
        assert.equal((await post({ 'webhook-id': 'msg_2', 'webhook-timestamp': String(ts), 'webhook-signature': wrong })).status, 401);
        const stale = signStandardWebhook(rep.webhookSecret, 'msg_3', ts - 600, body);
        assert.equal((await post({ 'webhook-id': 'msg_3', 'webhook-timestamp': String(ts - 600), 'webhook-signature': stale })).status, 401);
        assert.equal((await post({ 'webhook-id': 'msg_1', 'webhook-timestamp': String(ts), 'webhook-signature': good }, 'nope')).status, 404);
        assert.equal((await post({ 'webhook-id': 'msg_1', 'webhook-timestamp': String(ts), 'webhook-signature': good }, 'standin')).status, 404, 'the OpenAI backend takes no webhooks');
      } finally {
        await easel.close();
        await rep.close();
      }
    });

    test('fal: an Ed25519-signed webhook carries the result; a forged one is refused', async () => {
      const fal = await startFalStandin();
      const port = await freePort();
      const easel = await startEasel({
        existingStandin: openai,
        overrides: {
          server: { port },
          backends: [
            {
              type: 'fal',
              name: 'fal',
              queueUrl: fal.url,
              jwksUrl: fal.jwksUrl,
              apiKey: FAL_KEY,
              webhookUrl: `http://127.0.0.1:${port}/hooks/providers/fal`,
              pollIntervalMs: 30_000,
              maxPollIntervalMs: 30_000,
            },
          ],
          models: [{ name: 'schnell', backend: 'fal', model: 'fal-ai/flux/schnell', default: true }],
        },
      });
      try {
        const job = await waitForJob(easel, (await submit(easel, { prompt: 'a fox', n: 2 })).id, { timeoutMs: 10_000 });
        assert.equal(job.status, 'succeeded');
        assert.equal(job.cost_usd, 0.006, 'two 1024² FLUX schnell images at $0.003 per megapixel');
        const [sub] = fal.submits();
        assert.equal(sub.query.get('fal_webhook'), `http://127.0.0.1:${port}/hooks/providers/fal`);
        assert.ok(fal.deliveries.some((d) => d.status === 200));
        assert.equal(fal.requests.filter((r) => r.path.endsWith('/status')).length, 0, 'no status poll');
        assert.equal(fal.requests.filter((r) => /\/requests\/[\w-]+$/.test(r.path)).length, 0, 'the webhook payload was the result');

        const { generateKeyPairSync } = await import('node:crypto');
        const body = JSON.stringify({ request_id: 'req-x', status: 'OK', payload: {} });
        const forged = fal.signWebhook('req-x', body, { key: generateKeyPairSync('ed25519').privateKey });
        const res = await fetch(`${easel.url}/hooks/providers/fal`, { method: 'POST', headers: { 'content-type': 'application/json', ...forged }, body });
        assert.equal(res.status, 401);
      } finally {
        await easel.close();
        await fal.close();
      }
    });
  });

  describe('crash-resume: never pay twice', () => {
    const cases = [
      {
        name: 'Replicate',
        start: () => startReplicateStandin({ hold: true }),
        backend: (url: string) => ({ type: 'replicate', name: 'prov', baseUrl: url, apiKey: REPLICATE_TOKEN, pollIntervalMs: 20, maxPollIntervalMs: 50 }),
        model: 'black-forest-labs/flux-schnell',
        submissions: (s: any) => s.creates().length,
        releaseWhileDown: false,
      },
      {
        name: 'fal',
        start: () => startFalStandin({ hold: true }),
        backend: (url: string) => ({ type: 'fal', name: 'prov', queueUrl: url, apiKey: FAL_KEY, pollIntervalMs: 20, maxPollIntervalMs: 50 }),
        model: 'fal-ai/flux/schnell',
        submissions: (s: any) => s.submits().length,
        releaseWhileDown: true,
      },
      {
        name: 'Black Forest Labs',
        start: () => startBflStandin({ hold: true }),
        backend: (url: string) => ({ type: 'bfl', name: 'prov', baseUrl: url, apiKey: BFL_KEY, pollIntervalMs: 20, maxPollIntervalMs: 50 }),
        model: 'flux-pro-1.1',
        submissions: (s: any) => s.submits().length,
        releaseWhileDown: false,
      },
    ];

    for (const c of cases) {
      test(`${c.name}: the worker stops mid-job, a new one resumes the saved handle; one submission, job succeeds`, async () => {
        const standin: any = await c.start();
        const dataDir = mkdtempSync(join(tmpdir(), 'easel-resume-'));
        const overrides = {
          backends: [c.backend(standin.url)],
          models: [{ name: 'hosted', backend: 'prov', model: c.model, default: true }],
          queue: { visibilityTimeoutSeconds: 5 },
        };
        let second: TestEasel | undefined;
        try {
          const first = await startEasel({ existingStandin: openai, dataDir, overrides });
          const { id } = await submit(first, { prompt: 'a fox' });
          await until('the provider job was submitted', () => c.submissions(standin) === 1);
          const saved = await until('the handle was saved with the job', async () => (await first.runtime.store.getJob(id))?.backendState);
          assert.equal((saved as any).tasks.length, 1);
          // Abrupt: no grace, the in-flight job is handed back to the queue unfinished.
          await first.runtime.stop(0);
          const afterStop = await first.runtime.store.getJob(id).catch(() => undefined);
          assert.notEqual(afterStop?.status, 'succeeded');
          if (c.releaseWhileDown) {
            standin.setHold(false);
            standin.release();
          }

          const polls = () => standin.requests.filter((r: any) => r.method === 'GET' && !r.path.startsWith('/files') && !r.path.startsWith('/delivery')).length;
          const pollsBefore = polls();

          second = await startEasel({ existingStandin: openai, dataDir, overrides });
          if (!c.releaseWhileDown) {
            await until('the new worker polls the saved handle', () => polls() > pollsBefore);
            assert.equal((await second.runtime.store.getJob(id))?.status, 'running');
            standin.setHold(false);
            standin.release();
          }
          const job = await waitForJob(second, id, { timeoutMs: 15_000 });
          assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
          assert.ok(polls() > pollsBefore, 'the second runtime waited on the provider job');
          assert.equal(c.submissions(standin), 1, 'the provider saw exactly one submission');
          assert.equal((await second.runtime.store.getJob(id))?.attempt, 2, 'finished by the second delivery');
          const stored = await second.runtime.store.listImagesForJob(id);
          assert.equal(stored.length, 1);
        } finally {
          await second?.runtime.stop(1000);
          await standin.close();
          rmSync(dataDir, { recursive: true, force: true });
        }
      });
    }
  });
});
