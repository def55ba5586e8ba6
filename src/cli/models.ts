/** `easel models pull|list|rm`: the local models the embedded `onnx` engine runs. */
import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { commandConfig, withDataOptions } from './options.ts';
import type { EaselConfig } from '../config/schema.ts';
import { CATALOG } from '../models/catalog.ts';
import { DEFAULT_HF_ENDPOINT, listInstalled, pullModel, removeModel } from '../models/model-store.ts';
import type { PullEvent } from '../models/model-store.ts';
import { PullProgress, describeProgress, formatBytes, formatDuration } from '../models/pull-progress.ts';
import { PullLock, describeOwner } from '../models/pull-lock.ts';
import { explainPullFailure } from '../models/pull-failure.ts';

export { formatBytes };

interface DirOpts {
  modelsDir?: string;
}

function modelsDir(cfg: EaselConfig, opts: DirOpts): string {
  return opts.modelsDir ? resolve(opts.modelsDir) : resolve(cfg.dataDir, 'models');
}

/**
 * Renders pull events: on a terminal one redrawn bar over the whole model (percent, bytes, speed,
 * time left, the file in flight), otherwise a plain line per file and one per 10 % of the model.
 * File results, retries (with their cause) and conversions are lines in both.
 */
export class PullReporter {
  private readonly out: NodeJS.WriteStream;
  private readonly tty: boolean;
  private readonly progress: PullProgress;
  private readonly model: string;
  private lastDraw = 0;
  private lastTenth = -1;
  private barShown = false;

  constructor(model: string, out: NodeJS.WriteStream = process.stderr, now: () => number = Date.now) {
    this.model = model;
    this.out = out;
    this.tty = Boolean(out.isTTY);
    this.progress = new PullProgress(now);
  }

  handle(e: PullEvent): void {
    if (e.type !== 'plan') this.progress.handle(this.model, e);
    switch (e.type) {
      case 'plan':
        this.progress.expect(this.model, e.totalBytes, e.have);
        if (e.haveBytes > 0) this.line(`  resuming: ${formatBytes(e.haveBytes)} already downloaded`);
        if (e.totalBytes !== null && e.files > 0) this.line(`  ${e.files} file(s) to download, ${formatBytes(e.totalBytes)} in all`);
        break;
      case 'file-start':
        if (!this.tty) this.line(`[${e.index + 1}/${e.count}] ${e.path}`);
        break;
      case 'progress':
        this.draw();
        break;
      case 'file-done':
        if (e.status !== 'missing') {
          const size = e.size ? `  ${formatBytes(e.size)}` : '';
          this.line(`  ${e.path}${size}  ${e.status}${e.verified ? ', sha256 ok' : ', no checksum to verify'}`);
        }
        break;
      case 'retry':
        this.line(`  ${e.path}: ${e.error}; retrying (attempt ${e.attempt + 1}), resuming where it stopped`);
        break;
      case 'convert':
        this.line(`  converting ${e.path} to fp32 for the CPU…`);
        break;
      case 'note':
        this.line(`  ${e.message}`);
        break;
    }
  }

  /** Ends the bar line, if one is drawn. */
  finish(): void {
    if (this.tty && this.barShown) this.out.write('\n');
    this.barShown = false;
  }

  private line(text: string): void {
    if (this.tty && this.barShown) this.out.write('\r\x1b[2K');
    this.barShown = false;
    this.out.write(`${text}\n`);
    if (this.tty) this.draw(true);
  }

