/**
 * Starts a real easel (API + worker, or either) in this process on a random port, with a temp data
 * folder and the OpenAI stand-in as its backend. Config overrides pick the Redis/Postgres/S3 stack.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Runtime } from '../../src/app.ts';
import type { Roles, RuntimeOptions } from '../../src/app.ts';
import { loadConfig } from '../../src/config/load.ts';
import { startOpenAIStandin, DEFAULT_STANDIN_KEY } from './openai-standin.ts';
import type { OpenAIStandin, OpenAIStandinOptions } from './openai-standin.ts';

export interface TestEasel {
  runtime: Runtime;
  url: string;
  adminKey: string;
  standin: OpenAIStandin;
  dataDir: string;
  /** POST/GET helper with the admin key (or another). */
  api(path: string, init?: RequestInit & { key?: string; json?: unknown }): Promise<Response>;
  close(): Promise<void>;
}

export function standinBackendConfig(standin: OpenAIStandin) {
  return {
    // The stand-in plays OpenAI itself: OpenAI's per-model rules apply and its list prices are charged.
    backends: [{ type: 'openai', name: 'standin', baseUrl: standin.url, apiKey: DEFAULT_STANDIN_KEY, extraBodyFields: true, modelRules: 'on', listPrices: true }],
    models: [
      { name: 'test-model', backend: 'standin', model: 'gpt-image-1', default: true },
      { name: 'dall-e-3', backend: 'standin', model: 'dall-e-3' },
      { name: 'dall-e-2', backend: 'standin', model: 'dall-e-2' },
    ],
  };
}

export async function startEasel(
  opts: {
    overrides?: Record<string, any>;
    roles?: Roles;
    standin?: OpenAIStandinOptions;
    existingStandin?: OpenAIStandin;
    dataDir?: string;
    /** Passed to the Runtime (e.g. `backendFactories` for a test backend). */
    runtime?: Omit<RuntimeOptions, 'log'>;
    /** The runtime's logger (default: pino at EASEL_TEST_LOG, else silent). */
    log?: RuntimeOptions['log'];
    /** Called with the built runtime before it starts (its API server has not registered its routes yet). */
    beforeStart?: (runtime: Runtime) => void;
  } = {},
): Promise<TestEasel> {
  const standin = opts.existingStandin ?? (await startOpenAIStandin({ strict: false, ...opts.standin }));
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'easel-test-'));
  const adminKey = 'easel_sk_test_admin_key_0123456789abcdef';
  const config = loadConfig({
    env: {},
    overrides: {
      dataDir,
      // Every JSON answer is checked against its route's declared schema: drift is a 500 and a failed test.
      server: { host: '127.0.0.1', port: 0, validateResponses: true, ...(opts.overrides?.server ?? {}) },
      auth: { adminKey },
      logging: { level: process.env.EASEL_TEST_LOG ?? 'silent' },
      // Tests submit many requests quickly with one key: rate limits are off unless a test turns them on.
      rateLimits: { enabled: false },
      ...standinBackendConfig(standin),
      ...Object.fromEntries(Object.entries(opts.overrides ?? {}).filter(([k]) => k !== 'server')),
    },
  });
  const runtime = new Runtime(config, opts.roles ?? { api: true, worker: true }, {
    log: opts.log ?? pino({ level: config.logging.level }),
    ...opts.runtime,
  });
  opts.beforeStart?.(runtime);
  await runtime.start();
  const url = runtime.url ?? '';
  return {
    runtime,
    url,
    adminKey,
    standin,
    dataDir,
    api: (path, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${init.key ?? adminKey}`);
      let body = init.body;
      if (init.json !== undefined) {
        headers.set('content-type', 'application/json');
        body = JSON.stringify(init.json);
      }
      return fetch(`${url}${path}`, { ...init, headers, body });
    },
    close: async () => {
      await runtime.stop(1000);
      if (!opts.existingStandin) await standin.close();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls a job until it is terminal (tests only; the API's own waiting is event-driven). */
export async function waitForJob(easel: TestEasel, id: string, opts: { key?: string; timeoutMs?: number } = {}): Promise<any> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  for (;;) {
    const res = await easel.api(`/v1/images/jobs/${id}`, { key: opts.key });
    const job = (await res.json()) as any;
    if (['succeeded', 'failed', 'canceled'].includes(job.status)) return job;
    if (Date.now() > deadline) throw new Error(`job ${id} still ${job.status} after timeout`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
