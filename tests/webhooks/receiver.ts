/**
 * A loopback webhook receiver for tests: verifies every delivery with the `standardwebhooks` package
 * (what a real receiver would use) and answers with whatever the test's responder says.
 */
import { createServer } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
export { until } from '../support/until.ts';

export interface Received {
  path: string;
  method: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** The verified, parsed payload (undefined when verification failed). */
  payload: any;
  verified: boolean;
  verifyError?: string;
  at: number;
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export type Responder = (r: Received) => number | Answer;

export interface Receiver {
  url: string;
  port: number;
  received: Received[];
  respond(fn: Responder): void;
  /** Deliveries for one job (by the payload's data.id). */
  forJob(jobId: string): Received[];
  close(): Promise<void>;
}

export async function startReceiver(secret: string): Promise<Receiver> {
  const wh = new Webhook(secret);
  const received: Received[] = [];
  let responder: Responder = () => 200;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const rec: Received = { path: req.url ?? '', method: req.method ?? '', headers: req.headers, body, payload: undefined, verified: false, at: Date.now() };
      try {
        rec.payload = wh.verify(body, req.headers as Record<string, string>);
        rec.verified = true;
      } catch (err) {
        rec.verifyError = (err as Error).message;
      }
      received.push(rec);
      let answer: number | Answer;
      try {
        answer = responder(rec);
      } catch {
        answer = 500;
      }
      const a: Answer = typeof answer === 'number' ? { status: answer } : answer;
      res.writeHead(a.status, a.headers ?? {});
      res.end(a.body ?? '');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    received,
    respond: (fn) => {
      responder = fn;
    },
    forJob: (jobId) => received.filter((r) => {
      try {
        return JSON.parse(r.body)?.data?.id === jobId;
      } catch {
        return false;
      }
    }),
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
