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
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { IMAGE_ID, errorResponses, json, listOf, queryInt, queryNumber, queryString } from '../schemas/common.ts';
import { requestViewSchema } from '../schemas/job.ts';
import type { Job, StoredImage } from '../../core/job.ts';
import { requestView } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';

const unix = (d: Date | null): number | null => (d ? Math.floor(d.getTime() / 1000) : null);

const unixTime = (what: string) => queryNumber((n) => n.min(0, 'expected a Unix time in seconds'), what);

const listQuery = z
  .object({
    limit: queryInt(1, 100, 30, 'Page size (default 30)'),
    after: z.string().regex(IMAGE_ID, 'expected an image id').optional().describe('The last id of the previous page'),
    model: queryString('Only images of this public model name', 200),
    prompt: queryString('Only images whose prompt contains this text', 1000),
    created_after: unixTime('Only images created at or after this Unix time (seconds)'),
    created_before: unixTime('Only images created before this Unix time (seconds)'),
  })
  .strict();

const imageSchema = z.object({
  id: z.string(),
  object: z.literal('image'),
  job_id: z.string(),
  index: z.int(),
  url: z.string().describe('Signed, expiring link to the image'),
  thumbnail_url: z.string().describe('Its WebP thumbnail (the image itself when none was stored)'),
  width: z.int(),
  height: z.int(),
  media_type: z.string(),
  bytes: z.int(),
  created_at: z.int().nullable(),
  kind: z.enum(['generation', 'edit', 'variation']),
  model: z.string(),
  backend: z.string().nullable(),
  prompt: z.string(),
  revised_prompt: z.string().nullable(),
  request: requestViewSchema,
  metadata: z.record(z.string(), z.string()).nullable(),
  cost_usd: z.number().nullable().describe("The image's share of its job's cost"),
  job_cost_usd: z.number().nullable(),
});

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
      object: 'image' as const,
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

  app.withTypeProvider<ZodTypeProvider>().get('/images', {
    schema: {
      summary: "The key's stored images, newest job first, with their job, parameters, backend and cost",
      operationId: 'listImages',
      tags: ['images'],
      querystring: listQuery,
      response: { 200: json('A page of images', listOf(imageSchema)), ...errorResponses },
    },
  }, async (req) => {
    const q = req.query;
    const ms = (s: number | undefined) => (s === undefined ? undefined : Math.round(s * 1000));
    const page = await deps.store.listImages({
      keyId: req.apiKey.id,
      limit: q.limit,
      after: q.after,
      model: q.model,
      prompt: q.prompt?.trim() || undefined,
      createdFrom: ms(q.created_after),
      createdTo: ms(q.created_before),
    });
    const data = await Promise.all(page.items.map(({ image, job }) => view(image, job)));
    return { object: 'list' as const, data, has_more: page.hasMore, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
  });
}
