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
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DomainError, invalidParam } from '../../core/errors.ts';
import { errorResponses, json, queryNumber, queryString } from '../schemas/common.ts';
import type { ApiDeps } from '../server.ts';
import { costReport, usage } from '../../observability/usage.ts';
import { PriceTable } from '../../pricing/price-table.ts';
import { priceRules } from '../../pricing/schema.ts';
import { fromMicros } from '../../budgets/ledger.ts';
import type { MetadataDb } from '../../store/database.ts';

const DAY = 86_400_000;

/** A validated `from`/`to` (YYYY-MM-DD or unix seconds) as a time; a date that does not exist is a 400. */
function parseWhen(name: string, v: string | undefined, endOfDay: boolean): Date | undefined {
  if (v === undefined) return undefined;
  if (/^\d{4}-\d{2}-\d{2}$/.test(v)) {
    const t = Date.parse(`${v}T00:00:00Z`);
    // Date.parse rolls 2026-02-31 over to March 3rd: a date is only a date if it reads back the same.
    if (Number.isNaN(t) || new Date(t).toISOString().slice(0, 10) !== v) throw invalidParam(name, `Invalid value for '${name}': ${v} is not a calendar date.`);
    return new Date(endOfDay ? t + DAY : t);
  }
  return new Date(Number(v) * 1000);
}

const when = (description: string) =>
  z
    .preprocess((v) => (v === '' ? undefined : v), z.string().regex(/^(\d{4}-\d{2}-\d{2}|\d{1,12})$/, 'expected YYYY-MM-DD or unix seconds').optional())
    .describe(description);

const usageQuery = z
  .object({
    from: when('Start: a date (YYYY-MM-DD, UTC) or unix seconds; default 30 days before `to`'),
    to: when('End: a date (inclusive) or unix seconds; default now'),
    key_id: queryString("Admin keys: another key's id or name, or `all`", 200),
  })
  .strict();

const bucket = { jobs: z.number(), images: z.number(), cost_usd: z.number(), cache_hits: z.number(), saved_usd: z.number() };

const usageSchema = z.object({
  object: z.literal('usage'),
  key_id: z.string().nullable(),
  key_name: z.string().nullable(),
  from: z.string().describe('ISO 8601'),
  to: z.string().describe('ISO 8601'),
  totals: z.object(bucket),
  by_day: z.array(z.object({ date: z.string(), ...bucket })),
  by_model: z.array(z.object({ model: z.string(), ...bucket })),
  by_backend: z.array(z.object({ backend: z.string(), ...bucket })),
  cache: z.object({ hits: z.number(), exact_hits: z.number(), semantic_hits: z.number(), hit_rate: z.number(), saved_usd: z.number() }),
  budgets: z.array(
    z.object({
      budget: z.string(),
      scope: z.string(),
      period: z.string(),
      limit_usd: z.number(),
      spent_usd: z.number(),
      reserved_usd: z.number().describe('Held by running jobs'),
      remaining_usd: z.number(),
      resets_at: z.string().describe('ISO 8601'),
    }),
  ).describe("The key's budgets now (empty for key_id=all)"),
});

const costReportSchema = z.object({
  from: z.string(),
  to: z.string(),
  models: z.array(
    z.object({
      model: z.string(),
      backend: z.string(),
      self_hosted: z.boolean(),
      jobs: z.number(),
      images: z.number(),
      cost_usd: z.number(),
      cost_per_image_usd: z.number().nullable(),
      gpu_seconds_per_image: z.number().nullable(),
      cache_hits: z.number(),
      saved_usd: z.number(),
    }),
  ),
  gpu: z.array(z.object({ backend: z.string(), gpus: z.number(), usd_per_gpu_hour: z.number(), gpu_seconds: z.number(), window_seconds: z.number(), utilization: z.number() })),
  break_even: z.array(
    z.object({
      model: z.string(),
      backend: z.string(),
      gpu_seconds_per_image: z.number(),
      self_hosted_usd_per_image: z.number(),
      gpu_usd_per_month: z.number(),
      capacity_images_per_month: z.number(),
      images_per_month_now: z.number(),
      against: z.array(z.object({ hosted: z.string(), usd_per_image: z.number(), break_even_images_per_month: z.number().nullable(), verdict: z.string() })),
    }),
  ),
});

export async function usageRoutes(app: FastifyInstance, deps: ApiDeps & { mdb: MetadataDb }) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const prices = new PriceTable(priceRules(deps.config.pricing));
  r.get('/usage/report', {
    schema: {
      summary: 'Admin: cost per image by model, GPU utilization of self-hosted backends, break-even against hosted models',
      operationId: 'getCostReport',
      tags: ['usage'],
      querystring: z
        .object({ days: queryNumber((n) => n.gt(0, 'expected a number of days between 0 and 3660').max(3660, 'expected a number of days between 0 and 3660'), 'The window, in days back from now (default 30)') })
        .strict(),
      response: { 200: json('The cost report (what `easel costs report --json` prints)', costReportSchema), ...errorResponses },
    },
  }, async (req) => {
    if (!req.apiKey.admin) throw new DomainError('forbidden', 'Only an admin key may read the cost report.', { code: 'permission_denied' });
    return costReport(deps.mdb, deps.config, prices, { days: req.query.days ?? 30 });
  });

  r.get('/usage', {
    schema: {
      summary: 'Spend by day, model and backend; images; cache hits and savings; budgets now',
      operationId: 'getUsage',
      tags: ['usage'],
      querystring: usageQuery,
      response: { 200: json('Usage of the key (or of every key: key_id=all)', usageSchema), ...errorResponses },
    },
  }, async (req) => {
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
    const budgets = all
      ? []
      : (await deps.budgets.ledger.state(deps.budgets.rows(key))).map((r) => ({
          budget: r.label,
          scope: r.scope,
          period: r.period,
          limit_usd: fromMicros(r.limitMicros),
          spent_usd: fromMicros(r.spentMicros),
          reserved_usd: fromMicros(r.reservedMicros),
          remaining_usd: fromMicros(Math.max(0, r.limitMicros - r.spentMicros - r.reservedMicros)),
          resets_at: r.resetsAt.toISOString(),
        }));
    // usage() names each list's key column at run time (`model`, `backend`), which its type cannot say.
    return { ...(report as typeof report & Pick<z.output<typeof usageSchema>, 'by_model' | 'by_backend'>), object: 'usage' as const, key_name: all ? null : key.name, budgets };
  });
}
