/**
 * `metrics.workerPort`: a worker-only process (`easel worker`) has no API, so it serves its own
 * GET /metrics (what it measured: job latency, cost per image, GPU time, circuits) on this port.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CostMetrics } from './metrics.ts';
import { tokenMatches } from '../api/routes/metrics.ts';

export async function startMetricsServer(metrics: CostMetrics, opts: { host: string; port: number; bearerToken?: string }): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    if (opts.bearerToken && !tokenMatches(req.headers.authorization, opts.bearerToken)) {
      res.writeHead(401, { 'content-type': 'text/plain' }).end('metrics bearer token required\n');
      return;
    }
    metrics.text().then(
      (text) => res.writeHead(200, { 'content-type': metrics.contentType, 'cache-control': 'no-store' }).end(text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
