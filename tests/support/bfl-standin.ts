/**
 * A loopback stand-in for Black Forest Labs' API (PROTOCOLS.md §6) with its quirks: the key goes in
 * `x-key`; submit answers `{id, polling_url, cost}` and the task is only visible on the polling URL's
 * region (here `/eu/v1/get_result`; the global `/v1/get_result` says `Task not found`); statuses are
 * strings with spaces (`Pending`, `Ready`, `Request Moderated`, `Content Moderated`, `Error`,
 * `Task not found`); `result.sample` is a signed URL that expires (10 minutes by default, shorter in
 * tests), after which it answers 403; a poll after expiry hands out a fresh URL.
 *
 * Prompts steer outcomes: `moderate-request`, `moderate-content`, `fail`.
 */
import { createHmac } from 'node:crypto';
import { standinPng } from './openai-standin.ts';
import { standinId, startStandinServer } from '../providers/standin-kit.ts';
import type { Injected, Recorded, StandinServer } from '../providers/standin-kit.ts';

export const BFL_KEY = 'bfl_standin_key';

export interface BflStandinOptions {
  key?: string;
  runMs?: number;
  hold?: boolean;
  /** How long a sample URL stays valid (default 10 minutes). */
  sampleTtlMs?: number;
  /** Credits reported at submit (default 4); null reports none. */
  cost?: number | null;
}

export interface BflTask {
  id: string;
  model: string;
  body: Record<string, any>;
  status: 'Pending' | 'Ready' | 'Request Moderated' | 'Content Moderated' | 'Error';
  progress: number;
  readyAt?: number;
}

export interface BflStandin {
  url: string;
  server: StandinServer;
  requests: Recorded[];
  tasks: Map<string, BflTask>;
  submits(): Recorded[];
  release(id?: string): void;
  setHold(hold: boolean): void;
  /** The next sample URL handed out is already expired. */
  expireNextSample(): void;
  inject(f: Injected): void;
  close(): Promise<void>;
}

export async function startBflStandin(opts: BflStandinOptions = {}): Promise<BflStandin> {
  const key = opts.key ?? BFL_KEY;
  const png = standinPng(64, 64).png;
  const tasks = new Map<string, BflTask>();
  const held = new Set<string>();
  const signing = 'standin-signing-secret';
  let hold = opts.hold ?? false;
  let expireNext = false;
  let origin = '';

  const sign = (path: string, exp: number) => createHmac('sha256', signing).update(`${path}:${exp}`).digest('hex').slice(0, 16);

  function finish(t: BflTask) {
    if (t.status !== 'Pending') return;
    const prompt = String(t.body.prompt ?? '');
    t.progress = 1;
    t.status = /moderate-request/.test(prompt) ? 'Request Moderated' : /moderate-content/.test(prompt) ? 'Content Moderated' : /\bfail\b/.test(prompt) ? 'Error' : 'Ready';
    t.readyAt = Date.now();
  }

  const server = await startStandinServer(
    async (req, reply) => {
      if (req.method === 'GET' && req.path.startsWith('/delivery/')) {
        const exp = Number(req.query.get('exp'));
        const sig = req.query.get('sig');
        if (!sig || sig !== sign(req.path, exp) || Date.now() > exp) {
          return reply.json(403, { detail: 'Request has expired' });
        }
        return reply.bytes(200, png, { 'content-type': 'image/png' });
      }
      if (req.headers['x-key'] !== key) return reply.json(403, { detail: 'Not authenticated - Invalid Authentication' });
      if (req.method === 'GET' && (req.path === '/eu/v1/get_result' || req.path === '/v1/get_result')) {
        const id = req.query.get('id') ?? '';
        const t = tasks.get(id);
        if (!t || req.path === '/v1/get_result') return reply.json(200, { id, status: 'Task not found', result: null, progress: null, details: null });
        if (t.status === 'Pending') return reply.json(200, { id, status: 'Pending', result: null, progress: t.progress, details: null });
        if (t.status === 'Ready') {
          const path = `/delivery/${id}/sample.png`;
          const exp = expireNext ? Date.now() - 1 : Date.now() + (opts.sampleTtlMs ?? 600_000);
          expireNext = false;
          return reply.json(200, {
            id,
            status: 'Ready',
            result: { sample: `${origin}${path}?exp=${exp}&sig=${sign(path, exp)}`, prompt: t.body.prompt, seed: t.body.seed ?? 777, start_time: 1, end_time: 2, duration: 1 },
            progress: 1,
            details: null,
          });
        }
        if (t.status === 'Request Moderated' || t.status === 'Content Moderated') {
          return reply.json(200, { id, status: t.status, result: null, progress: null, details: { 'Moderation Reasons': ['Derivative Works Filter'] } });
        }
        return reply.json(200, { id, status: 'Error', result: null, progress: null, details: null, error: 'Internal processing error' });
      }
      const submit = /^\/v1\/([\w.-]+)$/.exec(req.path);
      if (req.method === 'POST' && submit) {
        const body = req.json;
        if (!body || typeof body.prompt !== 'string') return reply.json(422, { detail: [{ loc: ['body', 'prompt'], msg: 'field required', type: 'missing' }] });
        for (const side of ['width', 'height']) {
          const v = body[side];
          if (v !== undefined && (typeof v !== 'number' || v % 32 !== 0 || v < 256 || v > 1440) && !submit[1]!.startsWith('flux-2')) {
            return reply.json(422, { detail: [{ loc: ['body', side], msg: 'must be a multiple of 32 between 256 and 1440', type: 'value_error' }] });
          }
        }
        const id = standinId('');
        const t: BflTask = { id, model: submit[1]!, body, status: 'Pending', progress: 0 };
        tasks.set(id, t);
        setTimeout(() => {
          t.progress = 0.5;
          if (hold) held.add(id);
          else setTimeout(() => finish(t), opts.runMs ?? 30);
        }, 10);
        return reply.json(200, {
          id,
          polling_url: `${origin}/eu/v1/get_result?id=${id}`,
          ...(opts.cost === null ? {} : { cost: opts.cost ?? 4 }),
          input_mp: 1,
          output_mp: 1,
        });
      }
      return reply.json(404, { detail: 'Not Found' });
    },
    { isApiCall: (r) => !r.path.startsWith('/delivery/') },
  );
  origin = server.url;

  return {
    url: server.url,
    server,
    requests: server.requests,
    tasks,
    submits: () => server.requests.filter((r) => r.method === 'POST' && r.status === 200),
    release(id) {
      for (const tid of id ? [id] : [...held]) {
        held.delete(tid);
        const t = tasks.get(tid);
        if (t) finish(t);
      }
    },
    setHold(value) {
      hold = value;
    },
    expireNextSample() {
      expireNext = true;
    },
    inject: server.inject,
    close: server.close,
  };
}
