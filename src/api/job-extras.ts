/** What the job object shows about its cost, budget, cache, routing and links (draft → refine, batch). */
import type { Job } from '../core/job.ts';
import type { BudgetLedger } from '../budgets/ledger.ts';
import type { JobCosts } from '../jobs/job-costs.ts';
import { num } from '../jobs/job-costs.ts';
import type { RoutingRecord } from '../routing/router.ts';

export function jobExtras(jobCosts: JobCosts, ledger: BudgetLedger): (job: Job) => Promise<Record<string, unknown>> {
  return async (job) => {
    // A job this process just admitted without a row (the 202 answer) needs no read.
    const row = job.attempt === 0 && jobCosts.knownRowless(job.id) ? undefined : await jobCosts.get(job.id).catch(() => undefined);
    const out: Record<string, unknown> = {};
    const reservation = row && Number(row.reserved) ? await ledger.reservation(job.id).catch(() => undefined) : undefined;
    out.cost = {
      usd: job.costUsd,
      estimate_usd: num(row?.estimate_usd),
      ...(row?.gpu_seconds != null ? { gpu_seconds: Math.round(Number(row.gpu_seconds) * 1000) / 1000 } : {}),
      ...(row?.saved_usd != null ? { saved_usd: num(row.saved_usd) } : {}),
      ...(reservation ? { budget: { status: reservation.status, reserved_usd: reservation.amountUsd, charged_usd: reservation.chargedUsd } } : {}),
    };
    out.cache = row?.cache_kind ? { hit: true, kind: row.cache_kind, source_job_id: row.cache_source_job, ...(row.cache_similarity != null ? { similarity: num(row.cache_similarity) } : {}) } : { hit: false };
    if (row?.routing) {
      const r = JSON.parse(row.routing) as RoutingRecord;
      out.routing = { requested: r.requested, ...(r.alias ? { alias: r.alias } : {}), model: r.model, backend: r.backend, reason: r.reason, ...(r.fallbacks?.length ? { fallbacks: r.fallbacks.map((f) => ({ ...f, at: Math.floor(f.at / 1000) })) } : {}), ...(r.candidates ? { candidates: r.candidates } : {}) };
    } else {
      out.routing = { requested: row?.requested_model ?? job.model, model: job.model, backend: job.backend, reason: job.backend === 'cache' ? 'answered from the cache' : `model '${job.model}' as requested` };
    }
    if (row?.parent_job_id) out.refined_from = { job_id: row.parent_job_id, index: num(row.parent_index) };
    if (row?.batch_id) out.batch_id = row.batch_id;
    // Only a finished generation can have been refined.
    if (job.status === 'succeeded' && job.kind === 'generation') {
      const children = await jobCosts.refinements(job.id).catch(() => []);
      if (children.length) out.refinements = children;
    }
    return out;
  };
}
