/**
 * GET /v1/usage — spend of the calling key by day, model and backend; images; cache hits and the
 * money they saved; and its budgets now (limit, spent, reserved by running jobs, remaining).
 * `from` / `to` are dates (`YYYY-MM-DD`, UTC; `to` inclusive) or unix seconds; the default is the
 * last 30 days. An admin key may ask for another key (`key_id=key_…` or its name) or `key_id=all`.
 *
 * GET /v1/usage/report?days=N — admin only: what `easel costs report --json` prints (cost per image
 * by model, GPU utilization of self-hosted backends, monthly break-even volume against hosted models).
 */
import type { FastifyInstance } from 'fastify';
import { DomainError, invalidParam } from '../../core/errors.ts';
import type { ApiDeps } from '../server.ts';
import { costReport, usage } from '../../observability/usage.ts';
import { PriceTable } from '../../pricing/price-table.ts';
import { priceRules } from '../../pricing/schema.ts';
import { fromMicros } from '../../budgets/ledger.ts';
import type { MetadataDb } from '../../store/database.ts';

const DAY = 86_400_000;

function parseWhen(name: string, v: string | undefined, endOfDay: boolean): Date | undefined {
  if (v === undefined || v === '') return undefined;
  if (/^\d{4}-\d{2}-\d{2}$/.test(v)) {
    const t = Date.parse(`${v}T00:00:00Z`);
    // Date.parse rolls 2026-02-31 over to March 3rd: a date is only a date if it reads back the same.
    if (Number.isNaN(t) || new Date(t).toISOString().slice(0, 10) !== v) throw invalidParam(name, `Invalid value for '${name}': ${v} is not a calendar date.`);
    return new Date(endOfDay ? t + DAY : t);
  }
  if (/^\d{1,12}$/.test(v)) return new Date(Number(v) * 1000);
  throw invalidParam(name, `Invalid value for '${name}': expected YYYY-MM-DD or unix seconds.`);
}

export async function usageRoutes(app: FastifyInstance, deps: ApiDeps & { mdb: MetadataDb }) {
  const prices = new PriceTable(priceRules(deps.config.pricing));
  app.get<{ Querystring: Record<string, string | undefined> }>('/usage/report', async (req) => {
    if (!req.apiKey.admin) throw new DomainError('forbidden', 'Only an admin key may read the cost report.', { code: 'permission_denied' });
    const raw = req.query.days;
    const days = raw === undefined || raw === '' ? 30 : Number(raw);
    if (!Number.isFinite(days) || days <= 0 || days > 3660) throw invalidParam('days', "Invalid value for 'days': expected a number of days between 0 and 3660.");
    return costReport(deps.mdb, deps.config, prices, { days });
  });

  app.get<{ Querystring: Record<string, string | undefined> }>('/usage', async (req) => {
    const q = req.query;
    const to = parseWhen('to', q.to, true) ?? new Date();
    const from = parseWhen('from', q.from, false) ?? new Date(to.getTime() - 30 * DAY);
    if (from >= to) throw invalidParam('from', "'from' must be before 'to'.");
    let key = req.apiKey;
    let all = false;
    if (q.key_id !== undefined && q.key_id !== key.id) {
      if (!key.admin) throw new DomainError('forbidden', 'Only an admin key may read the usage of other keys.', { param: 'key_id', code: 'permission_denied' });
      if (q.key_id === 'all') all = true;
      else {
        const found = (await deps.keys.listKeys()).find((k) => k.id === q.key_id || k.name === q.key_id);
        if (!found) throw new DomainError('not_found', `No key '${q.key_id}'.`, { param: 'key_id', code: 'key_not_found' });
        key = found;
      }
    }
    const report = await usage(deps.mdb, { keyId: all ? undefined : key.id, from, to });
    let budgets: unknown[] = [];
    if (!all) {
      const rows = await deps.budgets.ledger.state(deps.budgets.rows(key));
      budgets = rows.map((r) => ({
        budget: r.label,
        scope: r.scope,
        period: r.period,
        limit_usd: fromMicros(r.limitMicros),
        spent_usd: fromMicros(r.spentMicros),
        reserved_usd: fromMicros(r.reservedMicros),
        remaining_usd: fromMicros(Math.max(0, r.limitMicros - r.spentMicros - r.reservedMicros)),
        resets_at: r.resetsAt.toISOString(),
      }));
    }
    return { ...report, key_name: all ? null : key.name, budgets };
  });
}
