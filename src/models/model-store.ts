/**
 * The local model folder (`<dataDir>/models/<name>/`): pulling a catalog model into it (download,
 * verify, convert fp16 → fp32 for the CPU, write `easel-model.json` last), listing and removing.
 * A folder without `easel-model.json` is an unfinished pull; pulling again resumes it.
 */
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { MANIFEST_FILE, readManifest } from '../backends/onnx/model-folder.ts';
import type { ModelManifest } from '../backends/onnx/model-folder.ts';
import { convertFp16ToFp32 } from './convert-fp16.ts';
import { downloadFile, DownloadError } from './downloader.ts';
import type { DownloadProgress } from './downloader.ts';
import { CATALOG, catalogEntry } from './catalog.ts';
import type { CatalogEntry } from './catalog.ts';

export const DEFAULT_HF_ENDPOINT = 'https://huggingface.co';
/** Downloads that are converted afterwards wait here; removed once the model is complete. */
const STAGING = '.download';

export type PullEvent =
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
  retryDelayMs?: number;
  signal?: AbortSignal;
  onEvent?(e: PullEvent): void;
  /** Replaces the built-in catalog (tests). */
  catalog?: CatalogEntry[];
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

export async function pullModel(name: string, opts: PullOptions): Promise<{ dir: string; manifest: ModelManifest }> {
  const entry = findEntry(name, opts.catalog);
  if (!entry) {
    const known = (opts.catalog ?? CATALOG).map((e) => e.name).join(', ');
    throw new PullError(`unknown model "${name}"; known models: ${known}`);
  }
  const endpoint = (opts.endpoint ?? DEFAULT_HF_ENDPOINT).replace(/\/+$/, '');
  const dir = resolve(opts.modelsDir, entry.name);
  mkdirSync(dir, { recursive: true });
  const convert = entry.precision === 'fp16' && (opts.device ?? 'cpu') === 'cpu';
  const emit = (e: PullEvent) => opts.onEvent?.(e);
  const recorded: NonNullable<ModelManifest['files']> = [];

  for (const [index, file] of entry.files.entries()) {
    const local = file.dest ?? file.path;
    // Graphs to convert, and their external data, are staged: the converter reads them side by side.
    const staged = convert && (file.onnx || file.onnxData);
    const dest = join(dir, staged ? STAGING : '', local);
    if (staged && existsSync(join(dir, dirname(local), 'model.onnx'))) {
      emit({ type: 'file-done', path: local, status: 'cached', size: 0, verified: true });
      continue;
    }
    emit({ type: 'file-start', path: file.path, index, count: entry.files.length, size: file.size });
    const url = `${endpoint}/${entry.repo}/resolve/${encodeURIComponent(entry.revision)}/${file.path.split('/').map(encodeURIComponent).join('/')}`;
    let result;
    try {
      result = await downloadFile(
        { url, dest, size: file.size, sha256: file.sha256, headers: opts.token ? { authorization: `Bearer ${opts.token}` } : undefined },
        {
          fetch: opts.fetch,
          signal: opts.signal,
          retryDelayMs: opts.retryDelayMs,
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
      convertFp16ToFp32(src, out);
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