  private draw(force = false): void {
    const p = this.progress.snapshot();
    if (!this.tty) {
      const tenth = p.percent === null ? -1 : Math.floor(p.percent / 10);
      if (tenth > this.lastTenth && p.percent !== null) {
        this.lastTenth = tenth;
        this.out.write(`  ${this.model}: ${describeProgress(p)}\n`);
      }
      return;
    }
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    if (p.receivedBytes === 0 && p.bytesPerSecond === null) return;
    this.lastDraw = now;
    const width = 24;
    const filled = p.percent === null ? 0 : Math.round((p.percent / 100) * width);
    const bar = p.percent === null ? '' : `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.floor(p.percent)).padStart(3)}%  `;
    const size = p.totalBytes !== null ? `${formatBytes(p.receivedBytes)} / ${formatBytes(p.totalBytes)}` : formatBytes(p.receivedBytes);
    const speed = p.bytesPerSecond !== null ? `  ${formatBytes(p.bytesPerSecond)}/s` : '';
    const eta = p.etaSeconds !== null ? `  ETA ${formatDuration(p.etaSeconds)}` : '';
    const cols = this.out.columns || 120;
    const text = `  ${bar}${size}${speed}${eta}${p.file ? `  ${p.file}` : ''}`;
    this.out.write(`\r\x1b[2K${text.slice(0, cols - 1)}`);
    this.barShown = true;
  }
}

export function modelsCommands(program: Command): void {
  const models = program.command('models').description('Download and manage the local models of the built-in engine');

  const pull = withDataOptions(models.command('pull <name>'))
    .description(`Download a model from Hugging Face into <dataDir>/models (${CATALOG.map((e) => e.name).join(', ')})`)
    .option('--endpoint <url>', 'Hugging Face or a mirror (or HF_ENDPOINT; modelStore.endpoint)')
    .option('--device <device>', 'cpu (converts fp16 exports to fp32) or cuda (keeps fp16)', 'cpu')
    .option('--idle-timeout <seconds>', 'give up on an attempt after this long without data, then retry (modelStore.idleTimeoutSeconds, default 30)')
    .option('--models-dir <dir>', 'models folder (overrides --data-dir)');
  pull.action(async (name: string, opts: DirOpts & { endpoint?: string; device: string; idleTimeout?: string }) => {
    if (opts.device !== 'cpu' && opts.device !== 'cuda') {
      process.stderr.write(`easel: --device must be cpu or cuda, got ${opts.device}\n`);
      process.exit(2);
    }
    const cfg = commandConfig(pull);
    const idleSeconds = opts.idleTimeout === undefined ? cfg.modelStore.idleTimeoutSeconds : Number(opts.idleTimeout);
    if (!Number.isFinite(idleSeconds) || idleSeconds <= 0) {
      process.stderr.write(`easel: --idle-timeout must be a positive number of seconds, got ${opts.idleTimeout}\n`);
      process.exit(2);
    }
    const dir = modelsDir(cfg, opts);
    const endpoint = opts.endpoint ?? cfg.modelStore.endpoint ?? DEFAULT_HF_ENDPOINT;
    const lock = PullLock.acquire(dir, `easel models pull ${name}`);
    if (!(lock instanceof PullLock)) {
      process.stderr.write(`easel: ${describeOwner(lock)} is downloading into ${dir}; wait for it to finish (or stop it), then run this again\n`);
      process.exit(1);
    }
    const reporter = new PullReporter(name);
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
        idleTimeoutMs: idleSeconds * 1000,
        retries: cfg.modelStore.retries,
        onEvent: (e) => reporter.handle(e),
      });
      reporter.finish();
      process.stdout.write(`${name} is ready in ${out}; \`easel serve\` uses it when no other backend is configured\n`);
    } catch (err) {
      reporter.finish();
      const partial = listInstalled(dir).find((m) => m.name === name && !m.complete);
      process.stderr.write(`easel: ${explainPullFailure(err, { endpoint, interrupted: controller.signal.aborted, partialBytes: partial?.bytes ?? 0, command: 'the same command' })}\n`);
      process.exitCode = 1;
    } finally {
      lock.release();
    }
  });

  const list = withDataOptions(models.command('list'))
    .description('Show installed models and the ones that can be pulled')
    .option('--models-dir <dir>', 'models folder')
    .option('--json', 'machine-readable output');
  list.action((opts: DirOpts & { json?: boolean }) => {
    const dir = modelsDir(commandConfig(list), opts);
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

  const rm = withDataOptions(models.command('rm <name>'))
    .description('Delete an installed model')
    .option('--models-dir <dir>', 'models folder');
  rm.action((name: string, opts: DirOpts) => {
    const dir = modelsDir(commandConfig(rm), opts);
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
