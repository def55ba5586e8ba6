/**
 * The first start's download: with no backend configured and no model installed, easel fetches its
 * default model (TAESD, then SD-Turbo; `modelStore.autoPullModels`) in the background while it
 * already serves, and serves the model as soon as it is in, without a restart.
 *
 * - One process downloads: the models folder's lock (pull-lock.ts). Another easel on the same data
 *   folder waits, shows the owner's progress (from `.pull-status.json`, which the owner rewrites every
 *   second), and takes over (resuming the `.part` files) if the owner dies.
 * - Progress (percent, bytes, speed, time left) is in `state()`, which `GET /v1/system`, the console
 *   and the generations route's 503 `model_loading` read, and in a log line per 10 %.
 * - A hub that cannot be reached ends it with one log line saying why and how to use a mirror; the
 *   server keeps serving everything else.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { listInstalled, planPull, pullModel, pulledPipelines } from './model-store.ts';
import type { PullPlan } from './model-store.ts';
import type { CatalogEntry } from './catalog.ts';
import { PullProgress, describeProgress, formatBytes } from './pull-progress.ts';
import { PullLock, describeOwner } from './pull-lock.ts';
import { explainPullFailure } from './pull-failure.ts';

export type AutoPullStatus = 'starting' | 'waiting' | 'downloading' | 'converting' | 'ready' | 'failed' | 'stopped';

export interface AutoPullState {
  status: AutoPullStatus;
  /** What is fetched, in order. */
  models: string[];
  /** The one in flight. */
  model: string | null;
  percent: number | null;
  receivedBytes: number;
  totalBytes: number | null;
  bytesPerSecond: number | null;
  etaSeconds: number | null;
  endpoint: string;
  /** `waiting`: the process that downloads. */
  owner: string | null;
  /** `failed`: why, and what to do (one line). */
  error: string | null;
  startedAt: string;
}

interface Log {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface AutoPullOptions {
  modelsDir: string;
  models: string[];
  endpoint: string;
  token?: string;
  idleTimeoutMs: number;
  retries: number;
  retryDelayMs?: number;
  log: Log;
  /** Called once the models are in (fetched here or by another process). */
  onReady(): void | Promise<void>;
  /** Who this process is, for the lock (`easel serve`). */
  command: string;
  fetch?: typeof globalThis.fetch;
  catalog?: CatalogEntry[];
  /** How often a waiting process looks at the owner's progress (default 1 s). */
  pollMs?: number;
}

const STATUS_FILE = '.pull-status.json';
const LOADING: ReadonlySet<AutoPullStatus> = new Set(['starting', 'waiting', 'downloading', 'converting']);

export class AutoPull {
  private readonly opts: AutoPullOptions;
  private readonly controller = new AbortController();
  private readonly progress = new PullProgress();
  private current: AutoPullState;
  private running: Promise<void> | undefined;
  private ticker: NodeJS.Timeout | undefined;
  private loggedTenth = -1;

  constructor(opts: AutoPullOptions) {
    this.opts = opts;
    this.current = {
      status: 'starting',
      models: opts.models,
      model: null,
      percent: null,
      receivedBytes: 0,
      totalBytes: null,
      bytesPerSecond: null,
      etaSeconds: null,
      endpoint: opts.endpoint,
      owner: null,
      error: null,
      startedAt: new Date().toISOString(),
    };
  }

  /** Whether generations should wait for it (it is fetching, or waiting for another process that is). */
  get loading(): boolean {
    return LOADING.has(this.current.status);
  }

  state(): AutoPullState {
    if (this.current.status === 'downloading' || this.current.status === 'converting') {
      const p = this.progress.snapshot();
      return { ...this.current, percent: p.percent, receivedBytes: p.receivedBytes, totalBytes: p.totalBytes, bytesPerSecond: p.bytesPerSecond, etaSeconds: p.etaSeconds };
    }
    return { ...this.current };
  }

  start(): void {
    this.running ??= this.run().catch((err) => {
      this.set({ status: 'failed', error: (err as Error).message });
      this.opts.log.error({ err }, `the default model could not be set up: ${(err as Error).message}`);
    });
  }

  async stop(): Promise<void> {
    this.controller.abort();
    clearInterval(this.ticker);
    // A conversion in progress runs on to its end on its thread; shutdown does not wait for long.
    await Promise.race([this.running, sleep(5000, undefined, { ref: false })]);
    if (this.loading) this.set({ status: 'stopped' });
  }

  private set(patch: Partial<AutoPullState>): void {
    this.current = { ...this.current, ...patch };
  }

  private get stopped(): boolean {
    return this.controller.signal.aborted;
  }

  private async run(): Promise<void> {
    const { modelsDir, command } = this.opts;
    let saidWaiting = false;
    while (!this.stopped) {
      const lock = PullLock.acquire(modelsDir, command);
      if (lock instanceof PullLock) {
        try {
          // Someone else may have finished while this process waited.
          if (pulledPipelines(modelsDir).length > 0 && this.missing().length === 0) return await this.ready(false);
          return await this.download();
        } finally {
          lock.release();
        }
      }
      if (pulledPipelines(modelsDir).length > 0 && this.missing().length === 0) return await this.ready(false);
      const owner = describeOwner(lock);
      if (!saidWaiting) {
        this.opts.log.info({ owner: lock }, `${owner} is downloading the default model into ${modelsDir}; waiting for it`);
        saidWaiting = true;
      }
      this.set({ status: 'waiting', owner, ...this.ownerProgress() });
      await sleep(this.opts.pollMs ?? 1000, undefined, { signal: this.controller.signal }).catch(() => {});
    }
  }

