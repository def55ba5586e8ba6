/** The `easel` command line. */
import { Command } from 'commander';
import { serveCommand } from './serve.ts';
import { keysCommands } from './keys.ts';
import { generateCommand } from './generate.ts';
import { migrateCommand } from './migrate.ts';
import { modelsCommands } from './models.ts';
import { costsCommands } from './costs.ts';
import { batchCommand } from './batch.ts';

import { configCommands } from './config.ts';
import { CONFIG_FLAGS, CONFIG_HELP } from './options.ts';

const program = new Command();
program
  .name('easel')
  .description('Self-hosted image generation with the OpenAI Images API')
  .option(CONFIG_FLAGS, CONFIG_HELP)
  // Every command's help lists --config too (it may come before or after the command).
  .configureHelp({ showGlobalOptions: true });

serveCommand(program, 'serve', 'Run the API and a worker in one process (embedded defaults)', { api: true, worker: true });
serveCommand(program, 'api', 'Run the HTTP API only', { api: true, worker: false });
serveCommand(program, 'worker', 'Run a worker only (run as many as you like)', { api: false, worker: true });
migrateCommand(program);
keysCommands(program);
generateCommand(program);
modelsCommands(program);
costsCommands(program);
batchCommand(program);

configCommands(program);

program.parseAsync(process.argv).catch((err: Error) => {
  process.stderr.write(`easel: ${err.message}\n`);
  process.exit(1);
});
