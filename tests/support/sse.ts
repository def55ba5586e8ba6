/**
 * A small Server-Sent Events client for tests: opens `GET /v1/images/jobs/{id}/events`, parses the
 * frames as they arrive, and lets a test wait for an event, for the end of the stream, or hang up.
 */
import type { TestEasel } from './easel.ts';

export interface SseEvent {
  id?: string;
  event: string;
  data: string;
  /** `data` parsed as JSON (undefined when it is not JSON). */
  json: any;
}

export interface SseStream {
  res: Response;
  status: number;
  events: SseEvent[];
  comments: string[];
  retry?: number;
  /** Resolves with the first event (from the start) that matches, failing after `timeoutMs`. */
  waitFor(match: (e: SseEvent) => boolean, timeoutMs?: number): Promise<SseEvent>;
  /** Resolves once the server closed the stream, with every event received; fails after `timeoutMs`. */
  ended(timeoutMs?: number): Promise<SseEvent[]>;
  /** Hangs up (as a client that goes away). */
  close(): void;
}

export async function openEvents(
  easel: TestEasel | { url: string; adminKey: string },
  jobId: string,
  opts: { key?: string; lastEventId?: string | number; query?: string } = {},
): Promise<SseStream> {
  const abort = new AbortController();
  const headers: Record<string, string> = { authorization: `Bearer ${opts.key ?? easel.adminKey}`, accept: 'text/event-stream' };
  if (opts.lastEventId !== undefined) headers['last-event-id'] = String(opts.lastEventId);
  const res = await fetch(`${easel.url}/v1/images/jobs/${jobId}/events${opts.query ?? ''}`, { headers, signal: abort.signal });
  const events: SseEvent[] = [];
  const comments: string[] = [];
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const w of [...waiters]) w();
  };
  const stream: SseStream = {
    res,
    status: res.status,
    events,
    comments,
    waitFor: (match, timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const hit = events.find(match);
          if (hit) {
            done();
            resolve(hit);
          } else if (finished) {
            done();
            reject(new Error(`stream ended without the awaited event; got ${events.map((e) => `${e.id ?? '-'}:${e.event}`).join(' ')}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`timed out waiting for an event; got ${events.map((e) => `${e.id ?? '-'}:${e.event}`).join(' ')}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      }),
    ended: (timeoutMs = 15_000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`stream still open after ${timeoutMs} ms; got ${events.map((e) => `${e.id ?? '-'}:${e.event}`).join(' ')}`)), timeoutMs);
        void reading.then(() => {
          clearTimeout(timer);
          resolve(events);
        });
      }),
    close: () => abort.abort(),
  };

  let finished = false;
  const parse = (block: string) => {
    const ev: { id?: string; event?: string; data: string[] } = { data: [] };
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) {
        comments.push(line.slice(1).trim());
        continue;
      }
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const value = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'id') ev.id = value;
      else if (field === 'event') ev.event = value;
      else if (field === 'data') ev.data.push(value);
      else if (field === 'retry') stream.retry = Number(value);
    }
    if (ev.data.length === 0) return;
    const data = ev.data.join('\n');
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      json = undefined;
    }
    events.push({ id: ev.id, event: ev.event ?? 'message', data, json });
  };
  const reading = (async () => {
    if (!res.body || res.status !== 200) return;
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buf += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, '\n');
        let cut: number;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          parse(buf.slice(0, cut));
          buf = buf.slice(cut + 2);
        }
        notify();
      }
    } catch {
      // hung up by close()
    } finally {
      finished = true;
      notify();
    }
  })();
  return stream;
}
