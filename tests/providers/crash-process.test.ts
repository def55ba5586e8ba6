/**
 * The real crash: `easel serve` as a child process, SIGKILLed while a Replicate prediction and a
 * BFL task are in flight, then started again on the same data folder. The stand-ins (in this
 * process) must see exactly one submission each, and both jobs must still succeed.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ProcessGroup, writeConfig } from '../support/processes.ts';
import type { EaselProcess } from '../support/processes.ts';
import { REPLICATE_TOKEN, startReplicateStandin } from '../support/replicate-standin.ts';
import type { ReplicateStandin } from '../support/replicate-standin.ts';
import { BFL_KEY, startBflStandin } from '../support/bfl-standin.ts';
import type { BflStandin } from '../support/bfl-standin.ts';
import { until } from './standin-kit.ts';

const ADMIN_KEY = 'easel_sk_test_admin_key_0123456789abcdef';

describe('SIGKILL while hosted-provider jobs are in flight', () => {
  const procs = new ProcessGroup();
  let rep: ReplicateStandin;
  let bfl: BflStandin;
  let root: string;
  let configFile: string;

  before(async () => {
    rep = await startReplicateStandin({ hold: true });
    bfl = await startBflStandin({ hold: true });
    root = mkdtempSync(join(tmpdir(), 'easel-provider-crash-'));
    configFile = writeConfig(join(root, 'easel.yaml'), {
      dataDir: join(root, 'data'),
      server: { host: '127.0.0.1', port: 0 },
      auth: { adminKey: ADMIN_KEY },
      queue: { visibilityTimeoutSeconds: 2, pollIntervalMs: 50 },
      logging: { level: 'info' },
      backends: [
        { type: 'replicate', name: 'rep', baseUrl: rep.url, apiKey: REPLICATE_TOKEN, pollIntervalMs: 50, maxPollIntervalMs: 100 },
        { type: 'bfl', name: 'bfl', baseUrl: bfl.url, apiKey: BFL_KEY, pollIntervalMs: 50, maxPollIntervalMs: 100 },
      ],
      models: [
        { name: 'schnell', backend: 'rep', model: 'black-forest-labs/flux-schnell', default: true },
        { name: 'flux-pro', backend: 'bfl', model: 'flux-pro-1.1' },
      ],
    });
  });

  afterEach((t) => {
    if ((t as { passed?: boolean }).passed === false) process.stderr.write(`\nchild output:\n${procs.logs()}\n`);
  });

  after(async () => {
    await procs.killAll();
    await rep?.close();
    await bfl?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test('after a restart each provider saw one submission and both jobs succeed', async () => {
    const call = (p: EaselProcess, path: string, init: RequestInit & { json?: unknown } = {}) =>
      fetch(`${p.url}${path}`, {
        ...init,
        headers: { authorization: `Bearer ${ADMIN_KEY}`, ...(init.json !== undefined ? { 'content-type': 'application/json' } : {}), ...(init.headers as Record<string, string>) },
        body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
      });
    const first = await procs.spawn('serve', { configFile });
    const ids: string[] = [];
    for (const model of ['schnell', 'flux-pro']) {
      const res = await call(first, '/v1/images/generations', { method: 'POST', json: { model, prompt: 'a fox' }, headers: { prefer: 'respond-async' } });
      assert.equal(res.status, 202);
      ids.push(((await res.json()) as { id: string }).id);
    }
    // Polls start only after the handle is saved with the job.
    await until('Replicate polled', () => rep.requests.some((r) => r.method === 'GET' && r.path.startsWith('/v1/predictions/')), 20_000);
    await until('BFL polled', () => bfl.requests.some((r) => r.path.endsWith('/get_result')), 20_000);
    await first.kill9();
    // One finishes while easel is down, the other after it is back.
    bfl.setHold(false);
    bfl.release();

    const second = await procs.spawn('serve', { configFile });
    const pollsBefore = rep.requests.filter((r) => r.method === 'GET').length;
    await until('the restarted worker polls Replicate', () => rep.requests.filter((r) => r.method === 'GET').length > pollsBefore, 20_000);
    rep.setHold(false);
    rep.release();

    for (const id of ids) {
      const job = await until(
        `job ${id} finished`,
        async () => {
          const j = (await (await call(second, `/v1/images/jobs/${id}`)).json()) as { status: string };
          return ['succeeded', 'failed', 'canceled'].includes(j.status) ? j : undefined;
        },
        30_000,
        100,
      );
      assert.equal(job.status, 'succeeded', JSON.stringify(job));
    }
    assert.equal(rep.creates().length, 1, 'Replicate saw exactly one prediction');
    assert.equal(bfl.submits().length, 1, 'BFL saw exactly one task');
  });
});
