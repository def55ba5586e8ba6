/**
 * A loopback stand-in for fal.ai's queue API (PROTOCOLS.md §5) with its quirks: auth is
 * `Authorization: Key …` (Bearer is refused); status, result and cancel live under `{owner}/{app}`
 * only — the endpoint's sub-path is dropped (`fal-ai/flux/schnell` is polled at
 * `fal-ai/flux/requests/{id}/status`), and the long form answers 404 here; status answers **202**
 * while `IN_QUEUE` / `IN_PROGRESS` and 200 once `COMPLETED`; a failed request surfaces on the result
 * URL as its error status and body; cancel is a `PUT`. Webhooks (`?fal_webhook=`) are signed with
 * Ed25519 over `request_id\nuser_id\ntimestamp\nhex(sha256(body))`, the public key published as a
 * JWKS at `/.well-known/jwks.json`.
 *
 * Prompts steer outcomes: `nsfw` flags every image, `nsfw-one` the first only, `invalid` fails
 * with a 422.
 */
import { createHash, generateKeyPairSync, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { standinPng } from './openai-standin.ts';
import { standinId, startStandinServer } from '../providers/standin-kit.ts';
import type { Injected, Recorded, StandinServer } from '../providers/standin-kit.ts';

export const FAL_KEY = 'fal_standin_key:secret';
export const FAL_USER = 'user_standin';

export interface FalStandinOptions {
  key?: string;
  /** ms `IN_QUEUE`, then ms `IN_PROGRESS` (ignored while held). */
  queueMs?: number;
  runMs?: number;
  hold?: boolean;
  /** `metrics.inference_time` on COMPLETED (seconds). */
  inferenceTime?: number;
  /** Sign webhooks with this key instead of the published one (a forger). */
  signingKey?: KeyObject;
}

export interface FalRequestState {
  id: string;
  app: string;
  endpoint: string;
  input: Record<string, any>;
  status: 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED';
  canceled: boolean;
  result?: { status: number; body: unknown };
  webhook?: string;
}

export interface FalStandin {
  url: string;
  server: StandinServer;
  requests: Recorded[];
  jobs: Map<string, FalRequestState>;
  jwksUrl: string;
  deliveries: { url: string; status: number; id: string }[];
  /** Successful submits. */
  submits(): Recorded[];
  release(id?: string): void;
  setHold(hold: boolean): void;
  inject(f: Injected): void;
  /** Signs `body` the way fal does (for webhook tests). */
  signWebhook(requestId: string, body: string, opts?: { timestamp?: number; userId?: string; key?: KeyObject }): Record<string, string>;
  close(): Promise<void>;
}

function appOf(endpoint: string): string {
  const parts = endpoint.split('/');
  return parts.slice(0, 2).join('/');
}

export async function startFalStandin(opts: FalStandinOptions = {}): Promise<FalStandin> {
  const key = opts.key ?? FAL_KEY;
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const jwk = publicKey.export({ format: 'jwk' }) as { x: string };
  const png = standinPng(64, 64).png;
  const jobs = new Map<string, FalRequestState>();
  const held = new Set<string>();
  const deliveries: FalStandin['deliveries'] = [];
  let hold = opts.hold ?? false;
  let origin = '';

  const signWebhook: FalStandin['signWebhook'] = (requestId, body, o = {}) => {
    const ts = String(o.timestamp ?? Math.floor(Date.now() / 1000));
    const user = o.userId ?? FAL_USER;
    const digest = createHash('sha256').update(body).digest('hex');
    const signature = sign(null, Buffer.from(`${requestId}\n${user}\n${ts}\n${digest}`), o.key ?? opts.signingKey ?? privateKey).toString('hex');
    return {
      'x-fal-webhook-request-id': requestId,
      'x-fal-webhook-user-id': user,
      'x-fal-webhook-timestamp': ts,
      'x-fal-webhook-signature': signature,
    };
  };

  async function deliver(job: FalRequestState) {
    if (!job.webhook || !job.result) return;
    const ok = job.result.status === 200;
    const body = JSON.stringify({
      request_id: job.id,
      gateway_request_id: job.id,
      status: ok ? 'OK' : 'ERROR',
      payload: job.result.body,
      ...(ok ? {} : { error: `Invalid status code: ${job.result.status}` }),
    });
    try {
      const res = await fetch(job.webhook, { method: 'POST', headers: { 'content-type': 'application/json', ...signWebhook(job.id, body) }, body });
      await res.arrayBuffer();
      deliveries.push({ url: job.webhook, status: res.status, id: job.id });
    } catch {
      deliveries.push({ url: job.webhook, status: 0, id: job.id });
    }
  }

  function complete(job: FalRequestState) {
    if (job.status === 'COMPLETED') return;
    job.status = 'COMPLETED';
    const prompt = String(job.input.prompt ?? '');
    if (/\binvalid\b/.test(prompt)) {
      job.result = { status: 422, body: { detail: [{ loc: ['body', 'prompt'], msg: 'prompt is not allowed to say invalid', type: 'value_error' }] } };
    } else {
      const n = Number(job.input.num_images ?? 1);
      const size = job.input.image_size && typeof job.input.image_size === 'object' ? job.input.image_size : { width: 1024, height: 768 };
      const flags = Array.from({ length: n }, (_, i) => /\bnsfw(?!-)\b/.test(prompt) || (i === 0 && /\bnsfw-one\b/.test(prompt)));
      job.result = {
        status: 200,
        body: {
          images: Array.from({ length: n }, (_, i) => ({
            url: `${origin}/files/${job.id}-${i}.png`,
            width: size.width,
            height: size.height,
            content_type: 'image/png',
          })),
          timings: { inference: opts.inferenceTime ?? 0.4 },
          seed: typeof job.input.seed === 'number' ? job.input.seed : 12345,
          has_nsfw_concepts: flags,
          prompt,
        },
      };
    }
    void deliver(job);
  }

  function schedule(job: FalRequestState) {
    setTimeout(() => {
      if (job.canceled) return;
      job.status = 'IN_PROGRESS';
      if (hold) {
        held.add(job.id);
        return;
      }
      setTimeout(() => complete(job), opts.runMs ?? 30);
    }, opts.queueMs ?? 10);
  }

  const server = await startStandinServer(
    async (req, reply) => {
      if (req.method === 'GET' && req.path === '/.well-known/jwks.json') {
        return reply.json(200, { keys: [{ kty: 'OKP', crv: 'Ed25519', x: jwk.x, kid: 'standin-1', use: 'sig' }] });
      }
      if (req.method === 'GET' && req.path.startsWith('/files/')) {
        return reply.bytes(200, png, { 'content-type': 'image/png' });
      }
      if (req.headers.authorization !== `Key ${key}`) {
        return reply.json(401, { detail: 'Invalid authentication: use Authorization: Key <FAL_KEY>' });
      }
      const status = /^\/([^/]+\/[^/]+)\/requests\/([\w-]+)\/status$/.exec(req.path);
      if (req.method === 'GET' && status) {
        const job = jobs.get(status[2]!);
        if (!job || job.app !== status[1]) return reply.json(404, { detail: 'Request not found' });
        const base = { request_id: job.id, response_url: `${origin}/${job.app}/requests/${job.id}`, status_url: `${origin}/${job.app}/requests/${job.id}/status`, cancel_url: `${origin}/${job.app}/requests/${job.id}/cancel` };
        if (job.status === 'IN_QUEUE') return reply.json(202, { ...base, status: 'IN_QUEUE', queue_position: 0 });
        if (job.status === 'IN_PROGRESS') return reply.json(202, { ...base, status: 'IN_PROGRESS', logs: req.query.get('logs') === '1' ? [{ message: 'step 2/4', level: 'INFO', source: 'USER', timestamp: new Date().toISOString() }] : null });
        return reply.json(200, { ...base, status: 'COMPLETED', logs: null, metrics: { inference_time: opts.inferenceTime ?? 0.4 } });
      }
      const cancel = /^\/([^/]+\/[^/]+)\/requests\/([\w-]+)\/cancel$/.exec(req.path);
      if (cancel) {
        if (req.method !== 'PUT') return reply.json(405, { detail: 'Method Not Allowed' });
        const job = jobs.get(cancel[2]!);
        if (!job || job.app !== cancel[1]) return reply.json(404, { status: 'NOT_FOUND' });
        if (job.status === 'COMPLETED') return reply.json(400, { status: 'ALREADY_COMPLETED' });
        job.canceled = true;
        held.delete(job.id);
        return reply.json(202, { status: 'CANCELLATION_REQUESTED' });
      }
      const result = /^\/([^/]+\/[^/]+)\/requests\/([\w-]+)$/.exec(req.path);
      if (req.method === 'GET' && result) {
        const job = jobs.get(result[2]!);
        if (!job || job.app !== result[1]) return reply.json(404, { detail: 'Request not found' });
        if (!job.result) return reply.json(400, { detail: 'Request is still in progress' });
        return reply.json(job.result.status, job.result.body, { 'x-fal-request-id': job.id });
      }
      if (req.method === 'POST' && /^\/[^/]+\/[^/]+(\/[^/]+)*$/.test(req.path) && !req.path.includes('/requests/')) {
        const endpoint = req.path.slice(1);
        if (!req.json || typeof req.json.prompt !== 'string') {
          return reply.json(422, { detail: [{ loc: ['body', 'prompt'], msg: 'field required', type: 'value_error.missing' }] });
        }
        const id = standinId('req-');
        const job: FalRequestState = { id, app: appOf(endpoint), endpoint, input: req.json, status: 'IN_QUEUE', canceled: false };
        const hook = req.query.get('fal_webhook');
        if (hook) job.webhook = hook;
        jobs.set(id, job);
        schedule(job);
        const app = `${origin}/${job.app}/requests/${id}`;
        return reply.json(200, {
          status: 'IN_QUEUE',
          request_id: id,
          gateway_request_id: standinId('gw-'),
          response_url: app,
          status_url: `${app}/status`,
          cancel_url: `${app}/cancel`,
          queue_position: 0,
        });
      }
      return reply.json(404, { detail: 'Not Found' });
    },
    { isApiCall: (r) => !r.path.startsWith('/files/') && !r.path.startsWith('/.well-known/') },
  );
  origin = server.url;

  return {
    url: server.url,
    server,
    requests: server.requests,
    jobs,
    jwksUrl: `${server.url}/.well-known/jwks.json`,
    deliveries,
    submits: () => server.requests.filter((r) => r.method === 'POST' && r.status === 200 && !r.path.includes('/requests/')),
    release(id) {
      for (const rid of id ? [id] : [...held]) {
        held.delete(rid);
        const job = jobs.get(rid);
        if (job) complete(job);
      }
    },
    setHold(value) {
      hold = value;
    },
    inject: server.inject,
    signWebhook,
    close: server.close,
  };
}
