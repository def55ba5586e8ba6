/** Health and readiness probes, sync time limits and queue priorities. */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { startEasel, waitForJob } from '../support/easel.ts';

describe('probes', () => {
  test('/health answers; /ready reports each dependency and needs a healthy backend', async () => {
    const easel = await startEasel();
    try {
      assert.equal((await fetch(`${easel.url}/health`)).status, 200);
      const ready = await fetch(`${easel.url}/ready`);
      const body = (await ready.json()) as any;
      assert.equal(ready.status, 200, JSON.stringify(body));
      for (const c of ['database', 'queue', 'storage', 'backends']) assert.equal(body.checks[c].ok, true, c);
    } finally {
      await easel.close().catch(() => {});
    }
  });

  test('/ready is 503 and says why when no backend is reachable', async () => {
    const { startOpenAIStandin } = await import('../support/openai-standin.ts');
    const gone = await startOpenAIStandin();
    await gone.close();
    const easel = await startEasel({ existingStandin: gone });
    try {
      const down = await fetch(`${easel.url}/ready`);
      assert.equal(down.status, 503);
      const body = (await down.json()) as any;
      assert.equal(body.checks.backends.ok, false);
      assert.equal(body.checks.backends.message, 'no backend can take work', 'which check, not the internals (no key is needed for /ready)');
      assert.equal(body.checks.database.ok, true);
      // Why is for admin keys: /v1/system names the backend and its error.
      const system = (await (await easel.api('/v1/system')).json()) as any;
      assert.equal(system.backends[0].name, 'standin');
      assert.equal(system.backends[0].ok, false);
      assert.ok(system.backends[0].message);
    } finally {
      await easel.close().catch(() => {});
    }
  });
});

describe('sync time limit', () => {
  test('past the limit the client gets an error naming the job, and the job still finishes', async () => {
    const easel = await startEasel({ overrides: { server: { syncTimeoutSeconds: 0.3 } }, standin: { latencyMs: 1200 } });
    try {
      const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'slow one' } });
      assert.equal(res.status, 504);
      assert.equal(res.headers.get('x-should-retry'), 'false');
      const body = (await res.json()) as any;
      assert.equal(body.error.code, 'sync_timeout');
      const id = /job_[0-9A-Z]{26}/.exec(body.error.message)?.[0];
      assert.ok(id, body.error.message);
      const done = await waitForJob(easel, id);
      assert.equal(done.status, 'succeeded');
    } finally {
      await easel.close();
    }
  });
});

describe('priorities', () => {
  test('high runs before normal before low when jobs wait', async () => {
    const easel = await startEasel({ overrides: { worker: { concurrency: 1 } }, standin: { latencyMs: 300 } });
    try {
      const submit = async (prompt: string, priority?: string) => {
        const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt, async: true, ...(priority ? { priority } : {}) } });
        return ((await res.json()) as any).id as string;
      };
      const first = await submit('blocker');
      await new Promise((r) => setTimeout(r, 100)); // the blocker holds the only worker slot
      const ids = [await submit('low-1', 'low'), await submit('normal-1'), await submit('high-1', 'high'), await submit('low-2', 'low'), await submit('high-2', 'high')];
      for (const id of [first, ...ids]) await waitForJob(easel, id);
      const order = easel.standin.requests.filter((r) => r.path === '/v1/images/generations').map((r) => r.body?.prompt);
      assert.deepEqual(order, ['blocker', 'high-1', 'high-2', 'normal-1', 'low-1', 'low-2']);
    } finally {
      await easel.close();
    }
  });
});
