/**
 * A loopback stand-in for Stability AI's v2beta stable-image generate endpoints (PROTOCOLS.md §7)
 * with its quirks: the body must be multipart/form-data even for text-only requests (JSON or urlencoded
 * is a 400); `Accept: image/*` answers raw image bytes with `finish-reason` and `seed` in response
 * headers, `Accept: application/json` answers `{image, finish_reason, seed}`; output moderation is a
 * 200 with `finish-reason: CONTENT_FILTERED`; input moderation is a 403 `content_moderation`.
 * Errors are `{id, name, errors:[…]}`.
 *
 * Prompts steer outcomes: `filtered` (200 CONTENT_FILTERED), `forbidden` (403 content_moderation).
 */
import { randomBytes } from 'node:crypto';
import { standinPng } from './openai-standin.ts';
import { startStandinServer } from '../providers/standin-kit.ts';
import type { Injected, Recorded, StandinServer } from '../providers/standin-kit.ts';

export const STABILITY_KEY = 'sk-stability-standin';

export interface StabilityStandin {
  url: string;
  server: StandinServer;
  requests: Recorded[];
  /** Generation requests that were answered 200. */
  generations(): Recorded[];
  inject(f: Injected): void;
  close(): Promise<void>;
}

const err = (name: string, ...errors: string[]) => ({ id: randomBytes(16).toString('hex'), name, errors });
const SD3_MODELS = new Set(['sd3.5-large', 'sd3.5-large-turbo', 'sd3.5-medium', 'sd3.5-flash', 'sd3-large', 'sd3-large-turbo', 'sd3-medium']);

export async function startStabilityStandin(opts: { key?: string } = {}): Promise<StabilityStandin> {
  const key = opts.key ?? STABILITY_KEY;
  const png = standinPng(64, 64).png;
  let seedSeq = 1000;
  const server = await startStandinServer(async (req, reply) => {
    if (req.headers.authorization !== `Bearer ${key}`) return reply.json(401, err('unauthorized', 'authorization: invalid or missing API key'));
    const m = /^\/v2beta\/stable-image\/generate\/(ultra|core|sd3)$/.exec(req.path);
    if (req.method !== 'POST' || !m) return reply.json(404, err('not_found', `no route ${req.method} ${req.path}`));
    if (!String(req.headers['content-type'] ?? '').startsWith('multipart/form-data') || !req.fields) {
      return reply.json(400, err('bad_request', 'content-type: must be multipart/form-data'));
    }
    const f = req.fields;
    const prompt = typeof f.prompt === 'string' ? f.prompt : '';
    if (!prompt) return reply.json(400, err('bad_request', 'prompt: is required'));
    if (m[1] === 'sd3' && f.model !== undefined && !SD3_MODELS.has(String(f.model))) return reply.json(400, err('bad_request', `model: unknown model ${String(f.model)}`));
    if (f.output_format === 'webp' && m[1] === 'sd3') return reply.json(400, err('bad_request', 'output_format: must be one of png, jpeg'));
    if (/\bforbidden\b/.test(prompt)) {
      return reply.json(403, err('content_moderation', 'Your request was flagged by our content moderation system, as a result your request was denied and you were not charged.'));
    }
    const finish = /\bfiltered\b/.test(prompt) ? 'CONTENT_FILTERED' : 'SUCCESS';
    const seed = f.seed !== undefined && f.seed !== '0' ? Number(f.seed) : ++seedSeq;
    const accept = String(req.headers.accept ?? 'image/*');
    if (accept.includes('application/json')) {
      return reply.json(200, { image: png.toString('base64'), finish_reason: finish, seed });
    }
    return reply.bytes(200, png, { 'content-type': 'image/png', 'finish-reason': finish, seed: String(seed) });
  });
  return {
    url: server.url,
    server,
    requests: server.requests,
    generations: () => server.requests.filter((r) => r.method === 'POST' && r.status === 200),
    inject: server.inject,
    close: server.close,
  };
}
