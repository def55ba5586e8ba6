/**
 * The console's only way to the server: the public /v1 API with the signed-in key as a bearer token,
 * like any other client. The key lives in this tab's sessionStorage (never in a URL, never in
 * localStorage); a 401 signs the tab out.
 */

const STORAGE_KEY = 'easel.apiKey';

export const session = {
  get key(): string | null {
    try {
      return sessionStorage.getItem(STORAGE_KEY);
    } catch {
      return null;
    }
  },
  set(key: string): void {
    sessionStorage.setItem(STORAGE_KEY, key);
  },
  clear(): void {
    sessionStorage.removeItem(STORAGE_KEY);
  },
};

/** An API answer that was not 2xx (OpenAI's error shape), or no answer at all (`status` 0: offline). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string | null;
  readonly param: string | null;
  readonly type: string | null;
  readonly retryAfter: string | null;

  constructor(status: number, message: string, opts: { code?: string | null; param?: string | null; type?: string | null; retryAfter?: string | null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = opts.code ?? null;
    this.param = opts.param ?? null;
    this.type = opts.type ?? null;
    this.retryAfter = opts.retryAfter ?? null;
  }

  get offline(): boolean {
    return this.status === 0;
  }
}

type Listener = (e: { kind: 'unauthorized'; message: string } | { kind: 'network'; ok: boolean }) => void;
const listeners = new Set<Listener>();
export function onApiEvent(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}
const emit: Listener = (e) => {
  for (const fn of listeners) fn(e);
};

export interface RequestOptions {
  method?: string;
  json?: unknown;
  form?: FormData;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Use this key instead of the session's (sign-in checks it before storing it). */
  key?: string;
}

export async function request(path: string, opts: RequestOptions = {}): Promise<Response> {
  const key = opts.key ?? session.key;
  const headers: Record<string, string> = { accept: 'application/json', ...opts.headers };
  if (key) headers.authorization = `Bearer ${key}`;
  let body: BodyInit | undefined;
  if (opts.json !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(opts.json);
  } else if (opts.form) {
    body = opts.form;
  }
  let res: Response;
  try {
    res = await fetch(path, { method: opts.method ?? (body ? 'POST' : 'GET'), headers, body, signal: opts.signal, cache: 'no-store' });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    emit({ kind: 'network', ok: false });
    throw new ApiError(0, navigator.onLine ? 'The easel server cannot be reached. Check that it is running; the console retries on its own.' : 'You are offline. The console will carry on when the connection is back.', { code: 'offline' });
  }
  emit({ kind: 'network', ok: true });
  if (res.ok) return res;
  let message = `${res.status} ${res.statusText}`;
  let code: string | null = null;
  let param: string | null = null;
  let type: string | null = null;
  try {
    const body = (await res.json()) as { error?: { message?: string; code?: string; param?: string; type?: string } };
    if (body.error?.message) message = body.error.message;
    code = body.error?.code ?? null;
    param = body.error?.param ?? null;
    type = body.error?.type ?? null;
  } catch {
    /* not JSON */
  }
  if (res.status === 401 && !opts.key) emit({ kind: 'unauthorized', message });
  throw new ApiError(res.status, message, { code, param, type, retryAfter: res.headers.get('retry-after') });
}

