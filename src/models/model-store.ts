/**
 * The local model folder (`<dataDir>/models/<name>/`): pulling a catalog model into it (plan: what is
 * on disk and the size of the rest; download, verify, convert fp16 → fp32 for the CPU, write
 * `easel-model.json` last), listing and removing. A folder without `easel-model.json` is an
 * unfinished pull; pulling again resumes it. A pull that fails before a byte arrived leaves no folder.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { MANIFEST_FILE, readManifest } from '../backends/onnx/model-folder.ts';
import type { ModelManifest } from '../backends/onnx/model-folder.ts';
import { convertFp16ToFp32InThread } from './convert-thread.ts';
import { downloadFile, DownloadError, probeFile } from './downloader.ts';
import type { DownloadProgress } from './downloader.ts';
import { CATALOG, catalogEntry } from './catalog.ts';
import type { CatalogEntry, CatalogFile } from './catalog.ts';

export const DEFAULT_HF_ENDPOINT = 'https://huggingface.co';
/** Downloads that are converted afterwards wait here; removed once the model is complete. */
const STAGING = '.download';

export type PullEvent =
  | { type: 'plan'; path: string; totalBytes: number | null; haveBytes: number; files: number; have: { path: string; bytes: number }[] }
  | { type: 'file-start'; path: string; index: number; count: number; size?: number }
  | { type: 'progress'; path: string; progress: DownloadProgress }
  | { type: 'file-done'; path: string; status: 'downloaded' | 'resumed' | 'cached' | 'missing'; size: number; verified: boolean }
  | { type: 'retry'; path: string; attempt: number; error: string }
  | { type: 'convert'; path: string }
  | { type: 'note'; message: string };

export interface PullOptions {
  modelsDir: string;
  /** Hugging Face base URL (flag, else HF_ENDPOINT, else https://huggingface.co). */
  endpoint?: string;
  /** Sent as a bearer token to the endpoint only (gated repositories). */
  token?: string;
  /** `cpu` converts fp16 exports to fp32; `cuda` keeps them as published. */
  device?: 'cpu' | 'cuda';
  fetch?: typeof globalThis.fetch;
  retries?: number;
  retryDelayMs?: number;
  /** Give up on an attempt after this long without a byte (default 30 s). */
  idleTimeoutMs?: number;
  signal?: AbortSignal;
  onEvent?(e: PullEvent): void;
  /** Replaces the built-in catalog (tests). */
  catalog?: CatalogEntry[];
  /** A plan made earlier with the same options (the auto-pull plans every model first, for one total). */
  plan?: PullPlan;
}

export interface PlannedFile {
  file: CatalogFile;
  /** Path in the model folder. */
  local: string;
  url: string;
  /** Where the download goes (the staging folder for graphs converted afterwards). */
  dest: string;
  /** `done`: on disk already; `missing`: an optional file the repository does not have. */
  state: 'todo' | 'done' | 'missing';
  size?: number;
  /** Bytes of an unfinished earlier download (`.part`). */
  have: number;
}

export interface PullPlan {
  entry: CatalogEntry;
  dir: string;
  endpoint: string;
  convert: boolean;
  files: PlannedFile[];
  /** Bytes of the files still to fetch (null when the server did not say for some). */
  totalBytes: number | null;
  haveBytes: number;
}

export class PullError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PullError';
  }
}

export function findEntry(name: string, catalog: CatalogEntry[] = CATALOG): CatalogEntry | undefined {
  return catalog === CATALOG ? catalogEntry(name) : catalog.find((e) => e.name === name);
}

const partBytes = (dest: string) => (existsSync(`${dest}.part`) ? statSync(`${dest}.part`).size : 0);

/**
 * What a pull of `name` has left to do: the files already on disk, the optional ones the repository
 * lacks, and the size of the rest (asked with HEAD where the catalog does not say), so progress can
 * be shown over the whole model and a missing required file fails before anything is downloaded.
 * Writes nothing.
 */
