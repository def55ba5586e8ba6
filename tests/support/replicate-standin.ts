/**
 * A loopback stand-in for Replicate's HTTP API (PROTOCOLS.md §4) with the quirks clients trip over:
 * create answers **201**; `Prefer: wait=n` holds the request but can still answer an unfinished
 * prediction (with `Location`); `output` is an array of URLs or a single URL string; predictions can
 * end `failed` (NSFW), `canceled` or `aborted`; output files expire; webhooks are signed the
 * Standard Webhooks way (here with the reference `standardwebhooks` library, independent of easel).
 *
 * Prompts steer outcomes: `nsfw` fails with Replicate's NSFW message, `crash` fails with a CUDA
 * error, `abort-me` ends `aborted` (Cancel-After passed before start).
 */
import { randomBytes } from 'node:crypto';
import { Webhook } from 'standardwebhooks';
import { standinPng } from './openai-standin.ts';
import { sleep, standinId, startStandinServer } from '../providers/standin-kit.ts';
import type { Injected, Recorded, StandinServer } from '../providers/standin-kit.ts';

export const REPLICATE_TOKEN = 'r8_standin_token';

export interface ReplicateStandinOptions {
  token?: string;
  /** ms spent `starting` before `processing`. */
  startMs?: number;
  /** ms from `processing` to `succeeded` (ignored while held). */
  runMs?: number;
  /** New predictions stay `processing` until `release()`. */
  hold?: boolean;
  /** `array` (default) or a single URL `string`. */
  outputShape?: 'array' | 'string';
  /** `metrics.predict_time` reported (seconds). */
  predictTime?: number;
  /** Webhook signing secret (`whsec_…`); generated when absent. */
  webhookSecret?: string;
  /** Longest a `Prefer: wait` is honoured here (tests stay fast), default 150 ms. */
  waitCapMs?: number;
  /** How long output files are served (default one hour). */
  fileTtlMs?: number;
}

export interface StandinPrediction {
  id: string;
  model: string;
  version: string;
  input: Record<string, any>;
  output: unknown;
  logs: string;
  error: string | null;
  status: 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled' | 'aborted';
  created_at: string;
  started_at?: string;
  completed_at?: string;
  webhook?: string;
  webhook_events_filter?: string[];
  urls: { get: string; cancel: string; web: string };
  metrics: { predict_time?: number; total_time?: number };
  source: 'api';
  data_removed: false;
}

export interface ReplicateStandin {
  url: string;
  server: StandinServer;
  requests: Recorded[];
  predictions: Map<string, StandinPrediction>;
  webhookSecret: string;
  /** Webhook deliveries made: url, answer status. */
  deliveries: { url: string; status: number; predictionId: string }[];
  /** Create calls (any create route). */
  creates(): Recorded[];
  /** Finishes held predictions (all, or one). */
  release(id?: string): void;
  setHold(hold: boolean): void;
  inject(f: Injected): void;
  close(): Promise<void>;
}

const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'aborted']);
const CREATE = /^\/v1\/(predictions|models\/[^/]+\/[^/]+\/predictions|deployments\/[^/]+\/[^/]+\/predictions)$/;

