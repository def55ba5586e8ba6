/**
 * `easel config check [--probe]`: validates the config file and environment (errors name the key),
 * warns about every environment variable the config names that is not set (a backend's `apiKeyEnv`,
 * Replicate's `webhookSecretEnv`, the moderation endpoint's and the embedder's), and with `--probe`
 * asks each backend's health once and prints the answer.
 */
import type { Command } from 'commander';
import type { EaselConfig } from '../config/schema.ts';
import { BackendRegistry } from '../backends/registry.ts';
import { withEmbeddedDefault } from '../backends/onnx/embedded-default.ts';
import type { BackendHealth } from '../backends/image-backend.ts';
import { commandConfig, withDataOptions } from './options.ts';

/** Every `…Env` field under `node` that names a variable `env` lacks (or has empty), with its path. */
function unsetVariables(node: unknown, path: string, env: NodeJS.ProcessEnv, out: string[]): void {
  if (Array.isArray(node)) return node.forEach((v, i) => unsetVariables(v, `${path}[${i}]`, env, out));
  if (!node || typeof node !== 'object') return;
  for (const [k, v] of Object.entries(node)) {
    const at = path ? `${path}.${k}` : k;
    if (/Env$/.test(k) && typeof v === 'string') {
      if (!env[v]) out.push(`${at} names ${v}, which is not set`);
    } else unsetVariables(v, at, env, out);
  }
}

export function configWarnings(cfg: EaselConfig, env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  cfg.backends.forEach((b, i) => {
    const where = `backends[${i}] (${b.name})`;
    const found: string[] = [];
    unsetVariables(b, '', env, found);
    out.push(...found.map((w) => `${where}.${w}`));
    // An openai backend with neither key nor apiKeyEnv reads OPENAI_API_KEY.
    if (b.type === 'openai' && !b.apiKey && !b.apiKeyEnv && !env.OPENAI_API_KEY) {
      out.push(`${where}: no apiKey, apiKeyEnv unset, and OPENAI_API_KEY is not set (calls go without a key: fine for LocalAI, refused by OpenAI)`);
    }
  });
  if (cfg.moderation.endpoint) unsetVariables(cfg.moderation.endpoint, 'moderation.endpoint', env, out);
  if (cfg.cache.semantic.enabled && cfg.cache.semantic.embedder) unsetVariables(cfg.cache.semantic.embedder, 'cache.semantic.embedder', env, out);
  return out;
}

async function probe(cfg: EaselConfig): Promise<{ name: string; type: string; health: BackendHealth }[]> {
  const embedded = withEmbeddedDefault(cfg.backends, cfg.models, cfg.dataDir);
  const registry = BackendRegistry.fromConfig(embedded.backends, embedded.models, {}, { publicUrl: cfg.server.publicUrl });
  try {
    return await Promise.all(
      registry.listBackends().map(async (b) => {
        let health: BackendHealth;
        let timer: NodeJS.Timeout | undefined;
        try {
          health = await Promise.race([
            b.health(),
            new Promise<BackendHealth>((resolve) => {
              timer = setTimeout(() => resolve({ ok: false, message: 'no health answer within 15 s' }), 15_000);
            }),
          ]);
        } catch (err) {
          health = { ok: false, message: (err as Error).message };
        } finally {
          clearTimeout(timer);
        }
        return { name: b.name, type: b.type, health };
      }),
    );
  } finally {
    await registry.close().catch(() => {});
  }
}

export function configCommands(program: Command): void {
  const config = program.command('config').description('Inspect the configuration');
  const check = withDataOptions(config.command('check').description('Validate the config file and environment, then print the result'));
  check.option('--probe', "also ask every backend's health once and print the answers (exit 1 if one is down)");
  check.action(async (opts: { probe?: boolean }) => {
    const cfg = commandConfig(check);
    process.stdout.write(
      `config OK: ${cfg.backends.length} backend(s), ${cfg.models.length} model(s), database ${cfg.database.url ? cfg.database.url.replace(/\/\/[^@]*@/, '//***@') : 'sqlite (data dir)'}, queue ${cfg.redis.url ? 'bullmq' : 'embedded'}, storage ${cfg.storage.type}\n`,
    );
    for (const w of configWarnings(cfg)) process.stderr.write(`warning: ${w}\n`);
    if (!opts.probe) return;
    const results = await probe(cfg);
    if (results.length === 0) process.stdout.write('no backend to probe (none configured and no model in the data folder)\n');
    for (const r of results) process.stdout.write(`backend ${r.name} (${r.type}): ${r.health.ok ? 'up' : 'down'}${r.health.message ? ` — ${r.health.message}` : ''}\n`);
    if (results.some((r) => !r.health.ok)) process.exitCode = 1;
  });
}
