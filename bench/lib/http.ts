/**
 * The load generator's HTTP side: node:http with keep-alive connections (no dependency beyond Node),
 * plus an open-loop scheduler (constant arrival rate, independent of how fast answers come) and a
 * closed-loop driver (a fixed number of requests in flight).
 */
import http from 'node:http';
import { performance } from 'node:perf_hooks';

export interface HttpResult {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

export class HttpClient {
  readonly base: URL;
  private readonly agent: http.Agent;
  private readonly defaultHeaders: Record<string, string>;

  constructor(base: string, opts: { headers?: Record<string, string>; maxSockets?: number } = {}) {
    this.base = new URL(base);
    this.agent = new http.Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 256, keepAliveMsecs: 10_000 });
    this.defaultHeaders = opts.headers ?? {};
  }

  request(method: string, path: string, body?: Buffer | string, headers: Record<string, string> = {}): Promise<HttpResult> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body) : body;
      const req = http.request(
        {
          agent: this.agent,
          host: this.base.hostname,
          port: this.base.port,
          method,
          path: this.base.pathname.replace(/\/$/, '') + path,
          headers: {
            ...this.defaultHeaders,
            ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
            ...headers,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

export interface OpenLoopResult {
  /** Milliseconds from sending to the last byte of the answer, successful requests only. */
  latencies: number[];
  /** For each latency, when its request was sent: ms after the loop started. */
  sentAtMs: number[];
  /** How late each request left compared with its slot in the schedule (generator health). */
  sendLag: number[];
  sent: number;
  ok: number;
  errors: number;
  firstError?: string;
  elapsedMs: number;
  /** Sending stopped early: more than `maxInFlight` requests were waiting (the target fell behind). */
  saturated: boolean;
}

/**
 * Sends `rate` requests a second for `durationMs`, each at its scheduled time whether or not earlier
 * ones have been answered (open loop), then waits for every answer. `check` says whether an answer
 * counts as a success.
 */
export async function openLoop(opts: {
  rate: number;
  durationMs: number;
  send: () => Promise<HttpResult>;
  check: (res: HttpResult) => boolean;
  /** Stop sending once this many answers are outstanding (default: 5 s worth at `rate`). */
  maxInFlight?: number;
}): Promise<OpenLoopResult> {
  const interval = 1000 / opts.rate;
  const total = Math.max(1, Math.round((opts.rate * opts.durationMs) / 1000));
  const out: OpenLoopResult = { latencies: [], sentAtMs: [], sendLag: [], sent: 0, ok: 0, errors: 0, elapsedMs: 0, saturated: false };
  const maxInFlight = opts.maxInFlight ?? Math.max(50, opts.rate * 5);
  const inflight = new Set<Promise<void>>();
  const start = performance.now();

  const fire = (scheduled: number) => {
    const t0 = performance.now();
    out.sendLag.push(t0 - scheduled);
    out.sent++;
    const p = opts.send().then(
      (res) => {
        const t1 = performance.now();
        if (opts.check(res)) {
          out.ok++;
          out.latencies.push(t1 - t0);
          out.sentAtMs.push(t0 - start);
        } else {
          out.errors++;
          out.firstError ??= `HTTP ${res.status}: ${res.body.toString('utf8').slice(0, 300)}`;
        }
      },
      (err: Error) => {
        out.errors++;
        out.firstError ??= err.message;
      },
    );
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  };

  await new Promise<void>((resolve) => {
    let i = 0;
    const tick = () => {
      const now = performance.now();
      while (i < total && start + i * interval <= now) fire(start + i++ * interval);
      if (inflight.size > maxInFlight) out.saturated = true;
      if (i >= total || out.saturated) return resolve();
      setTimeout(tick, Math.max(0, start + i * interval - performance.now()));
    };
    tick();
  });
  while (inflight.size > 0) await Promise.all([...inflight]);
  out.elapsedMs = performance.now() - start;
  return out;
}

/** Runs `total` calls of `task(i)` with at most `concurrency` in flight; resolves with their latencies. */
export async function closedLoop(total: number, concurrency: number, task: (i: number) => Promise<void>): Promise<number[]> {
  const latencies: number[] = [];
  let next = 0;
  const lane = async () => {
    while (next < total) {
      const i = next++;
      const t0 = performance.now();
      await task(i);
      latencies.push(performance.now() - t0);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, total) }, lane));
  return latencies;
}
