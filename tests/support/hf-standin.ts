/**
 * A loopback stand-in for Hugging Face's file endpoint, `GET|HEAD /{owner}/{repo}/resolve/{revision}/{path}`,
 * answering as the Hub does for the parts easel's downloader relies on: `Range` requests (206 with
 * Content-Range, 416 past the end), and for LFS files an `ETag` and `x-linked-etag` carrying the
 * SHA-256 plus `x-linked-size`; small (git) files get the git blob SHA-1 as ETag. Optionally the
 * resolve URL answers 302 to a CDN path (as the Hub does for LFS), with the x-linked headers on the
 * redirect. Faults for tests: cut the connection after N bytes, stall (send N bytes, then nothing while
 * keeping the connection open, as a wedged proxy or CDN does), serve corrupted bytes, slow every body
 * down; and `startSilentServer()`, a host that accepts connections and never answers at all.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import type { AddressInfo, Socket } from 'node:net';
import { createHash } from 'node:crypto';

export interface HfFile {
  repo: string;
  path: string;
  data: Uint8Array;
  revision?: string;
  /** LFS files get x-linked-etag/x-linked-size and a SHA-256 ETag (default: true for .onnx/.onnx_data/.pb). */
  lfs?: boolean;
}

export interface HfRequest {
  method: string;
  path: string;
  range?: string;
  authorization?: string;
  status: number;
}

export interface HfStandin {
  url: string;
  requests: HfRequest[];
  /** Adds or replaces a file. */
  put(file: HfFile): void;
  /** The next GET of this repo path sends `bytes` bytes of the body, then drops the connection. */
  cutNext(repo: string, path: string, bytes: number): void;
  /** The next GET of this repo path sends `bytes` bytes of the body, then nothing, holding the connection open. */
  stallNext(repo: string, path: string, bytes: number): void;
  /** Drops the connections of stalled answers (the client sees the connection lost and resumes). */
  releaseStalls(): void;
  /** Serves this file with a flipped byte (headers still describe the true file). */
  corrupt(repo: string, path: string): void;
  /** Bodies go out in chunks of `chunkBytes` every `intervalMs` (0 = at once). */
  throttle(chunkBytes: number, intervalMs: number): void;
  /** Requests whose connection is still open. */
  openConnections(): number;
  close(): Promise<void>;
}

export interface HfStandinOptions {
  /** Answer LFS resolves with a 302 to `/cdn/<sha256>`, as the Hub does. */
  redirectLfs?: boolean;
  /** Require this bearer token. */
  token?: string;
}

interface Entry {
  file: HfFile;
  sha256: string;
  gitSha1: string;
  lfs: boolean;
}

const key = (repo: string, revision: string, path: string) => `${repo}@${revision}:${path}`;