  /** The catalog models not installed completely yet. */
  private missing(): string[] {
    const complete = new Set(listInstalled(this.opts.modelsDir).filter((m) => m.complete).map((m) => m.name));
    return this.opts.models.filter((m) => !complete.has(m));
  }

  private async download(): Promise<void> {
    const o = this.opts;
    const pullOpts = {
      modelsDir: o.modelsDir,
      endpoint: o.endpoint,
      token: o.token,
      device: 'cpu' as const,
      fetch: o.fetch,
      catalog: o.catalog,
      signal: this.controller.signal,
      idleTimeoutMs: o.idleTimeoutMs,
      retries: o.retries,
      retryDelayMs: o.retryDelayMs,
    };
    const todo = this.missing();
    // `starting` while the sizes are asked for: no percentage until the total is known.
    this.set({ status: 'starting', owner: null, model: todo[0] ?? null });
    this.ticker = setInterval(() => this.tick(), 1000);
    this.ticker.unref();
    const started = Date.now();
    try {
      // Every model planned first, so the percentage is over everything that is to come.
      const plans: PullPlan[] = [];
      for (const name of todo) {
        const plan = await planPull(name, pullOpts);
        plans.push(plan);
        this.progress.expect(name, plan.totalBytes, plan.files.filter((f) => f.state === 'todo' && f.have > 0).map((f) => ({ path: f.file.path, bytes: f.have })));
      }
      const total = this.progress.snapshot().totalBytes;
      const resumed = plans.reduce((n, p) => n + p.haveBytes, 0);
      o.log.info(
        { models: todo, totalBytes: total, resumedBytes: resumed, endpoint: o.endpoint },
        `downloading the default model (${todo.join(' + ')}${total !== null ? `, ${formatBytes(total)}` : ''}) from ${o.endpoint} into ${o.modelsDir}${resumed ? `, resuming with ${formatBytes(resumed)} already here` : ''}; generations answer 503 model_loading until it is ready`,
      );
      this.set({ status: 'downloading' });
      for (const plan of plans) {
        this.set({ model: plan.entry.name });
        await pullModel(plan.entry.name, {
          ...pullOpts,
          plan,
          onEvent: (e) => {
            this.progress.handle(plan.entry.name, e);
            if (e.type === 'convert') this.set({ status: 'converting' });
            if (e.type === 'retry') o.log.warn({ model: plan.entry.name, file: e.path, attempt: e.attempt }, `${plan.entry.name}: ${e.path}: ${e.error}; retrying`);
            if (e.type === 'progress') this.logProgress();
          },
        });
        this.set({ status: 'downloading' });
      }
      this.tick();
      await this.ready(true, Date.now() - started);
    } catch (err) {
      if (this.stopped) {
        this.set({ status: 'stopped' });
        return;
      }
      const partialBytes = listInstalled(o.modelsDir).filter((m) => !m.complete).reduce((n, m) => n + m.bytes, 0);
      const line = explainPullFailure(err, {
        endpoint: o.endpoint,
        partialBytes,
        command: 'restarting easel',
        mirrorHint: 'set HF_ENDPOINT (or modelStore.endpoint) to a mirror of the Hub and restart, or pull by hand: npm run easel -- models pull sd-turbo --endpoint URL',
      });
      this.set({ status: 'failed', error: line, model: null });
      this.writeStatus();
      o.log.error({ endpoint: o.endpoint, error: (err as Error).message }, `the default model could not be downloaded: ${line}; easel keeps serving (generations answer 503 until a model is installed)`);
    } finally {
      clearInterval(this.ticker);
    }
  }

  private async ready(fetchedHere: boolean, ms?: number): Promise<void> {
    const names = pulledPipelines(this.opts.modelsDir).map((m) => m.name);
    this.set({ status: 'ready', model: null, owner: null, percent: 100 });
    if (fetchedHere) this.writeStatus();
    this.opts.log.info({ models: names }, `the default model is ready${ms !== undefined ? ` (downloaded in ${Math.round(ms / 1000)} s)` : ''}: serving ${names.join(', ')}`);
    await this.opts.onReady();
  }

  /** Once a second while downloading: the status file other processes read. */
  private tick(): void {
    this.writeStatus();
  }

  /** A log line at each 10 % (with speed and time left). */
  private logProgress(): void {
    const p = this.progress.snapshot();
    if (p.percent === null) return;
    const tenth = Math.floor(p.percent / 10);
    if (tenth <= this.loggedTenth) return;
    this.loggedTenth = tenth;
    this.opts.log.info(
      { percent: p.percent, receivedBytes: p.receivedBytes, totalBytes: p.totalBytes, bytesPerSecond: p.bytesPerSecond, etaSeconds: p.etaSeconds, model: this.current.model },
      `downloading the default model: ${describeProgress(p)}`,
    );
  }

  private writeStatus(): void {
    const path = join(this.opts.modelsDir, STATUS_FILE);
    try {
      writeFileSync(`${path}.tmp`, JSON.stringify({ ...this.state(), pid: process.pid }));
      renameSync(`${path}.tmp`, path);
    } catch {
      // The folder is being removed, or not writable: the status file is a courtesy only.
    }
  }

  /** The owner's progress, as it last wrote it. */
  private ownerProgress(): Partial<AutoPullState> {
    try {
      const s = JSON.parse(readFileSync(join(this.opts.modelsDir, STATUS_FILE), 'utf8')) as Partial<AutoPullState>;
      return { percent: s.percent ?? null, receivedBytes: s.receivedBytes ?? 0, totalBytes: s.totalBytes ?? null, bytesPerSecond: s.bytesPerSecond ?? null, etaSeconds: s.etaSeconds ?? null, model: s.model ?? null };
    } catch {
      return {};
    }
  }
}