export async function api<T>(path: string, opts: RequestOptions = {}): Promise<T> {
  const res = await request(path, opts);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

/** A plain sentence for an error, with what to do where there is something to do. */
export function describeError(err: unknown): { title: string; detail: string } {
  if (!(err instanceof ApiError)) return { title: 'Something went wrong', detail: (err as Error)?.message ?? String(err) };
  if (err.offline) return { title: 'Offline', detail: err.message };
  const c = err.code ?? '';
  if (c === 'insufficient_quota' || c === 'budget_exceeded' || /budget/i.test(c)) {
    return { title: 'Budget exceeded', detail: err.message };
  }
  if (err.status === 429) {
    return { title: 'Too many requests', detail: err.message + (err.retryAfter ? ` Try again in ${err.retryAfter} s.` : '') };
  }
  if (c === 'no_backend' || c === 'backend_unavailable' || err.status === 503) return { title: 'Backend unavailable', detail: err.message };
  if (err.status === 401) return { title: 'Not signed in', detail: err.message };
  if (err.status === 403) return { title: 'Not allowed', detail: err.message };
  if (err.status === 404) return { title: 'Not found', detail: err.message };
  if (err.status >= 500) return { title: 'Server error', detail: err.message };
  return { title: 'Request refused', detail: err.message };
}

// ---- Wire types (what easel answers) ----

export interface KeyInfo {
  id: string;
  name: string;
  prefix: string;
  admin: boolean;
  created_at: number;
  revoked_at: number | null;
}

export interface ModelInfo {
  id: string;
  backend: string;
  backend_type: string;
  default: boolean;
  description?: string;
  /** The LoRA adapters requests may name (absent: the model takes none). */
  loras?: string[];
}

export interface JobRequestView {
  prompt: string;
  n: number;
  size: string;
  response_format?: string;
  output_format?: string;
  negative_prompt?: string;
  seed?: number;
  steps?: number;
  guidance_scale?: number;
  quality?: string;
  style?: string;
  loras?: Array<{ name: string; weight: number }>;
}

export interface JobView {
  id: string;
  kind: 'generation' | 'edit' | 'variation';
  status: 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';
  progress: number;
  model: string;
  backend: string | null;
  priority: string;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  attempts: number;
  cancel_requested: boolean;
  request: JobRequestView;
  cost_usd: number | null;
  result: { created: number; data: { url?: string; b64_json?: string; revised_prompt?: string }[]; size?: string } | null;
  warnings: string[];
  error: { code: string; message: string } | null;
  /** Cost control, where the server has it. */
  cost?: { usd: number | null; estimate_usd?: number | null; saved_usd?: number | null };
  cache?: { hit: boolean; kind?: string; source_job_id?: string };
  routing?: { requested?: string; model?: string; backend?: string | null; reason?: string };
}

export interface ImageItem {
  id: string;
  job_id: string;
  index: number;
  url: string;
  thumbnail_url: string;
  width: number;
  height: number;
  media_type: string;
  bytes: number;
  created_at: number;
  kind: JobView['kind'];
  model: string;
  backend: string | null;
  prompt: string;
  revised_prompt: string | null;
  request: JobRequestView;
  metadata: Record<string, string> | null;
  cost_usd: number | null;
  job_cost_usd: number | null;
}

export interface ListPage<T> {
  data: T[];
  has_more: boolean;
  last_id: string | null;
}

export interface HostView {
  name: string;
  url?: string;
  status: string;
  running: number | null;
  loaded_model: string | null;
  busy_ms: number | null;
  calls: number | null;
  images: number | null;
  model_switches: number | null;
  free_vram_bytes: number | null;
  total_vram_bytes: number | null;
  last_error: string | null;
}

export interface BackendView {
  name: string;
  type: string;
  ok: boolean;
  overloaded: boolean;
  /** Running its warm-up: not taking work yet. */
  warming?: boolean;
  message: string | null;
  models: string[];
  capabilities: { generate: boolean; edit: boolean; mask: boolean; variation: boolean; max_input_images: number; max_images_per_call: number };
  queue: { queued: number; running: number; waiting_for_host: number | null };
  hosts: HostView[];
}

/** The first start's download of the default model (`GET /v1/system`'s `model_download`). */
export interface ModelDownloadView {
  status: 'starting' | 'waiting' | 'downloading' | 'converting' | 'ready' | 'failed' | 'stopped';
  models: string[];
  model: string | null;
  percent: number | null;
  received_bytes: number;
  total_bytes: number | null;
  bytes_per_second: number | null;
  eta_seconds: number | null;
  endpoint: string;
  owner: string | null;
  error: string | null;
  started_at: string;
}

export interface SystemView {
  checked_at: number;
  jobs: Record<string, number>;
  default_model: string | null;
  backends: BackendView[];
  model_download?: ModelDownloadView | null;
}
