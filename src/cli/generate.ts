/** `easel generate "prompt"` — a client of a running server: submit, show progress, save the files. */
import type { Command } from 'commander';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

interface GenerateOpts {
  model?: string;
  size?: string;
  n?: string;
  out: string;
  url?: string;
  key?: string;
  seed?: string;
  negative?: string;
  steps?: string;
  format?: string;
}

interface JobView {
  id: string;
  status: string;
  progress: number;
  error: { message: string; code: string } | null;
  result: { data: { url?: string; b64_json?: string }[]; output_format?: string } | null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function bar(progress: number, status: string): string {
  const width = 30;
  const filled = Math.round(progress * width);
  return `\r[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${(progress * 100).toFixed(0).padStart(3)}% ${status.padEnd(10)}`;
}

export function generateCommand(program: Command): void {
  program
    .command('generate <prompt>')
    .description('Generate images on a running easel server and save them')
    .option('-m, --model <model>', 'model name (default: the server default)')
    .option('-s, --size <size>', 'WIDTHxHEIGHT')
    .option('-n, --n <n>', 'number of images')
    .option('--seed <seed>', 'seed for reproducible images')
    .option('--negative <text>', 'negative prompt')
    .option('--steps <steps>', 'sampling steps')
    .option('--format <format>', 'png, jpeg or webp')
    .option('-o, --out <dir>', 'folder to save images in', '.')
    .option('--url <url>', 'server URL (or EASEL_URL)')
    .option('--key <key>', 'API key (or EASEL_API_KEY)')
    .action(async (prompt: string, opts: GenerateOpts) => {
      const base = (opts.url ?? process.env.EASEL_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
      const key = opts.key ?? process.env.EASEL_API_KEY;
      if (!key) throw new Error('no API key: pass --key or set EASEL_API_KEY');
      const headers = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
      const body: Record<string, unknown> = { prompt };
      if (opts.model) body.model = opts.model;
      if (opts.size) body.size = opts.size;
      if (opts.n) body.n = Number(opts.n);
      if (opts.seed) body.seed = Number(opts.seed);
      if (opts.negative) body.negative_prompt = opts.negative;
      if (opts.steps) body.steps = Number(opts.steps);
      if (opts.format) body.output_format = opts.format;

      const tty = process.stderr.isTTY;
      // Right after a first start the default model may still be downloading (503 model_loading):
      // wait as the server asks (Retry-After) and submit again, so the README's command ends in an image.
      let res: Response;
      let job: JobView;
      for (;;) {
        res = await fetch(`${base}/v1/images/generations`, { method: 'POST', headers: { ...headers, prefer: 'respond-async' }, body: JSON.stringify(body) });
        job = (await res.json()) as JobView;
        const error = (job as { error?: { message?: string; code?: string } }).error;
        if (res.status !== 503 || error?.code !== 'model_loading') break;
        const wait = Math.min(60, Math.max(1, Number(res.headers.get('retry-after')) || 10));
        process.stderr.write(`${tty ? '\r\x1b[2K' : ''}waiting: ${error.message}${tty ? '' : '\n'}`);
        await sleep(wait * 1000);
      }
      if (tty) process.stderr.write('\r\x1b[2K');
      if (res.status !== 202) throw new Error(`server refused the request (${res.status}): ${(job as { error?: { message?: string } }).error?.message ?? JSON.stringify(job)}`);
      process.stderr.write(`job ${job.id}\n`);
      let last = '';
      while (!['succeeded', 'failed', 'canceled'].includes(job.status)) {
        await sleep(300);
        const r = await fetch(`${base}/v1/images/jobs/${job.id}`, { headers });
        if (!r.ok) throw new Error(`cannot read job ${job.id}: HTTP ${r.status}`);
        job = (await r.json()) as JobView;
        const line = bar(job.progress, job.status);
        if (tty) process.stderr.write(line);
        else if (job.status !== last) process.stderr.write(`${job.status}\n`);
        last = job.status;
      }
      if (tty) process.stderr.write(`${bar(job.status === 'succeeded' ? 1 : job.progress, job.status)}\n`);
      if (job.status !== 'succeeded' || !job.result) throw new Error(`job ${job.id} ${job.status}: ${job.error?.message ?? ''}`);

      const dir = resolve(opts.out);
      mkdirSync(dir, { recursive: true });
      const ext = job.result.output_format === 'jpeg' ? 'jpg' : (job.result.output_format ?? 'png');
      for (const [i, item] of job.result.data.entries()) {
        let bytes: Buffer;
        if (item.b64_json) bytes = Buffer.from(item.b64_json, 'base64');
        else {
          const r = await fetch(item.url!);
          if (!r.ok) throw new Error(`download failed (${r.status}) for image ${i}`);
          bytes = Buffer.from(await r.arrayBuffer());
        }
        const file = join(dir, `${job.id}-${i}.${ext}`);
        writeFileSync(file, bytes);
        process.stdout.write(`${file}\n`);
      }
    });
}
