import type { Command } from 'commander';
import { join, resolve } from 'node:path';
import { openDatabase, migrate } from '../store/database.ts';
import { commandConfig, withDataOptions } from './options.ts';
import type { EaselConfig } from '../config/schema.ts';

export function databaseUrl(config: EaselConfig): string {
  return config.database.url ?? join(resolve(config.dataDir), 'easel.db');
}

export function migrateCommand(program: Command): void {
  const cmd = program.command('migrate').description('Apply database migrations and exit');
  withDataOptions(cmd).action(async () => {
      const config = commandConfig(cmd);
      const mdb = openDatabase(databaseUrl(config));
      try {
        const applied = await migrate(mdb);
        process.stdout.write(applied.length ? `applied: ${applied.join(', ')}\n` : 'database is up to date\n');
      } finally {
        await mdb.close();
      }
    });
}
