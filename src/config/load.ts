/**
 * Loads the config: YAML file (`--config` or EASEL_CONFIG) < environment overrides, then the schema.
 * Errors name the offending key, e.g. `server.port: expected number, received string`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { configSchema } from './schema.ts';
import type { EaselConfig } from './schema.ts';

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(problems: string[], source: string) {
    super(`invalid configuration (${source}):\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** Plain environment variables people expect, and the config path each one sets. */
export const ENV_KEYS: Record<string, { path: string; type?: 'number' | 'boolean' }> = {
  EASEL_DATA_DIR: { path: 'dataDir' },
  HOST: { path: 'server.host' },
  PORT: { path: 'server.port', type: 'number' },
  EASEL_PUBLIC_URL: { path: 'server.publicUrl' },
  DATABASE_URL: { path: 'database.url' },
  REDIS_URL: { path: 'redis.url' },
  EASEL_STORAGE: { path: 'storage.type' },
  S3_BUCKET: { path: 'storage.s3.bucket' },
  S3_ENDPOINT: { path: 'storage.s3.endpoint' },
  S3_REGION: { path: 'storage.s3.region' },
  S3_ACCESS_KEY_ID: { path: 'storage.s3.accessKeyId' },
  S3_SECRET_ACCESS_KEY: { path: 'storage.s3.secretAccessKey' },
  S3_FORCE_PATH_STYLE: { path: 'storage.s3.forcePathStyle', type: 'boolean' },
  EASEL_ADMIN_KEY: { path: 'auth.adminKey' },
  LOG_LEVEL: { path: 'logging.level' },
  EASEL_WORKER_CONCURRENCY: { path: 'worker.concurrency', type: 'number' },
  EASEL_AUTO_PULL: { path: 'modelStore.autoPull', type: 'boolean' },
  HF_ENDPOINT: { path: 'modelStore.endpoint' },
};

const camel = (s: string): string => s.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

function setPath(target: Record<string, any>, path: string[], value: unknown): void {
  let node = target;
  for (const part of path.slice(0, -1)) {
    if (typeof node[part] !== 'object' || node[part] === null) node[part] = {};
    node = node[part];
  }
  node[path[path.length - 1]!] = value;
}

function coerce(raw: string, type?: 'number' | 'boolean' | 'json'): unknown {
  if (type === undefined) return raw;
  if (type === 'number') return raw.trim() === '' || Number.isNaN(Number(raw)) ? raw : Number(raw);
  if (type === 'boolean') return raw === 'true' || raw === '1' ? true : raw === 'false' || raw === '0' ? false : raw;
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/** Applies ENV_KEYS and generic `EASEL__SECTION__KEY_NAME=value` overrides (JSON values allowed). */
export function applyEnv(base: Record<string, any>, env: NodeJS.ProcessEnv): Record<string, any> {
  const out = structuredClone(base);
  for (const [name, spec] of Object.entries(ENV_KEYS)) {
    const raw = env[name];
    if (raw !== undefined && raw !== '') setPath(out, spec.path.split('.'), coerce(raw, spec.type));
  }
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('EASEL__') || raw === undefined) continue;
    const path = name.slice('EASEL__'.length).split('__').filter(Boolean).map(camel);
    if (path.length) setPath(out, path, coerce(raw, 'json'));
  }
  return out;
}

export interface LoadOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Values applied last (tests, CLI flags). */
  overrides?: Record<string, any>;
}

function deepMerge(a: Record<string, any>, b: Record<string, any>): Record<string, any> {
  const out: Record<string, any> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && typeof out[k] === 'object' && out[k] && !Array.isArray(out[k]) ? deepMerge(out[k], v) : v;
  }
  return out;
}

export function loadConfig(opts: LoadOptions = {}): EaselConfig {
  const env = opts.env ?? process.env;
  // ./easel.yaml is picked up when nothing else is named, so `npm start` finds a local config.
  const file = opts.file ?? env.EASEL_CONFIG ?? (opts.env === undefined && existsSync('easel.yaml') ? 'easel.yaml' : undefined);
  let raw: Record<string, any> = {};
  let source = 'defaults + environment';
  if (file) {
    const path = resolve(file);
    if (!existsSync(path)) throw new ConfigError([`config file not found: ${path}`], path);
    try {
      raw = (parseYaml(readFileSync(path, 'utf8')) as Record<string, any> | null) ?? {};
    } catch (err) {
      throw new ConfigError([`cannot parse YAML: ${(err as Error).message}`], path);
    }
    if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(['the file must hold a mapping at its top level'], path);
    source = `${path} + environment`;
  }
  const merged = deepMerge(applyEnv(raw, env), opts.overrides ?? {});
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`);
    throw new ConfigError(problems, source);
  }
  return parsed.data;
}
