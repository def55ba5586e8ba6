/** The `easel` command line. */
import { Command } from 'commander';
import { ConfigError, loadConfig } from '../config/load.ts';
import type { EaselConfig } from '../config/schema.ts';
import { serveCommand } from './serve.ts';
import { keysCommands } from './keys.ts';
import { generateCommand } from './generate.ts';
import { migrateCommand } from './migrate.ts';
import { modelsCommands } from './models.ts';
import { costsCommands } from './costs.ts';
import { batchCommand } from './batch.ts';

export interface GlobalOpts {
  config?: string;
}

/** Loads the config or exits with the problems listed, each naming its key. */
export function configOrExit(opts: GlobalOpts, overrides: Record<string, any> = {}): EaselConfig {
  try {
    return loadConfig({ file: opts.config, overrides });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`easel: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
}

const program = new Command();
program.name('easel').description('Self-hosted image generation with the OpenAI Images API').option('-c, --config <file>', 'YAML config file (or EASEL_CONFIG)');

serveCommand(program, 'serve', 'Run the API and a worker in one process (embedded defaults)', { api: true, worker: true });
serveCommand(program, 'api', 'Run the HTTP API only', { api: true, worker: false });
serveCommand(program, 'worker', 'Run a worker only (run as many as you like)', { api: false, worker: true });
migrateCommand(program);
keysCommands(program);
generateCommand(program);
modelsCommands(program);
costsCommands(program);
batchCommand(program);

const config = program.command('config').description('Inspect the configuration');
config
  .command('check')
  .description('Validate the config file and environment, then print the result')
  .action(() => {
    const cfg = configOrExit(program.opts<GlobalOpts>());
    process.stdout.write(`config OK: ${cfg.backends.length} backend(s), ${cfg.models.length} model(s), database ${cfg.database.url ? cfg.database.url.replace(/\/\/[^@]*@/, '//***@') : 'sqlite (data dir)'}, queue ${cfg.redis.url ? 'bullmq' : 'embedded'}, storage ${cfg.storage.type}\n`);
  });

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`easel: ${err.message}\n`);
  process.exit(1);
});
