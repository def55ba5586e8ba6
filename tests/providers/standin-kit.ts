/**
 * What the hosted-provider stand-ins share: a loopback HTTP server that records every request
 * (raw body, parsed JSON or multipart fields), injectable failures, and small reply helpers.
 * Nothing here imports easel's code: the stand-ins must disagree with a buggy client.
 */
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
export { until } from '../support/until.ts';

export interface RecordedFile {
  field: string;
  filename: string;
  type: string;
  size: number;
}

export interface Recorded {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  raw: Buffer;
  /** Parsed JSON body, when it was JSON. */
  json?: any;
  /** Multipart text fields, when it was multipart (a repeated field becomes an array). */
  fields?: Record<string, string | string[]>;
  files?: RecordedFile[];
  status?: number;
}

export interface Injected {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** How many matching requests fail (default 1). */
  count?: number;
  /** Which requests fail (default: any the stand-in counts as API calls). */
  match?: (r: Recorded) => boolean;
}

export interface Reply {
  json(status: number, body: unknown, headers?: Record<string, string>): void;
  bytes(status: number, body: Buffer, headers?: Record<string, string>): void;
}

export interface StandinServer {
  url: string;
  port: number;
  requests: Recorded[];
  inject(f: Injected): void;
  close(): Promise<void>;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export async function startStandinServer(
  handler: (req: Recorded, reply: Reply) => Promise<void> | void,
  opts: { isApiCall?: (r: Recorded) => boolean } = {},
): Promise<StandinServer> {
  const requests: Recorded[] = [];
  const injected: Injected[] = [];
  const isApiCall = opts.isApiCall ?? (() => true);

  const server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://standin');
    const raw = await readBody(req);
    const rec: Recorded = { method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers, raw };
    const type = req.headers['content-type'] ?? '';
    if (type.startsWith('application/json') && raw.length) {
      try {
        rec.json = JSON.parse(raw.toString('utf8'));
      } catch {
        rec.json = undefined;
      }
    } else if (type.startsWith('multipart/form-data')) {
      try {
        const form = await new Request('http://standin/', { method: 'POST', headers: { 'content-type': type }, body: raw }).formData();
        rec.fields = {};
        rec.files = [];
        for (const [field, value] of form) {
          if (typeof value === 'string') {
            const prev = rec.fields[field];
            rec.fields[field] = prev === undefined ? value : [prev, value].flat();
          } else {
            rec.files.push({ field, filename: value.name, type: value.type, size: value.size });
          }
        }
      } catch {
        rec.fields = undefined;
      }
    }
    requests.push(rec);
    const reply: Reply = {
      json(status, body, headers = {}) {
        rec.status = status;
        const text = JSON.stringify(body);
        if (res.destroyed) return;
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
        res.end(text);
      },
      bytes(status, body, headers = {}) {
        rec.status = status;
        if (res.destroyed) return;
        res.writeHead(status, { 'content-length': body.length, ...headers });
        res.end(body);
      },
    };
    const fi = injected.findIndex((f) => (f.match ?? isApiCall)(rec));
    if (fi >= 0) {
      const f = injected[fi]!;
      f.count = (f.count ?? 1) - 1;
      if (f.count <= 0) injected.splice(fi, 1);
      reply.json(f.status, f.body ?? { detail: `Injected failure ${f.status}` }, f.headers);
      return;
    }
    try {
      await handler(rec, reply);
    } catch (err) {
      reply.json(500, { detail: `stand-in error: ${(err as Error).message}` });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    inject: (f) => injected.push({ count: 1, ...f }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let seq = 0;
export function standinId(prefix: string): string {
  seq += 1;
  return `${prefix}${Date.now().toString(36)}${seq.toString(36).padStart(4, '0')}`;
}
