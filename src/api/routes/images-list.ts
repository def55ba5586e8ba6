/**
 * GET /v1/images — the key's stored images, newest job first (a job's images in index order), with
 * each image's job, parameters, backend and cost: what the console's gallery pages through.
 *
 *   ?limit=1..100 (30)  &after=<image id>  &model=<public model name>  &prompt=<text in the prompt>
 *   &created_after=<unix s>  &created_before=<unix s>
 *
 * Answers `{object: 'list', data, has_more, first_id, last_id}`. `url` is the full image and
 * `thumbnail_url` its WebP thumbnail (the image itself when none was stored: images no larger than a
 * thumbnail, or stored before thumbnails existed); both are signed,
 * expiring links like the ones in job results.
 */
import type { FastifyInstance } from 'fastify';
import { invalidParam } from '../../core/errors.ts';
import type { Job, StoredImage } from '../../core/job.ts';
import { requestView } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';

const unix = (d: Date | null): number | null => (d ? Math.floor(d.getTime() / 1000) : null);

export async function imageListRoutes(app: FastifyInstance, deps: ApiDeps) {
  const ttl = deps.config.storage.urlTtlSeconds;

  const view = async (image: StoredImage, job: Job) => {
    const [url, thumb] = await Promise.all([
      deps.storage.url(image.storageKey, ttl),
      image.thumbKey ? deps.storage.url(image.thumbKey, ttl) : undefined,
    ]);
    const count = job.result?.images.length || job.request.n || 1;
    return {
      id: image.id,
      object: 'image',
      job_id: image.jobId,
      index: image.index,
      url,
      thumbnail_url: thumb ?? url,
      width: image.width,
      height: image.height,
      media_type: image.mediaType,
      bytes: image.bytes,
      created_at: unix(image.createdAt),
      kind: job.kind,
      model: job.model,
      backend: job.backend,
      prompt: job.request.prompt,
      revised_prompt: image.revisedPrompt,
      request: requestView(job),
      metadata: job.metadata,
      cost_usd: job.costUsd == null ? null : Math.round((job.costUsd / count) * 1e6) / 1e6,
      job_cost_usd: job.costUsd,
    };
  };

  app.get<{ Querystring: Record<string, string | undefined> }>('/images', async (req) => {
    const q = req.query;
    const limit = q.limit === undefined ? 30 : Number(q.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) throw invalidParam('limit', "Invalid value for 'limit': expected an integer from 1 to 100.");
    if (q.after !== undefined && !/^img_[0-9A-Z]{26}$/.test(q.after)) throw invalidParam('after', "Invalid value for 'after': expected an image id.");
    if (q.prompt !== undefined && q.prompt.length > 1000) throw invalidParam('prompt', "Invalid value for 'prompt': at most 1000 characters.");
    if (q.model !== undefined && q.model.length > 200) throw invalidParam('model', "Invalid value for 'model': at most 200 characters.");
    const time = (name: 'created_after' | 'created_before'): number | undefined => {
      const v = q[name];
      if (v === undefined || v === '') return undefined;
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw invalidParam(name, `Invalid value for '${name}': expected a Unix time in seconds.`);
      return Math.round(n * 1000);
    };
    const page = await deps.store.listImages({
      keyId: req.apiKey.id,
      limit,
      after: q.after,
      model: q.model || undefined,
      prompt: q.prompt?.trim() || undefined,
      createdFrom: time('created_after'),
      createdTo: time('created_before'),
    });
    const data = await Promise.all(page.items.map(({ image, job }) => view(image, job)));
    return { object: 'list', data, has_more: page.hasMore, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
  });
}
