import type { Command } from 'commander';
import { openDatabase, migrate } from '../store/database.ts';
import { SqlKeyStore } from '../store/sql-key-store.ts';
import { createApiKey } from '../auth/api-keys.ts';
import { configOrExit } from './main.ts';
import type { GlobalOpts } from './main.ts';
import { databaseUrl } from './migrate.ts';

async function withKeys<T>(program: Command, fn: (keys: SqlKeyStore) => Promise<T>): Promise<T> {
  const config = configOrExit(program.opts<GlobalOpts>());
  const mdb = openDatabase(databaseUrl(config));
  try {
    await migrate(mdb);
    return await fn(new SqlKeyStore(mdb));
  } finally {
    await mdb.close();
  }
}

export function keysCommands(program: Command): void {
  const keys = program.command('keys').description('Manage API keys (stored hashed; a key is shown only when created)');
  keys
    .command('create')
    .requiredOption('--name <name>', 'a name to recognise the key by')
    .option('--admin', 'may manage keys')
    .action(async (opts: { name: string; admin?: boolean }) => {
      const { key, secret } = await withKeys(program, (store) => createApiKey(store, { name: opts.name, admin: !!opts.admin }));
      process.stdout.write(`${secret}\n`);
      process.stderr.write(`created ${key.id} (${key.name}${key.admin ? ', admin' : ''}); the key above is not shown again\n`);
    });
  keys.command('list').action(async () => {
    const list = await withKeys(program, (store) => store.listKeys());
    for (const k of list) {
      process.stdout.write(`${k.id}\t${k.name}\t${k.prefix}…\t${k.admin ? 'admin' : 'user'}\t${k.createdAt.toISOString()}\t${k.revokedAt ? `revoked ${k.revokedAt.toISOString()}` : 'active'}\n`);
    }
  });
  keys
    .command('revoke <idOrName>')
    .action(async (idOrName: string) => {
      const ok = await withKeys(program, (store) => store.revokeKey(idOrName));
      if (!ok) {
        process.stderr.write(`no active key matches "${idOrName}"\n`);
        process.exit(1);
      }
      process.stdout.write(`revoked ${idOrName}\n`);
    });
}
