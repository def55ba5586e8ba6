import type { Command } from 'commander';
import { openDatabase, migrate } from '../store/database.ts';
import { SqlKeyStore } from '../store/sql-key-store.ts';
import { createApiKey } from '../auth/api-keys.ts';
import { commandConfig, withDataOptions } from './options.ts';
import { databaseUrl } from './migrate.ts';

async function withKeys<T>(cmd: Command, fn: (keys: SqlKeyStore) => Promise<T>): Promise<T> {
  const config = commandConfig(cmd);
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
  const create = withDataOptions(keys.command('create').description('Create a key and print it once'))
    .requiredOption('--name <name>', 'a name to recognise the key by')
    .option('--admin', 'may manage keys');
  create.action(async (opts: { name: string; admin?: boolean }) => {
    const { key, secret } = await withKeys(create, (store) => createApiKey(store, { name: opts.name, admin: !!opts.admin }));
    process.stdout.write(`${secret}\n`);
    process.stderr.write(`created ${key.id} (${key.name}${key.admin ? ', admin' : ''}); the key above is not shown again\n`);
  });
  const list = withDataOptions(keys.command('list').description('List keys (never their secrets)'));
  list.action(async () => {
    const rows = (await withKeys(list, (store) => store.listKeys())).map((k) => [
      k.id,
      k.name,
      `${k.prefix}…`,
      k.admin ? 'admin' : 'user',
      k.createdAt.toISOString(),
      k.revokedAt ? `revoked ${k.revokedAt.toISOString()}` : 'active',
    ]);
    if (rows.length === 0) {
      process.stderr.write('no keys yet (`easel keys create --name NAME`)\n');
      return;
    }
    // A header row, columns padded to their widest cell (names and prefixes vary in length).
    const table = [['ID', 'NAME', 'PREFIX', 'ROLE', 'CREATED', 'STATUS'], ...rows];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
    for (const r of table) process.stdout.write(`${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')}\n`);
  });
  const revoke = withDataOptions(keys.command('revoke <idOrName>').description('Revoke a key by id or name'));
  revoke.action(async (idOrName: string) => {
    const ok = await withKeys(revoke, (store) => store.revokeKey(idOrName));
    if (!ok) {
      process.stderr.write(`no active key matches "${idOrName}"\n`);
      process.exit(1);
    }
    process.stdout.write(`revoked ${idOrName}\n`);
  });
}
