/**
 * POST /v1/images/jobs/{id}/retry — submits a failed or canceled job's request again as a new job
 * (same kind, model, parameters, priority, webhook and metadata), through the same admission as any
 * submission (model and capability checks, provider options, moderation, budgets, idempotency keys)
 * and limited like one. Edits and variations get copies of the original uploads under the new job's
 * id, so the two jobs never share stored objects. Answers 202 with the new job; 409 for a job that
 * has not failed or been canceled.
 */
import type { FastifyInstance } from 'fastify';
import { DomainError, notFound } from '../../core/errors.ts';
import { idempotencyKeyOf } from '../idempotency.ts';
import { parseCachePolicy } from '../cache-header.ts';
import { submitAndAnswer } from '../submit-answer.ts';
import type { AnswerDeps } from '../submit-answer.ts';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { errorResponses, submissionHeaders } from '../schemas/common.ts';
import { documentedOnly, emptyBody, noQuery } from '../schemas/compile.ts';
import { submissionResponses } from '../schemas/job.ts';
import { jobParams } from './jobs.ts';

export async function retryRoutes(app: FastifyInstance, deps: AnswerDeps) {
  app.withTypeProvider<ZodTypeProvider>().post('/images/jobs/:id/retry', {
    config: { limitGroup: 'generations' },
    schema: {
      summary: "Submit a failed or canceled job's request again as a new job",
      operationId: 'retryJob',
      tags: ['jobs'],
      params: jobParams,
      querystring: noQuery,
      body: emptyBody,
      headers: documentedOnly(submissionHeaders.omit({ prefer: true })),
      response: { 202: submissionResponses[202], ...errorResponses },
    },
  }, async (req, reply) => {
    const job = await deps.store.getJob(req.params.id);
    if (!job || job.keyId !== req.apiKey.id) throw notFound('job', req.params.id);
    if (job.status !== 'failed' && job.status !== 'canceled') {
      throw new DomainError('conflict', `Job ${job.id} is '${job.status}': only failed or canceled jobs can be retried.`, { code: 'job_not_retryable' });
    }
    const { inputImages, mask, ...request } = job.request;
    const hasInputs = (inputImages?.length ?? 0) > 0 || mask !== undefined;
    return submitAndAnswer(
      deps,
      req,
      reply,
      {
        entry: 'retry',
        kind: job.kind,
        model: job.model,
        request,
        priority: job.priority,
        webhookUrl: job.webhookUrl,
        metadata: job.metadata,
        cachePolicy: parseCachePolicy(req.headers['easel-cache']),
        idempotencyKey: idempotencyKeyOf(req),
        ...(hasInputs ? { inputs: { kind: 'stored' as const, images: inputImages ?? [], ...(mask ? { mask } : {}) } } : {}),
      },
      { async: true },
    );
  });
}
