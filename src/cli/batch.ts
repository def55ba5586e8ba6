/**
 * `easel batch prompts.jsonl --out DIR`: submits a JSONL file as one batch to a running server,
 * shows a progress bar with ETA and spend, saves each image as soon as its request finishes, and
 * resumes when run again: the batch id is kept in `DIR/.easel-batch.json` (keyed by the file's
 * SHA-256, which is also the submission's Idempotency-Key), and images already on disk are not
 * fetched again. Each line is a generations body, optionally with `custom_id` (used for the file
 * names) and `cache`; a line that is just a string is a prompt.
 */
import type { Command } from 'commander';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';

interface BatchOpts {
  out: string;
  url?: string;
  key?: string;
  model?: string;
  cap?: string;
  priority?: string;
  interval?: string;
}

interface BatchView {
  id: string;
  status: string;
  total: number;
  counts: Record<string, number>;
  progress: number;
  cost_usd: number;
}

interface ResultItem {
  index: number;
  custom_id: string | null;
  status: string;
  job_id: string | null;
  data: { url?: string; b64_json?: string }[] | null;
  error: { code: string; message: string } | null;
}

interface State {
  file: string;
  sha256: string;
  url: string;
  batchId: string;
}

const TERMINAL = new Set(['succeeded', 'failed', 'canceled']);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function duration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** File-name-safe custom id, or the request's line number in the file (1-based, as editors count). */
export function resultName(item: { index: number; custom_id: string | null }, lineOf: (index: number) => number = (i) => i + 1): string {
  const id = item.custom_id?.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[._]+/, '').slice(0, 100);
  return id ? id : `line-${String(lineOf(item.index)).padStart(5, '0')}`;
}

/**
 * The file's requests with their line numbers; every line that is not JSON is reported at once
 * (line number and what is wrong), not only the first.
 */
export function readJsonl(raw: string): { lines: string[]; lineNumbers: number[] } {
  const lines: string[] = [];
  const lineNumbers: number[] = [];
  const problems: string[] = [];
  raw.split(/\r?\n/).forEach((text, i) => {
    if (!text.trim()) return;
    try {
      const v = JSON.parse(text) as unknown;
      // A line that is a bare string is a prompt.
      lines.push(JSON.stringify(typeof v === 'string' ? { prompt: v } : v));
      lineNumbers.push(i + 1);
    } catch (err) {
      problems.push(`line ${i + 1}: not valid JSON (${(err as Error).message.replace(/ in JSON at position \d+.*$/, '')}): ${text.length > 60 ? `${text.slice(0, 60)}…` : text}`);
    }
  });
  if (problems.length) {
    const shown = problems.slice(0, 20).join('\n  ');
    throw new Error(`${problems.length} line(s) of the file are not valid JSON:\n  ${shown}${problems.length > 20 ? `\n  … and ${problems.length - 20} more` : ''}`);
  }
  if (lines.length === 0) throw new Error('the file has no requests (one JSON object or prompt string per line)');
  return { lines, lineNumbers };
}

