/** The async job API: fetch, list (cursor pagination, status filter) and cancel a key's jobs. */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DomainError, notFound } from '../../core/errors.ts';
import { JOB_STATUSES } from '../../core/job.ts';
import type { Job } from '../../core/job.ts';
import type { JobViews } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';
import { JOB_ID, errorResponses, json, queryEnum, queryInt } from '../schemas/common.ts';
import { emptyBody, idParam, noQuery } from '../schemas/compile.ts';
import { jobListSchema, jobSchema } from '../schemas/job.ts';

export const jobParams = z.object({ id: idParam('job', JOB_ID, 'job_not_found', 'The job id (`job_…`)') });

const listQuery = z
  .object({
    limit: queryInt(1, 100, 20, 'Page size (default 20)'),
    after: z.string().regex(JOB_ID, 'expected a job id').optional().describe('The last id of the previous page'),
    status: queryEnum(JOB_STATUSES, 'Only jobs with this status'),
  })
  .strict();

export async function jobRoutes(app: FastifyInstance, deps: ApiDeps & { views: JobViews }) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  /** A key sees only its own jobs; anyone else's answer exactly like a missing one. */
  const ownJob = async (id: string, keyId: string): Promise<Job> => {
    const job = await deps.store.getJob(id);
    if (!job || job.keyId !== keyId) throw notFound('job', id);
    return job;
  };
  const render = async (job: Job, admin: boolean) => {
    const view = await deps.views.job(job, job.status === 'succeeded' ? await deps.store.listImagesForJob(job.id) : undefined, { admin });
    if (job.webhookUrl && deps.webhookInfo) view.webhook = (await deps.webhookInfo(job.id)) ?? null;
    return view as z.output<typeof jobSchema>;
  };

  r.get('/images/jobs/:id', {
    schema: { summary: 'Get a job', operationId: 'getJob', tags: ['jobs'], params: jobParams, querystring: noQuery, response: { 200: json('The job', jobSchema), ...errorResponses } },
  }, async (req) => render(await ownJob(req.params.id, req.apiKey.id), req.apiKey.admin));

  r.get('/images/jobs', {
    schema: { summary: "List the key's jobs, newest first", operationId: 'listJobs', tags: ['jobs'], querystring: listQuery, response: { 200: json('A page of jobs', jobListSchema), ...errorResponses } },
  }, async (req) => {
    const q = req.query;
    const page = await deps.store.listJobs({ keyId: req.apiKey.id, status: q.status, limit: q.limit, after: q.after });
    const data = await Promise.all(page.jobs.map((j) => render(j, req.apiKey.admin)));
    return {
      object: 'list' as const,
      data,
      has_more: page.hasMore,
      first_id: page.jobs[0]?.id ?? null,
      last_id: page.jobs.at(-1)?.id ?? null,
    };
  });

  r.post('/images/jobs/:id/cancel', {
    config: { limitGroup: 'reads' },
    schema: {
      summary: 'Cancel a job (queued: at once; running: aborted through its backend)',
      operationId: 'cancelJob',
      tags: ['jobs'],
      params: jobParams,
      querystring: noQuery,
      body: emptyBody,
      response: { 200: json('The job, canceled or asked to stop', jobSchema), ...errorResponses },
    },
  }, async (req) => {
    await ownJob(req.params.id, req.apiKey.id);
    const out = await deps.settler.cancel(req.params.id, (id) => deps.queue.remove(id));
    if (out.outcome === 'not_found') throw notFound('job', req.params.id);
    if (out.outcome === 'already_terminal') {
      throw new DomainError('conflict', `Job ${out.job.id} already ended with status '${out.job.status}'.`, { code: 'job_already_finished' });
    }
    return render(out.job, req.apiKey.admin);
  });
}