export async function startHfStandin(files: HfFile[] = [], opts: HfStandinOptions = {}): Promise<HfStandin> {
  const entries = new Map<string, Entry>();
  const bySha = new Map<string, Entry>();
  const cuts = new Map<string, number>();
  const stalls = new Map<string, number>();
  let throttle = { chunkBytes: 0, intervalMs: 0 };
  const stalled = new Set<ServerResponse>();
  let open = 0;
  const corrupted = new Set<string>();
  const requests: HfRequest[] = [];

  const put = (file: HfFile) => {
    const sha256 = createHash('sha256').update(file.data).digest('hex');
    const gitSha1 = createHash('sha1').update(`blob ${file.data.byteLength}\0`).update(file.data).digest('hex');
    const lfs = file.lfs ?? /\.(onnx|onnx_data|pb|bin|safetensors)$/.test(file.path);
    const e: Entry = { file, sha256, gitSha1, lfs };
    entries.set(key(file.repo, file.revision ?? 'main', file.path), e);
    bySha.set(sha256, e);
  };
  files.forEach(put);

  const sendBody = (req: IncomingMessage, res: ServerResponse, e: Entry, record: HfRequest) => {
    const k = key(e.file.repo, e.file.revision ?? 'main', e.file.path);
    let data = e.file.data;
    if (corrupted.has(k)) {
      data = new Uint8Array(data);
      data[Math.floor(data.length / 2)] ^= 0xff;
    }
    const size = data.byteLength;
    const headers: Record<string, string | number> = {
      'accept-ranges': 'bytes',
      'content-type': 'application/octet-stream',
      etag: e.lfs ? `"${e.sha256}"` : `"${e.gitSha1}"`,
    };
    if (e.lfs) {
      headers['x-linked-etag'] = `"${e.sha256}"`;
      headers['x-linked-size'] = size;
    }
    let start = 0;
    let end = size - 1;
    let status = 200;
    const range = req.headers.range;
    if (range) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range);
      if (!m || (m[1] === '' && m[2] === '')) {
        record.status = 416;
        res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` }).end();
        return;
      }
      if (m[1] === '') {
        start = Math.max(0, size - Number(m[2]));
      } else {
        start = Number(m[1]);
        if (m[2] !== '') end = Math.min(end, Number(m[2]));
      }
      if (start >= size || start > end) {
        record.status = 416;
        res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` }).end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${size}`;
    }
    headers['content-length'] = end - start + 1;
    record.status = status;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') return void res.end();
    const body = data.subarray(start, end + 1);
    const stall = stalls.get(k);
    if (stall !== undefined) {
      stalls.delete(k);
      // Headers and a few bytes, then silence on an open connection (closed with the server).
      res.write(body.subarray(0, Math.min(stall, body.byteLength)));
      stalled.add(res);
      res.on('close', () => stalled.delete(res));
      return;
    }
    if (throttle.chunkBytes > 0) {
      let at = 0;
      const tick = () => {
        if (res.destroyed) return;
        const next = Math.min(body.byteLength, at + throttle.chunkBytes);
        const last = next >= body.byteLength;
        res.write(body.subarray(at, next));
        at = next;
        if (last) res.end();
        else setTimeout(tick, throttle.intervalMs);
      };
      tick();
      return;
    }
    const cut = cuts.get(k);
    if (cut !== undefined) {
      cuts.delete(k);
      res.write(body.subarray(0, Math.min(cut, body.byteLength)), () => {
        // Let the bytes leave, then drop the connection mid-body.
        setTimeout(() => res.socket?.destroy(), 20);
      });
      return;
    }
    res.end(body);
  };

  const server = createServer((req, res) => {
    open++;
    res.on('close', () => open--);
    const url = new URL(req.url ?? '/', 'http://x');
    const record: HfRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      ...(req.headers.range ? { range: String(req.headers.range) } : {}),
      ...(req.headers.authorization ? { authorization: String(req.headers.authorization) } : {}),
      status: 0,
    };
    requests.push(record);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      record.status = 405;
      return void res.writeHead(405).end();
    }
    const cdn = /^\/cdn\/([0-9a-f]{64})$/.exec(url.pathname);
    if (cdn) {
      const e = bySha.get(cdn[1]!);
      if (!e) {
        record.status = 404;
        return void res.writeHead(404).end();
      }
      return sendBody(req, res, e, record);
    }
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (!m) {
      record.status = 404;
      return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":"Not Found"}');
    }
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}`) {
      record.status = 401;
      return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"error":"Invalid credentials"}');
    }
    const e = entries.get(key(m[1]!, decodeURIComponent(m[2]!), decodeURIComponent(m[3]!)));
    if (!e) {
      record.status = 404;
      return void res.writeHead(404, { 'x-error-code': 'EntryNotFound', 'content-type': 'application/json' }).end('{"error":"Entry not found"}');
    }
    if (e.lfs && opts.redirectLfs) {
      record.status = 302;
      return void res
        .writeHead(302, {
          location: `/cdn/${e.sha256}`,
          'x-linked-etag': `"${e.sha256}"`,
          'x-linked-size': e.file.data.byteLength,
          etag: `"${e.sha256}"`,
        })
        .end();
    }
    sendBody(req, res, e, record);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    put,
    cutNext: (repo, path, bytes) => cuts.set(key(repo, 'main', path), bytes),
    stallNext: (repo, path, bytes) => stalls.set(key(repo, 'main', path), bytes),
    releaseStalls: () => {
      for (const res of stalled) res.socket?.destroy();
      stalled.clear();
    },
    corrupt: (repo, path) => corrupted.add(key(repo, 'main', path)),
    throttle: (chunkBytes, intervalMs) => {
      throttle = { chunkBytes, intervalMs };
    },
    openConnections: () => open,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A host that accepts TCP connections and never says a word (a black-holed proxy, a wedged mirror). */
export async function startSilentServer(): Promise<{ url: string; connections(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let count = 0;
  const server = createNetServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => count,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A loopback URL nothing listens on (connections are refused). */
export async function refusedUrl(): Promise<string> {
  const server = createNetServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return `http://127.0.0.1:${port}`;
}