export function batchCommand(program: Command): void {
  program
    .command('batch <file>')
    .description('Submit a JSONL file of generation requests as a batch, follow it, and save the images (resumes when run again)')
    .requiredOption('-o, --out <dir>', 'folder to save images in (also keeps the resume state)')
    .option('-m, --model <model>', 'model (or alias) for lines that name none')
    .option('--cap <usd>', 'hourly spend cap in USD: the batch is paced under it')
    .option('--priority <priority>', 'high, normal or low (default: the server default, low)')
    .option('--interval <seconds>', 'poll interval', '1')
    .option('--url <url>', 'server URL (or EASEL_URL)')
    .option('--key <key>', 'API key (or EASEL_API_KEY)')
    .action(async (file: string, opts: BatchOpts) => {
      const base = (opts.url ?? process.env.EASEL_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
      const key = opts.key ?? process.env.EASEL_API_KEY;
      if (!key) throw new Error('no API key: pass --key or set EASEL_API_KEY');
      const path = resolve(file);
      if (!existsSync(path)) throw new Error(`no such file: ${path}`);
      const raw = readFileSync(path, 'utf8');
      const { lines, lineNumbers } = readJsonl(raw);
      const lineOf = (index: number) => lineNumbers[index] ?? index + 1;
      const sha256 = createHash('sha256').update(raw).update(JSON.stringify([opts.model, opts.cap, opts.priority])).digest('hex');
      const out = resolve(opts.out);
      mkdirSync(out, { recursive: true });
      const statePath = join(out, '.easel-batch.json');
      const auth = { authorization: `Bearer ${key}` };
      const call = async (method: string, p: string, init: { body?: string; headers?: Record<string, string> } = {}) => {
        for (let attempt = 0; ; attempt++) {
          try {
            return await fetch(`${base}${p}`, { method, headers: { ...auth, ...init.headers }, body: init.body });
          } catch (err) {
            // The server restarting or the network blinking: keep trying for a while.
            if (attempt >= 30) throw err;
            await sleep(Math.min(5000, 250 * 2 ** attempt));
          }
        }
      };

      let state: State | undefined;
      if (existsSync(statePath)) {
        const prev = JSON.parse(readFileSync(statePath, 'utf8')) as State;
        if (prev.sha256 === sha256 && prev.url === base) state = prev;
      }
      let batch: BatchView | undefined;
      if (state) {
        const r = await call('GET', `/v1/images/batches/${state.batchId}`);
        if (r.ok) {
          batch = (await r.json()) as BatchView;
          process.stderr.write(`resuming batch ${batch.id} (${basename(path)})\n`);
        } else if (r.status !== 404) throw new Error(`cannot read batch ${state.batchId}: HTTP ${r.status}`);
      }
      if (!batch) {
        const q = new URLSearchParams();
        if (opts.model) q.set('model', opts.model);
        if (opts.cap) q.set('hourly_spend_cap_usd', opts.cap);
        if (opts.priority) q.set('priority', opts.priority);
        const r = await call('POST', `/v1/images/batches${q.size ? `?${q}` : ''}`, {
          body: lines.join('\n'),
          headers: { 'content-type': 'application/jsonl', 'idempotency-key': `easel-batch-${sha256.slice(0, 48)}` },
        });
        const body = (await r.json()) as BatchView & { error?: { message: string } };
        if (!r.ok) throw new Error(`the server refused the batch (${r.status}): ${body.error?.message ?? JSON.stringify(body)}`);
        batch = body;
        state = { file: path, sha256, url: base, batchId: batch.id };
        writeFileSync(`${statePath}.tmp`, JSON.stringify(state, null, 2));
        renameSync(`${statePath}.tmp`, statePath);
        process.stderr.write(`submitted batch ${batch.id}: ${batch.total} requests\n`);
      }

      const tty = process.stderr.isTTY;
      const started = Date.now();
      const doneAtStart = batch.counts.succeeded + batch.counts.failed + batch.counts.canceled;
      const finished = new Set<number>();
      const failures: ResultItem[] = [];
      let saved = 0;
      let cursor = -1; // every index ≤ cursor is terminal and handled
      let lastLine = '';
      const interval = Math.max(0.1, Number(opts.interval ?? 1)) * 1000;

      const saveItem = async (item: ResultItem) => {
        if (item.status !== 'succeeded' || !item.data) {
          if (item.status === 'failed' || item.status === 'canceled') failures.push(item);
          return;
        }
        for (const [k, img] of item.data.entries()) {
          const name = `${resultName(item, lineOf)}${item.data.length > 1 ? `-${k}` : ''}.png`;
          const file = join(out, name);
          if (existsSync(file)) continue;
          let bytes: Buffer;
          if (img.b64_json) bytes = Buffer.from(img.b64_json, 'base64');
          else {
            const r = await fetch(img.url!);
            if (!r.ok) throw new Error(`download failed (${r.status}) for request ${item.index}`);
            bytes = Buffer.from(await r.arrayBuffer());
          }
          writeFileSync(`${file}.part`, bytes);
          renameSync(`${file}.part`, file);
          saved++;
        }
      };

      for (;;) {
        // The batch first, then its results: a batch that was finished when read has all its results
        // terminal in the pass below, so none is left unsaved when the loop ends.
        const b = await call('GET', `/v1/images/batches/${batch.id}`);
        if (!b.ok) throw new Error(`cannot read batch ${batch.id}: HTTP ${b.status}`);
        batch = (await b.json()) as BatchView;
        // Results from the first unfinished index on; finished ones are saved once.
        let after = cursor;
        let contiguous = true;
        for (;;) {
          const r = await call('GET', `/v1/images/batches/${batch.id}/results?after=${after}&limit=200`);
          if (!r.ok) throw new Error(`cannot read results: HTTP ${r.status}`);
          const page = (await r.json()) as { data: ResultItem[]; has_more: boolean };
          for (const item of page.data) {
            const terminal = TERMINAL.has(item.status);
            if (terminal && !finished.has(item.index)) {
              await saveItem(item);
              finished.add(item.index);
            }
            if (contiguous && terminal) cursor = item.index;
            else contiguous = false;
          }
          if (!page.has_more || page.data.length === 0) break;
          after = page.data.at(-1)!.index;
        }
        const c = batch.counts;
        const done = c.succeeded + c.failed + c.canceled;
        const rate = (done - doneAtStart) / Math.max(0.001, (Date.now() - started) / 1000);
        const eta = rate > 0 ? (batch.total - done) / rate : NaN;
        const width = 30;
        const filled = Math.round((batch.total ? done / batch.total : 1) * width);
        const line =
          `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.round(batch.progress * 100)).padStart(3)}% ${done}/${batch.total} ` +
          `ok ${c.succeeded} failed ${c.failed}${c.canceled ? ` canceled ${c.canceled}` : ''} · $${batch.cost_usd.toFixed(4)} · ETA ${done >= batch.total ? '0s' : duration(eta)}`;
        if (tty) process.stderr.write(`\r${line}\x1b[K`);
        else if (line !== lastLine) process.stderr.write(`${line}\n`);
        lastLine = line;
        if (batch.status !== 'in_progress' && done >= batch.total) break;
        if (batch.status === 'canceled' && c.queued + c.running === 0) break;
        await sleep(interval);
      }
      if (tty) process.stderr.write('\n');
      process.stdout.write(`batch ${batch.id} ${batch.status}: ${batch.counts.succeeded} succeeded, ${batch.counts.failed} failed, ${batch.counts.canceled} canceled; spent $${batch.cost_usd.toFixed(4)}; ${saved} new image(s) saved in ${out}\n`);
      for (const f of failures.slice(0, 20)) process.stderr.write(`  line ${lineOf(f.index)}${f.custom_id ? ` (${f.custom_id})` : ''}: ${f.status}${f.error ? ` — ${f.error.code}: ${f.error.message}` : ''}\n`);
      if (failures.length > 20) process.stderr.write(`  … and ${failures.length - 20} more\n`);
      if (failures.length) process.exitCode = 1;
    });
}