export async function startReplicateStandin(opts: ReplicateStandinOptions = {}): Promise<ReplicateStandin> {
  const token = opts.token ?? REPLICATE_TOKEN;
  const secret = opts.webhookSecret ?? `whsec_${randomBytes(24).toString('base64')}`;
  const signer = new Webhook(secret);
  const png = standinPng(64, 64).png;
  const predictions = new Map<string, StandinPrediction>();
  const held = new Set<string>();
  const deliveries: ReplicateStandin['deliveries'] = [];
  const files = new Map<string, number>();
  let hold = opts.hold ?? false;
  let origin = '';

  const view = (p: StandinPrediction) => ({ ...p });

  async function deliver(p: StandinPrediction, event: string) {
    if (!p.webhook) return;
    const filter = p.webhook_events_filter;
    if (filter && !filter.includes(event)) return;
    if (!filter && event !== 'completed' && event !== 'output') return;
    const body = JSON.stringify(view(p));
    const id = `msg_${standinId('')}`;
    const signature = signer.sign(id, new Date(), body);
    const ts = String(Math.floor(Date.now() / 1000));
    try {
      const res = await fetch(p.webhook, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': ts, 'webhook-signature': signature },
        body,
      });
      await res.arrayBuffer();
      deliveries.push({ url: p.webhook, status: res.status, predictionId: p.id });
    } catch {
      deliveries.push({ url: p.webhook, status: 0, predictionId: p.id });
    }
  }

  function finish(p: StandinPrediction) {
    if (TERMINAL.has(p.status)) return;
    const prompt = String(p.input.prompt ?? '');
    p.completed_at = new Date().toISOString();
    p.metrics = { predict_time: opts.predictTime ?? 1.5, total_time: (opts.predictTime ?? 1.5) + 0.5 };
    if (/\bnsfw\b/i.test(prompt)) {
      p.status = 'failed';
      p.error = 'NSFW content detected. Try running it again, or try a different prompt.';
    } else if (/\bcrash\b/i.test(prompt)) {
      p.status = 'failed';
      p.error = 'CUDA out of memory';
    } else {
      const count = Number(p.input.num_outputs ?? 1);
      const urls = Array.from({ length: count }, (_, i) => {
        const name = `${p.id}-${i}.png`;
        files.set(name, Date.now() + (opts.fileTtlMs ?? 3_600_000));
        return `${origin}/files/${name}`;
      });
      p.output = opts.outputShape === 'string' ? urls[0] : urls;
      p.status = 'succeeded';
      p.logs += 'Using seed: 42\n100%|██████████| 4/4\n';
    }
    void deliver(p, 'completed');
  }

  function schedule(p: StandinPrediction) {
    const prompt = String(p.input.prompt ?? '');
    if (/\babort-me\b/i.test(prompt)) {
      setTimeout(() => {
        p.status = 'aborted';
        p.completed_at = new Date().toISOString();
        void deliver(p, 'completed');
      }, opts.startMs ?? 10);
      return;
    }
    setTimeout(() => {
      if (TERMINAL.has(p.status)) return;
      p.status = 'processing';
      p.started_at = new Date().toISOString();
      p.logs = ' 50%|█████     | 2/4\n';
      void deliver(p, 'start');
      if (hold) {
        held.add(p.id);
        return;
      }
      setTimeout(() => finish(p), opts.runMs ?? 40);
    }, opts.startMs ?? 10);
  }

  const server = await startStandinServer(
    async (req, reply) => {
      if (req.method === 'GET' && req.path.startsWith('/files/')) {
        const name = req.path.slice('/files/'.length);
        const until = files.get(name);
        if (until === undefined || Date.now() > until) return reply.json(404, { detail: 'Not found' });
        return reply.bytes(200, png, { 'content-type': 'image/png' });
      }
      if (req.headers.authorization !== `Bearer ${token}`) {
        return reply.json(401, { title: 'Unauthenticated', detail: 'You did not pass a valid authentication token', status: 401 });
      }
      if (req.method === 'POST' && CREATE.test(req.path)) {
        const body = req.json ?? {};
        if (!body.input || typeof body.input !== 'object' || typeof body.input.prompt !== 'string') {
          return reply.json(422, {
            title: 'Input validation failed',
            detail: '- input: prompt is required\n',
            status: 422,
            invalid_fields: [{ type: 'required', field: 'input', description: 'prompt is required' }],
          });
        }
        let model: string;
        let version: string;
        const official = /^\/v1\/(models|deployments)\/([^/]+)\/([^/]+)\/predictions$/.exec(req.path);
        if (official) {
          model = `${official[2]}/${official[3]}`;
          version = 'hidden';
          if (body.version !== undefined) return reply.json(422, { title: 'Invalid input', detail: 'version is not allowed here', status: 422 });
        } else {
          if (typeof body.version !== 'string' || !/^([^/]+\/[^/:]+:)?[0-9a-f]{64}$|^[^/]+\/[^/:]+$/.test(body.version)) {
            return reply.json(422, { title: 'Invalid version or not permitted', detail: 'The specified version does not exist (or perhaps you do not have permission to use it?)', status: 422 });
          }
          version = body.version.includes(':') ? body.version.split(':')[1] : body.version;
          model = body.version.includes('/') ? body.version.split(':')[0] : 'someone/some-model';
        }
        const id = standinId('p');
        const p: StandinPrediction = {
          id,
          model,
          version,
          input: body.input,
          output: null,
          logs: '',
          error: null,
          status: 'starting',
          created_at: new Date().toISOString(),
          urls: { get: `${origin}/v1/predictions/${id}`, cancel: `${origin}/v1/predictions/${id}/cancel`, web: `https://replicate.com/p/${id}` },
          metrics: {},
          source: 'api',
          data_removed: false,
          ...(typeof body.webhook === 'string' ? { webhook: body.webhook } : {}),
          ...(Array.isArray(body.webhook_events_filter) ? { webhook_events_filter: body.webhook_events_filter } : {}),
        };
        predictions.set(id, p);
        schedule(p);
        const prefer = String(req.headers.prefer ?? '');
        const m = /wait(?:=(\d+))?/.exec(prefer);
        if (m) {
          const seconds = m[1] ? Number(m[1]) : 60;
          if (seconds < 1 || seconds > 60) return reply.json(400, { title: 'Bad Prefer header', detail: 'wait must be 1-60', status: 400 });
          const deadline = Date.now() + Math.min(seconds * 1000, opts.waitCapMs ?? 150);
          while (Date.now() < deadline && !TERMINAL.has(p.status)) await sleep(5);
        }
        return reply.json(201, view(p), { location: p.urls.get });
      }
      const get = /^\/v1\/predictions\/([\w-]+)$/.exec(req.path);
      if (req.method === 'GET' && get) {
        const p = predictions.get(get[1]!);
        return p ? reply.json(200, view(p)) : reply.json(404, { title: 'Not found', detail: 'Not found.', status: 404 });
      }
      const cancel = /^\/v1\/predictions\/([\w-]+)\/cancel$/.exec(req.path);
      if (req.method === 'POST' && cancel) {
        const p = predictions.get(cancel[1]!);
        if (!p) return reply.json(404, { title: 'Not found', detail: 'Not found.', status: 404 });
        if (!TERMINAL.has(p.status)) {
          p.status = 'canceled';
          p.completed_at = new Date().toISOString();
          held.delete(p.id);
        }
        return reply.json(200, view(p));
      }
      if (req.method === 'GET' && req.path === '/v1/predictions') {
        return reply.json(200, { next: null, previous: null, results: [...predictions.values()].map(view) });
      }
      if (req.method === 'GET' && req.path === '/v1/webhooks/default/secret') return reply.json(200, { key: secret });
      return reply.json(404, { title: 'Not found', detail: `No route ${req.method} ${req.path}`, status: 404 });
    },
    { isApiCall: (r) => r.path.startsWith('/v1/') },
  );
  origin = server.url;

  return {
    url: `${server.url}/v1`,
    server,
    requests: server.requests,
    predictions,
    webhookSecret: secret,
    deliveries,
    creates: () => server.requests.filter((r) => r.method === 'POST' && CREATE.test(r.path) && r.status !== undefined && r.status < 300),
    release(id) {
      for (const pid of id ? [id] : [...held]) {
        held.delete(pid);
        const p = predictions.get(pid);
        if (p) finish(p);
      }
    },
    setHold(value) {
      hold = value;
    },
    inject: server.inject,
    close: server.close,
  };
}
