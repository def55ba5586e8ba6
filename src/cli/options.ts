/**
 * The options every command that reads the config or touches the data folder takes, defined once:
 * `--config FILE` (a program-wide option, accepted before or after the command) and `--data-dir DIR`.
 * `easel serve --data-dir /srv/easel` and `easel keys create --data-dir /srv/easel` then mean the same
 * database, and so do `migrate`, `costs`, `models` and `config check`.
 */
import type { Command } from 'commander';
import { ConfigError, loadConfig } from '../config/load.ts';
import type { EaselConfig } from '../config/schema.ts';

export interface GlobalOpts {
  config?: string;
}

export interface DataOpts extends GlobalOpts {
  dataDir?: string;
}

export const CONFIG_FLAGS = '-c, --config <file>';
export const CONFIG_HELP = 'YAML config file (or EASEL_CONFIG; default ./easel.yaml when present)';

/** Adds `--data-dir` to a command that reads the config. */
export function withDataOptions(cmd: Command): Command {
  return cmd.option('--data-dir <dir>', 'data folder: SQLite file, images, models, secrets (or EASEL_DATA_DIR; default ./data)');
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

/** The config as this command's options (its own and the program's) say: `--config`, then `--data-dir` on top. */
export function commandConfig(cmd: Command, overrides: Record<string, any> = {}): EaselConfig {
  const opts = cmd.optsWithGlobals<DataOpts>();
  return configOrExit({ config: opts.config }, { ...(opts.dataDir !== undefined ? { dataDir: opts.dataDir } : {}), ...overrides });
}
