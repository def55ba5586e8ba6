/** The async job API: fetch, list (cursor pagination, status filter) and cancel a key's jobs. */
import type { FastifyInstance } from 'fastify';
import { DomainError, invalidParam, notFound } from '../../core/errors.ts';
import { JOB_STATUSES } from '../../core/job.ts';
import type { Job, JobStatus } from '../../core/job.ts';
import type { JobViews } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';

export async function jobRoutes(app: FastifyInstance, deps: ApiDeps & { views: JobViews }) {
  /** A key sees only its own jobs; anyone else's answer exactly like a missing one. */
  const ownJob = async (id: string, keyId: string): Promise<Job> => {
    const job = await deps.store.getJob(id);
    if (!job || job.keyId !== keyId) throw notFound('job', id);
    return job;
  };
  const render = async (job: Job, admin: boolean) => {
    const view = await deps.views.job(job, job.status === 'succeeded' ? await deps.store.listImagesForJob(job.id) : undefined, { admin });
    if (job.webhookUrl && deps.webhookInfo) view.webhook = (await deps.webhookInfo(job.id)) ?? null;
    return view;
  };

  app.get<{ Params: { id: string } }>('/images/jobs/:id', async (req) => render(await ownJob(req.params.id, req.apiKey.id), req.apiKey.admin));

  app.get<{ Querystring: Record<string, string | undefined> }>('/images/jobs', async (req) => {
    const q = req.query;
    const limit = q.limit === undefined ? 20 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw invalidParam('limit', "Invalid value for 'limit': expected an integer from 1 to 100.");
    if (q.status !== undefined && !JOB_STATUSES.includes(q.status as JobStatus)) {
      throw invalidParam('status', `Invalid value for 'status': expected one of ${JOB_STATUSES.join(', ')}.`);
    }
    if (q.after !== undefined && !/^job_[0-9A-Z]{26}$/.test(q.after)) throw invalidParam('after', "Invalid value for 'after': expected a job id.");
    const page = await deps.store.listJobs({ keyId: req.apiKey.id, status: q.status as JobStatus | undefined, limit, after: q.after });
    const data = await Promise.all(page.jobs.map((j) => render(j, req.apiKey.admin)));
    return {
      object: 'list',
      data,
      has_more: page.hasMore,
      first_id: page.jobs[0]?.id ?? null,
      last_id: page.jobs.at(-1)?.id ?? null,
    };
  });

  app.post<{ Params: { id: string } }>('/images/jobs/:id/cancel', { config: { limitGroup: 'reads' } }, async (req) => {
    await ownJob(req.params.id, req.apiKey.id);
    const out = await deps.settler.cancel(req.params.id, (id) => deps.queue.remove(id));
    if (out.outcome === 'not_found') throw notFound('job', req.params.id);
    if (out.outcome === 'already_terminal') {
      throw new DomainError('conflict', `Job ${out.job.id} already ended with status '${out.job.status}'.`, { code: 'job_already_finished' });
    }
    return render(out.job, req.apiKey.admin);
  });
}