export async function planPull(name: string, opts: PullOptions): Promise<PullPlan> {
  const entry = findEntry(name, opts.catalog);
  if (!entry) {
    const known = (opts.catalog ?? CATALOG).map((e) => e.name).join(', ');
    throw new PullError(`unknown model "${name}"; known models: ${known}`);
  }
  const endpoint = (opts.endpoint ?? DEFAULT_HF_ENDPOINT).replace(/\/+$/, '');
  const dir = resolve(opts.modelsDir, entry.name);
  const convert = entry.precision === 'fp16' && (opts.device ?? 'cpu') === 'cpu';
  const headers = opts.token ? { authorization: `Bearer ${opts.token}` } : undefined;
  const files: PlannedFile[] = [];
  for (const file of entry.files) {
    const local = file.dest ?? file.path;
    // Graphs to convert, and their external data, are staged: the converter reads them side by side.
    const staged = convert && (file.onnx || file.onnxData);
    const dest = join(dir, staged ? STAGING : '', local);
    const url = `${endpoint}/${entry.repo}/resolve/${encodeURIComponent(entry.revision)}/${file.path.split('/').map(encodeURIComponent).join('/')}`;
    const done = staged ? existsSync(join(dir, dirname(local), 'model.onnx')) : existsSync(dest) && existsSync(`${dest}.sha256`);
    if (done) {
      files.push({ file, local, url, dest, state: 'done', have: 0 });
      continue;
    }
    let size = file.size;
    let exists = true;
    if (size === undefined) {
      try {
        ({ exists, size } = await probeFile(
          { url, headers },
          {
            fetch: opts.fetch,
            signal: opts.signal,
            retries: opts.retries,
            retryDelayMs: opts.retryDelayMs,
            idleTimeoutMs: opts.idleTimeoutMs,
            onRetry: (attempt, error) => opts.onEvent?.({ type: 'retry', path: file.path, attempt, error: error.message }),
          },
        ));
      } catch (err) {
        throw new PullError(`pulling ${entry.name}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (!exists && !file.optional) throw new PullError(`pulling ${entry.name}: ${file.path} is not in ${entry.repo} (404 from ${endpoint})`);
    files.push({ file, local, url, dest, state: exists ? 'todo' : 'missing', size, have: exists ? partBytes(dest) : 0 });
  }
  const todo = files.filter((f) => f.state === 'todo');
  const totalBytes = todo.every((f) => f.size !== undefined) ? todo.reduce((n, f) => n + f.size!, 0) : null;
  return { entry, dir, endpoint, convert, files, totalBytes, haveBytes: todo.reduce((n, f) => n + f.have, 0) };
}

export async function pullModel(name: string, opts: PullOptions): Promise<{ dir: string; manifest: ModelManifest }> {
  const plan = opts.plan ?? (await planPull(name, opts));
  try {
    return await runPlan(plan, opts);
  } catch (err) {
    // Nothing arrived (an unreachable hub, a refused first request): leave no empty folder behind
    // for `models list` to show as a 0 B incomplete model. Partial downloads stay, to be resumed.
    if (existsSync(plan.dir) && folderBytes(plan.dir) === 0) rmSync(plan.dir, { recursive: true, force: true });
    throw err;
  }
}

async function runPlan(plan: PullPlan, opts: PullOptions): Promise<{ dir: string; manifest: ModelManifest }> {
  const { entry, dir, endpoint, convert } = plan;
  const emit = (e: PullEvent) => opts.onEvent?.(e);
  const recorded: NonNullable<ModelManifest['files']> = [];
  const count = plan.files.length;
  const todo = plan.files.filter((f) => f.state === 'todo');
  emit({ type: 'plan', path: entry.name, totalBytes: plan.totalBytes, haveBytes: plan.haveBytes, files: todo.length, have: todo.filter((f) => f.have > 0).map((f) => ({ path: f.file.path, bytes: f.have })) });

  for (const [index, planned] of plan.files.entries()) {
    const { file, local, dest } = planned;
    if (planned.state === 'missing') {
      emit({ type: 'file-done', path: file.path, status: 'missing', size: 0, verified: false });
      continue;
    }
    if (planned.state === 'done' && dest.includes(`/${STAGING}/`)) {
      emit({ type: 'file-done', path: local, status: 'cached', size: 0, verified: true });
      continue;
    }
    emit({ type: 'file-start', path: file.path, index, count, size: planned.size });
    let result;
    try {
      result = await downloadFile(
        { url: planned.url, dest, size: file.size, sha256: file.sha256, headers: opts.token ? { authorization: `Bearer ${opts.token}` } : undefined },
        {
          fetch: opts.fetch,
          signal: opts.signal,
          retries: opts.retries,
          retryDelayMs: opts.retryDelayMs,
          idleTimeoutMs: opts.idleTimeoutMs,
          onProgress: (progress) => emit({ type: 'progress', path: file.path, progress }),
          onRetry: (attempt, error) => emit({ type: 'retry', path: file.path, attempt, error: error.message }),
        },
      );
    } catch (err) {
      if (err instanceof DownloadError && err.code === 'not_found' && err.status === 404 && file.optional) {
        emit({ type: 'file-done', path: file.path, status: 'missing', size: 0, verified: false });
        continue;
      }
      throw new PullError(`pulling ${entry.name}: ${(err as Error).message}`, { cause: err });
    }
    recorded.push({ path: local, size: result.size, sha256: result.sha256 });
    emit({ type: 'file-done', path: file.path, status: result.status, size: result.size, verified: result.verified });
  }

  if (convert) {
    // Convert each staged graph once every file (external data included) is down.
    for (const file of entry.files.filter((f) => f.onnx)) {
      const local = file.dest ?? file.path;
      const src = join(dir, STAGING, local);
      const out = join(dir, local);
      if (existsSync(out) || !existsSync(src)) continue;
      emit({ type: 'convert', path: local });
      mkdirSync(join(out, '..'), { recursive: true });
      await convertFp16ToFp32InThread(src, out);
    }
  }

  const missing = requiredMissing(entry, dir);
  if (missing.length) throw new PullError(`pulling ${entry.name}: ${missing.join(', ')} missing after download`);
  if (entry.kind === 'pipeline' && !existsSync(join(dir, 'scheduler', 'scheduler_config.json')) && entry.schedulerConfig) {
    mkdirSync(join(dir, 'scheduler'), { recursive: true });
    writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), `${JSON.stringify(entry.schedulerConfig, null, 2)}\n`);
    emit({ type: 'note', message: 'the repository has no scheduler config; wrote the catalog default' });
  }
  rmSync(join(dir, STAGING), { recursive: true, force: true });

  const manifest: ModelManifest = {
    name: entry.name,
    kind: entry.kind,
    family: entry.family,
    description: entry.description,
    source: { repo: entry.repo, revision: entry.revision, ...(endpoint !== DEFAULT_HF_ENDPOINT ? { endpoint } : {}) },
    ...(entry.padToken ? { padToken: entry.padToken } : {}),
    ...(entry.defaults ? { defaults: entry.defaults } : {}),
    precision: convert ? 'fp32' : entry.precision,
    files: recorded,
    pulledAt: new Date().toISOString(),
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 2)}\n`);
  return { dir, manifest };
}

function requiredMissing(entry: CatalogEntry, dir: string): string[] {
  return entry.files.filter((f) => !f.optional && !existsSync(join(dir, f.dest ?? f.path))).map((f) => f.dest ?? f.path);
}

export interface InstalledModel {
  name: string;
  dir: string;
  complete: boolean;
  manifest?: ModelManifest;
  bytes: number;
}

export function listInstalled(modelsDir: string): InstalledModel[] {
  if (!existsSync(modelsDir)) return [];
  return readdirSync(modelsDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && !d.name.startsWith('.'))
    .map((d) => {
      const dir = join(modelsDir, d.name);
      const manifest = readManifest(dir);
      return { name: d.name, dir, complete: Boolean(manifest), manifest, bytes: folderBytes(dir) };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Removes a model folder; false when there was none. */
export function removeModel(modelsDir: string, name: string): boolean {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) throw new PullError(`invalid model name ${JSON.stringify(name)}`);
  const dir = join(modelsDir, name);
  if (!existsSync(dir)) return false;
  rmSync(dir, { recursive: true, force: true });
  return true;
}

function folderBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    total += e.isDirectory() ? folderBytes(p) : statSync(p).size;
  }
  return total;
}

/** The pulled pipeline models in a folder, best default first (sd-turbo, then LCM, then the rest). */
export function pulledPipelines(modelsDir: string): InstalledModel[] {
  const rank = (m: InstalledModel) => (m.manifest?.family === 'turbo' ? 0 : m.manifest?.family === 'lcm' ? 1 : 2);
  return listInstalled(modelsDir)
    .filter((m) => m.complete && m.manifest?.kind !== 'decoder' && existsSync(join(m.dir, 'unet', 'model.onnx')))
    .sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}
