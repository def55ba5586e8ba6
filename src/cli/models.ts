/** `easel models pull|list|rm`: the local models the embedded `onnx` engine runs. */
import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { configOrExit } from './main.ts';
import type { GlobalOpts } from './main.ts';
import { CATALOG } from '../models/catalog.ts';
import { DEFAULT_HF_ENDPOINT, listInstalled, pullModel, removeModel } from '../models/model-store.ts';
import type { PullEvent } from '../models/model-store.ts';

interface DirOpts {
  dataDir?: string;
  modelsDir?: string;
}

function modelsDir(program: Command, opts: DirOpts): string {
  if (opts.modelsDir) return resolve(opts.modelsDir);
  const cfg = configOrExit(program.opts<GlobalOpts>(), opts.dataDir ? { dataDir: opts.dataDir } : {});
  return resolve(cfg.dataDir, 'models');
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** Renders pull events: a redrawn bar on a terminal, plain lines otherwise. */
export class PullReporter {
  private readonly out: NodeJS.WriteStream;
  private readonly tty: boolean;
  private lastDraw = 0;
  private started = 0;
  private lastPct = -1;

  constructor(out: NodeJS.WriteStream = process.stderr) {
    this.out = out;
    this.tty = Boolean(out.isTTY);
  }

  handle(e: PullEvent): void {
    switch (e.type) {
      case 'file-start':
        this.started = Date.now();
        this.lastPct = -1;
        if (!this.tty) this.out.write(`[${e.index + 1}/${e.count}] ${e.path}\n`);
        break;
      case 'progress':
        this.draw(e.path, e.progress.received, e.progress.total, e.progress.resumedFrom);
        break;
      case 'file-done':
        if (this.tty) this.out.write('\r\x1b[2K');
        if (e.status !== 'missing') {
          const size = e.size ? `  ${formatBytes(e.size)}` : '';
          this.out.write(`  ${e.path}${size}  ${e.status}${e.verified ? ', sha256 ok' : ', no checksum to verify'}\n`);
        }
        break;
      case 'retry':
        if (this.tty) this.out.write('\r\x1b[2K');
        this.out.write(`  ${e.path}: ${e.error}; retrying (attempt ${e.attempt + 1}), resuming where it stopped\n`);
        break;
      case 'convert':
        this.out.write(`  converting ${e.path} to fp32 for the CPU…\n`);
        break;
      case 'note':
        this.out.write(`  ${e.message}\n`);
        break;
    }
  }

  private draw(path: string, received: number, total: number | undefined, resumedFrom: number): void {
    const now = Date.now();
    const pct = total ? Math.floor((received / total) * 100) : -1;
    if (!this.tty) {
      // Plain output: a line per 25 %.
      if (pct >= 0 && Math.floor(pct / 25) > Math.floor(this.lastPct / 25)) {
        this.lastPct = pct;
        this.out.write(`  ${path}: ${pct}% of ${formatBytes(total!)}\n`);
      }
      return;
    }
    if (now - this.lastDraw < 100 && received !== total) return;
    this.lastDraw = now;
    const secs = Math.max(0.001, (now - this.started) / 1000);
    const rate = (received - resumedFrom) / secs;
    const width = 28;
    const filled = total ? Math.round((received / total) * width) : 0;
    const bar = total ? `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(pct).padStart(3)}%` : '[downloading]';
    const size = total ? `${formatBytes(received)} / ${formatBytes(total)}` : formatBytes(received);
    this.out.write(`\r\x1b[2K  ${path} ${bar} ${size}  ${formatBytes(rate)}/s${resumedFrom ? '  (resumed)' : ''}`);
  }
}

export function modelsCommands(program: Command): void {
  const models = program.command('models').description('Download and manage the local models of the built-in engine');

  models
    .command('pull <name>')
    .description(`Download a model from Hugging Face into <dataDir>/models (${CATALOG.map((e) => e.name).join(', ')})`)
    .option('--endpoint <url>', 'Hugging Face base URL (or HF_ENDPOINT)')
    .option('--device <device>', 'cpu (converts fp16 exports to fp32) or cuda (keeps fp16)', 'cpu')
    .option('--data-dir <dir>', 'data folder (models go to <dir>/models)')
    .option('--models-dir <dir>', 'models folder (overrides --data-dir)')
    .action(async (name: string, opts: DirOpts & { endpoint?: string; device: string }) => {
      if (opts.device !== 'cpu' && opts.device !== 'cuda') {
        process.stderr.write(`easel: --device must be cpu or cuda, got ${opts.device}\n`);
        process.exit(2);
      }
      const dir = modelsDir(program, opts);
      const endpoint = opts.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_HF_ENDPOINT;
      const reporter = new PullReporter();
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      process.stderr.write(`pulling ${name} from ${endpoint} into ${join(dir, name)}\n`);
      try {
        const { dir: out } = await pullModel(name, {
          modelsDir: dir,
          endpoint,
          token: process.env.HF_TOKEN || undefined,
          device: opts.device,
          signal: controller.signal,
          onEvent: (e) => reporter.handle(e),
        });
        process.stdout.write(`${name} is ready in ${out}; \`easel serve\` uses it when no other backend is configured\n`);
      } catch (err) {
        process.stderr.write(`\neasel: ${(err as Error).message}\n${controller.signal.aborted ? 'interrupted; ' : ''}run the same command again to resume\n`);
        process.exit(1);
      }
    });

  models
    .command('list')
    .description('Show installed models and the ones that can be pulled')
    .option('--data-dir <dir>', 'data folder')
    .option('--models-dir <dir>', 'models folder')
    .option('--json', 'machine-readable output')
    .action((opts: DirOpts & { json?: boolean }) => {
      const dir = modelsDir(program, opts);
      const installed = listInstalled(dir);
      const available = CATALOG.filter((e) => !installed.some((m) => m.name === e.name));
      if (opts.json) {
        process.stdout.write(
          `${JSON.stringify({ modelsDir: dir, installed: installed.map((m) => ({ name: m.name, complete: m.complete, bytes: m.bytes, family: m.manifest?.family, kind: m.manifest?.kind })), available: available.map((e) => e.name) }, null, 2)}\n`,
        );
        return;
      }
      process.stdout.write(`models in ${dir}:\n`);
      if (installed.length === 0) process.stdout.write('  (none)\n');
      for (const m of installed) {
        const state = m.complete ? (m.manifest?.kind === 'decoder' ? 'decoder' : 'ready') : 'incomplete (pull again to resume)';
        process.stdout.write(`  ${m.name.padEnd(22)} ${formatBytes(m.bytes).padStart(10)}  ${state}\n`);
      }
      if (available.length) {
        process.stdout.write('available to pull (`easel models pull <name>`):\n');
        for (const e of available) process.stdout.write(`  ${e.name.padEnd(22)} ~${formatBytes(e.approxBytes).padStart(9)}  ${e.description}\n`);
      }
    });

  models
    .command('rm <name>')
    .description('Delete an installed model')
    .option('--data-dir <dir>', 'data folder')
    .option('--models-dir <dir>', 'models folder')
    .action((name: string, opts: DirOpts) => {
      const dir = modelsDir(program, opts);
      try {
        if (!removeModel(dir, name)) {
          process.stderr.write(`easel: no model "${name}" in ${dir}\n`);
          process.exit(1);
        }
      } catch (err) {
        process.stderr.write(`easel: ${(err as Error).message}\n`);
        process.exit(2);
      }
      process.stdout.write(`removed ${name} from ${dir}\n`);
    });
}
