/**
 * Scale-out shape: the provider's webhook reaches an API process while the call waiting on it runs
 * in a worker process. The API relays it (Redis pub/sub) and the worker verifies it again, so the
 * job finishes at once instead of at the next poll.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { startEasel, waitForJob } from '../support/easel.ts';
import { startOpenAIStandin } from '../support/openai-standin.ts';
import { REPLICATE_TOKEN, startReplicateStandin } from '../support/replicate-standin.ts';
import { startRedis } from '../support/redis.ts';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

test('a webhook received by the API wakes the waiting call in a separate worker', async (t) => {
  const redis = await startRedis();
  if (!redis) return t.skip('redis-server is not installed');
  const openai = await startOpenAIStandin({ strict: false });
  const rep = await startReplicateStandin();
  const port = await freePort();
  const overrides = {
    server: { port },
    redis: { url: redis.url, prefix: `relay${Date.now()}` },
    backends: [
      {
        type: 'replicate',
        name: 'rep',
        baseUrl: rep.url,
        apiKey: REPLICATE_TOKEN,
        webhookUrl: `http://127.0.0.1:${port}/hooks/providers/rep`,
        // Polls so slow that only the relayed webhook can finish the job within the test's limit.
        pollIntervalMs: 60_000,
        maxPollIntervalMs: 60_000,
      },
    ],
    models: [{ name: 'schnell', backend: 'rep', model: 'black-forest-labs/flux-schnell', default: true }],
  };
  const api = await startEasel({ existingStandin: openai, roles: { api: true, worker: false }, overrides });
  const worker = await startEasel({ existingStandin: openai, roles: { api: false, worker: true }, dataDir: api.dataDir, overrides: { ...overrides, server: { port: 0 } } });
  try {
    const res = await api.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a fox' }, headers: { prefer: 'respond-async' } });
    assert.equal(res.status, 202);
    const started = Date.now();
    const job = await waitForJob(api, ((await res.json()) as any).id, { timeoutMs: 20_000 });
    assert.equal(job.status, 'succeeded');
    assert.ok(Date.now() - started < 20_000);
    assert.ok(rep.deliveries.some((d) => d.status === 200), 'the API accepted the webhook');
    assert.equal(rep.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/predictions/')).length, 0, 'no poll was needed');
    assert.equal(rep.creates().length, 1);
  } finally {
    await worker.close();
    await api.close();
    await rep.close();
    await openai.close();
    await redis.stop();
  }
});
