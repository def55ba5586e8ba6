/**
 * POST /v1/images/jobs/{id}/retry — submits a failed or canceled job's request again as a new job
 * (same kind, model, parameters, priority, webhook and metadata), through the same admission as any
 * submission (model and capability checks, moderation, idempotency keys). Edits and variations get
 * copies of the original uploads under the new job's id, so the two jobs never share stored objects.
 * Answers 202 with the new job; 409 for a job that has not failed or been canceled.
 */
import { basename } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../../core/errors.ts';
import type { ImageRequest } from '../../core/image-request.ts';
import type { JobViews } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';
import { submitJob } from './images.ts';
import { inputKey } from './edits.ts';

export async function retryRoutes(app: FastifyInstance, deps: ApiDeps & { views: JobViews }) {
  app.post<{ Params: { id: string } }>('/images/jobs/:id/retry', async (req, reply) => {
    const job = await deps.store.getJob(req.params.id);
    if (!job || job.keyId !== req.apiKey.id) throw new ApiError(404, `No job with id '${req.params.id}'.`, { param: 'id', code: 'job_not_found' });
    if (job.status !== 'failed' && job.status !== 'canceled') {
      throw new ApiError(409, `Job ${job.id} is '${job.status}': only failed or canceled jobs can be retried.`, { code: 'job_not_retryable' });
    }
    const { inputImages, mask, ...request } = job.request;
    const copyInput = async (newJobId: string, key: string): Promise<string> => {
      const obj = await deps.storage.get(key);
      if (!obj) throw new ApiError(409, `Job ${job.id}'s uploaded images are no longer stored; submit the edit again.`, { code: 'inputs_gone' });
      const copy = inputKey(newJobId, basename(key));
      await deps.storage.put(copy, obj.data, obj.contentType);
      return copy;
    };
    const hasInputs = (inputImages?.length ?? 0) > 0 || mask !== undefined;
    return submitJob(deps, req, reply, {
      kind: job.kind,
      model: job.model,
      request: request as ImageRequest,
      priority: job.priority,
      webhookUrl: job.webhookUrl,
      metadata: job.metadata,
      async: true,
      ...(hasInputs
        ? {
            inputs: { images: inputImages?.length ?? 0, mask: mask !== undefined },
            prepare: async (newJobId: string): Promise<Partial<ImageRequest>> => ({
              inputImages: await Promise.all((inputImages ?? []).map((k) => copyInput(newJobId, k))),
              ...(mask ? { mask: await copyInput(newJobId, mask) } : {}),
            }),
          }
        : {}),
    });
  });
}
