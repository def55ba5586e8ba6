/**
 * `easel costs report [--days N] [--json]`: reads the metadata database named by the config (like
 * `easel keys`) and prints cost per image by model, GPU utilization of self-hosted backends, and the
 * monthly break-even volume of each self-hosted model against hosted alternatives (from measured
 * GPU-seconds and the price table).
 */
import type { Command } from 'commander';
import { openDatabase, migrate } from '../store/database.ts';
import { PriceTable } from '../pricing/price-table.ts';
import { priceRules } from '../pricing/schema.ts';
import { costReport, formatCostReport } from '../observability/usage.ts';
import { commandConfig, withDataOptions } from './options.ts';
import { databaseUrl } from './migrate.ts';

export function costsCommands(program: Command): void {
  const costs = program.command('costs').description('Cost reports from the database');
  const report = costs
    .command('report')
    .description('Cost per image by model, GPU utilization, self-hosted vs hosted break-even volume')
    .option('--days <n>', 'report window in days, ending now', '30')
    .option('--json', 'print JSON instead of tables');
  withDataOptions(report).action(async (opts: { days: string; json?: boolean }) => {
      const days = Number(opts.days);
      if (!Number.isFinite(days) || days <= 0) throw new Error('--days must be a positive number');
      const config = commandConfig(report);
      const mdb = openDatabase(databaseUrl(config));
      try {
        await migrate(mdb);
        const report = await costReport(mdb, config, new PriceTable(priceRules(config.pricing)), { days });
        process.stdout.write(opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatCostReport(report));
      } finally {
        await mdb.close();
      }
    });
}
