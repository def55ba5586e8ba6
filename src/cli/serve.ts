import type { Command } from 'commander';
import { Runtime } from '../app.ts';
import type { Roles } from '../app.ts';
import { commandConfig, withDataOptions } from './options.ts';

export function serveCommand(program: Command, name: string, description: string, roles: Roles): void {
  const cmd = program.command(name).description(description);
  if (roles.api) cmd.option('-p, --port <port>', 'port to listen on').option('--host <host>', 'address to bind');
  withDataOptions(cmd);
  cmd.action(async (opts: { port?: string; host?: string }) => {
    const overrides: Record<string, any> = {};
    if (opts.port !== undefined) overrides.server = { ...overrides.server, port: Number(opts.port) };
    if (opts.host !== undefined) overrides.server = { ...overrides.server, host: opts.host };
    const config = commandConfig(cmd, overrides);
    const runtime = new Runtime(config, roles);
    const shutdown = (signal: string) => {
      runtime.log.info({ signal }, 'shutting down');
      runtime.stop().then(
        () => process.exit(0),
        () => process.exit(1),
      );
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
    await runtime.start();
    if (runtime.url) {
      process.stdout.write(`easel ${name} listening on ${runtime.url}\n`);
      process.stdout.write(`  web console ${runtime.url}/ · API docs ${runtime.url}/docs · OpenAPI ${runtime.url}/openapi.json\n`);
    }
    else process.stdout.write(`easel ${name} started (queue: ${runtime.queue.kind}, concurrency ${config.worker.concurrency})\n`);
    if (runtime.createdAdminKey) {
      process.stdout.write(`\nAdmin API key (shown once; store it now):\n  ${runtime.createdAdminKey}\n\n`);
    }
    if (roles.api && runtime.backends.listModels().length === 0) {
      const hint = runtime.setupHint ?? 'No image backend is configured yet: add one under `backends:` and `models:` in a config file (see README).';
      process.stdout.write(`${hint}\n`);
    }
  });
}
