/**
 * Batches: many generation requests in one call.
 *
 *   POST /v1/images/batches                 JSON `{"requests": [...], "hourly_spend_cap_usd", "priority", "metadata", "model", "cache"}`,
 *                                           a JSON array of requests, or a JSONL upload (`Content-Type: application/jsonl`,
 *                                           options in the query string). Each request is a generations body plus
 *                                           `custom_id` and `cache`; OpenAI Batch lines (`{"custom_id","url","body"}`) work too.
 *   GET  /v1/images/batches                 the key's batches, newest first
 *   GET  /v1/images/batches/{id}            counts by status, progress, cost so far
 *   GET  /v1/images/batches/{id}/results    per request: status, job, images or error (paginated by index)
 *   POST /v1/images/batches/{id}/cancel     waiting requests are dropped, queued jobs canceled, running ones asked to stop
 *
 * Every request is validated up front (a 400 names `requests[i].field`); nothing runs here: the
 * workers' batch pump admits the requests (src/batches/pump.ts).
 */
import type { FastifyInstance } from 'fastify';
import { DomainError, invalidParam, notFound } from '../../core/errors.ts';
import { PRIORITIES } from '../../core/job.ts';
import type { Priority } from '../../core/job.ts';
import { parseGeneration, schemaFor } from '../generation-request.ts';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { BATCH_ID, errorResponses, json, queryInt, queryString, submissionHeaders } from '../schemas/common.ts';
import { documentedOnly, emptyBody, idParam, noQuery } from '../schemas/compile.ts';
import { imagesResponseSchema } from '../schemas/job.ts';
import type { JobViews } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';
import { idempotencyKeyOf } from '../idempotency.ts';
import { visibleJobError } from '../redact.ts';
import { fingerprint } from '../../submissions/fingerprint.ts';
import type { SubmitCommand } from '../../submissions/command.ts';
import type { Batch, BatchStore, ItemBody } from '../../batches/batch-store.ts';
import { CACHE_POLICIES } from '../../cache/image-cache.ts';
import type { CachePolicy } from '../../cache/image-cache.ts';

type Deps = ApiDeps & { views: JobViews; batches: BatchStore };

const JSONL_TYPES = ['application/jsonl', 'application/x-ndjson', 'application/x-jsonlines', 'application/jsonlines', 'text/jsonl'];

interface BatchOptions {
  hourlyCapUsd: number | null;
  priority: Priority;
  metadata: Record<string, string> | null;
  model?: string;
  cache: CachePolicy;
}

function parseOptions(src: Record<string, unknown>, defaults: { priority: Priority }): BatchOptions {
  const cap = src.hourly_spend_cap_usd;
  let hourlyCapUsd: number | null = null;
  if (cap !== undefined && cap !== null && cap !== '') {
    const n = typeof cap === 'string' ? Number(cap) : cap;
    if (typeof n !== 'number' || !Number.isFinite(n) || n <= 0) throw invalidParam('hourly_spend_cap_usd', "Invalid value for 'hourly_spend_cap_usd': expected a positive number of USD.");
    hourlyCapUsd = n;
  }
  const priority = (src.priority ?? defaults.priority) as Priority;
  if (!PRIORITIES.includes(priority)) throw invalidParam('priority', `Invalid value for 'priority': expected one of ${PRIORITIES.join(', ')}.`);
  let metadata: Record<string, string> | null = null;
  if (src.metadata !== undefined && src.metadata !== null) {
    const m = typeof src.metadata === 'string' ? safeJson(src.metadata) : src.metadata;
    if (!m || typeof m !== 'object' || Array.isArray(m) || Object.values(m).some((v) => typeof v !== 'string') || Object.keys(m).length > 16) {
      throw invalidParam('metadata', "Invalid value for 'metadata': expected an object of at most 16 string values.");
    }
    metadata = m as Record<string, string>;
  }
  if (src.model !== undefined && (typeof src.model !== 'string' || !src.model)) throw invalidParam('model', "Invalid value for 'model': expected a model name.");
  const cache = (src.cache ?? 'auto') as CachePolicy;
  if (!CACHE_POLICIES.includes(cache)) throw invalidParam('cache', `Invalid value for 'cache': expected one of ${CACHE_POLICIES.join(', ')}.`);
  return { hourlyCapUsd, priority, metadata, model: src.model as string | undefined, cache };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Validates one request of the batch; errors name `requests[i].field`. */
function parseItem(raw: unknown, i: number, deps: Deps, opts: BatchOptions, label: string): { customId: string | null; body: ItemBody } {
  const where = (p: string | null) => `requests[${i}]${p ? `.${p}` : ''}`;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw invalidParam(where(null), `${label}: expected a JSON object.`);
  let obj = { ...(raw as Record<string, unknown>) };
  const customId = obj.custom_id;
  delete obj.custom_id;
  // An OpenAI Batch API line: {custom_id, method, url, body}.
  if (typeof obj.body === 'object' && obj.body !== null && ('url' in obj || 'method' in obj)) obj = { ...(obj.body as Record<string, unknown>) };
  if (customId !== undefined && (typeof customId !== 'string' || customId.length > 128)) throw invalidParam(where('custom_id'), `${label}: 'custom_id' must be a string of at most 128 characters.`);
  const cache = (obj.cache ?? opts.cache) as CachePolicy;
  delete obj.cache;
  if (!CACHE_POLICIES.includes(cache)) throw invalidParam(where('cache'), `${label}: 'cache' must be one of ${CACHE_POLICIES.join(', ')}.`);
  delete obj.async;
  if (opts.model && obj.model === undefined) obj.model = opts.model;
  try {
    const parsed = parseGeneration(obj, deps.config.limits, true);
    return {
      customId: (customId as string | undefined) ?? null,
      body: { model: parsed.model, request: parsed.request, cache, webhookUrl: parsed.webhookUrl, metadata: parsed.metadata ?? opts.metadata },
    };
  } catch (err) {
    throw relabel(err, i, label);
  }
}

/** Several bad requests as one error: the first names `param` (and its kind the status), the message lists them all. */
function allProblems(problems: DomainError[]): DomainError {
  if (problems.length === 1) return problems[0]!;
  const first = problems[0]!;
  const list = problems.slice(0, 20).map((p) => p.message).join('; ');
  const more = problems.length > 20 ? `; … and ${problems.length - 20} more` : '';
  return new DomainError(first.kind, `${problems.length} requests of the batch are invalid: ${list}${more}`, { param: first.param, code: first.code });
}

/** An error about one request of the batch, naming `requests[i].field` and the request. */
function relabel(err: unknown, i: number, label: string): unknown {
  if (!(err instanceof DomainError)) return err;
  return new DomainError(err.kind, `${label}: ${err.message}`, { param: err.param ? `requests[${i}].${err.param}` : `requests[${i}]`, code: err.code });
}

/** A batch request as the submission it becomes (what the pump will submit). */
export function itemCommand(body: ItemBody, batch: { priority: Priority }): SubmitCommand {
  return { entry: 'batch', kind: 'generation', model: body.model, request: body.request, priority: batch.priority, webhookUrl: body.webhookUrl, metadata: body.metadata, cachePolicy: body.cache };
}

const batchSchema = z
  .object({
    id: z.string(),
    object: z.literal('image.batch'),
    status: z.enum(['in_progress', 'canceled', 'completed']),
    priority: z.enum(PRIORITIES),
    total: z.int().describe('Requests in the batch'),
    counts: z.object({ pending: z.int(), queued: z.int(), running: z.int(), succeeded: z.int(), failed: z.int(), canceled: z.int() }),
    progress: z.number().min(0).max(1).describe('Share of requests that ended'),
    cost_usd: z.number().describe('Spent so far'),
    hourly_spend_cap_usd: z.number().nullable(),
    metadata: z.record(z.string(), z.string()).nullable(),
    created_at: z.int(),
    completed_at: z.int().nullable(),
    canceled_at: z.int().nullable(),
    results_url: z.string(),
  })
  .meta({ id: 'Batch', description: 'A batch: counts by status, progress, cost so far' });

const resultsSchema = z.object({
  object: z.literal('list'),
  data: z.array(
    z.object({
      index: z.int(),
      custom_id: z.string().nullable(),
      status: z.enum(['pending', 'queued', 'running', 'succeeded', 'failed', 'canceled']),
      job_id: z.string().nullable(),
      cost_usd: z.number().nullable(),
      data: imagesResponseSchema.shape.data.nullable().describe('The images, once the request succeeded'),
      error: z.object({ message: z.string(), code: z.string() }).nullable(),
    }),
  ),
  has_more: z.boolean(),
  last_index: z.int().nullable().describe('Pass as `after` for the next page'),
});

/** The options, in the JSON object or (for JSONL and JSON-array uploads) the query string. */
const optionFields = {
  hourly_spend_cap_usd: z.number().positive().optional().describe('Requests are started no faster than this spend per hour allows'),
  priority: z.enum(PRIORITIES).optional().describe(`Queue priority of the batch's jobs`),
  metadata: z.record(z.string(), z.string()).optional().describe('Up to 16 string values, the default metadata of every request'),
  model: z.string().optional().describe('The model of requests that name none'),
  cache: z.enum(CACHE_POLICIES as [CachePolicy, ...CachePolicy[]]).optional().describe('The image cache policy of requests that set none (default auto)'),
};

function batchBodySchemas(limits: ApiDeps['config']['limits']) {
  const item = schemaFor(limits)
    .extend({
      custom_id: z.string().max(128).optional().describe('Your id for the request, unique in the batch'),
      cache: optionFields.cache,
    })
    .describe('A generations body, plus `custom_id` and `cache`; an OpenAI Batch line (`{custom_id, method, url, body}`) is read too');
  return {
    // Documentation only: the handler reads all three forms and validates each request once.
    content: {
      'application/json': { schema: documentedOnly(z.union([z.object({ requests: z.array(item), ...optionFields }).strict(), z.array(item)])) },
      'application/jsonl': { schema: documentedOnly(z.string().describe('One request per line (also application/x-ndjson); options in the query string')) },
    },
  };
}

const uploadQuery = z
  .object({
    hourly_spend_cap_usd: queryString('For JSONL or JSON-array uploads: see the body field', 32),
    priority: queryString('For JSONL or JSON-array uploads: see the body field', 16),
    metadata: queryString('For JSONL or JSON-array uploads: the metadata as JSON text', 8192),
    model: queryString('For JSONL or JSON-array uploads: see the body field', 200),
    cache: queryString('For JSONL or JSON-array uploads: see the body field', 16),
  })
  .strict();

const batchParams = z.object({ id: idParam('batch', BATCH_ID, 'batch_not_found', 'The batch id (`batch_…`)') });

export async function batchRoutes(app: FastifyInstance, deps: Deps) {
  const { batches } = deps;
  const r = app.withTypeProvider<ZodTypeProvider>();
  // JSONL uploads are read as text here only.
  app.addContentTypeParser(JSONL_TYPES, { parseAs: 'string' }, (_req, body, done) => done(null, body));

  const view = async (b: Batch) => {
    const c = await batches.counts(b.id);
    const done = c.succeeded + c.failed + c.canceled;
    return {
      id: b.id,
      object: 'image.batch' as const,
      status: b.status,
      priority: b.priority,
      total: b.total,
      counts: { pending: c.pending, queued: c.queued, running: c.running, succeeded: c.succeeded, failed: c.failed, canceled: c.canceled },
      progress: b.total ? Math.round((done / b.total) * 1e4) / 1e4 : 1,
      cost_usd: c.costUsd,
      hourly_spend_cap_usd: b.hourlyCapUsd,
      metadata: b.metadata,
      created_at: Math.floor(b.createdAt.getTime() / 1000),
      completed_at: b.completedAt ? Math.floor(b.completedAt.getTime() / 1000) : null,
      canceled_at: b.canceledAt ? Math.floor(b.canceledAt.getTime() / 1000) : null,
      results_url: `${deps.publicUrl()}/v1/images/batches/${b.id}/results`,
    };
  };

  const own = async (id: string, keyId: string): Promise<Batch> => {
    const b = await batches.get(id);
    if (!b || b.keyId !== keyId) throw notFound('batch', id);
    return b;
  };

  r.post('/images/batches', {
    config: { limitGroup: 'batches' },
    schema: {
      summary: 'Many generation requests at once: a JSON object with `requests`, a JSON array of requests, or JSONL',
      description: `Every request is validated up front (a 400 names \`requests[i].field\`); the workers start them within the batch's spend cap. At most ${deps.config.batches.maxRequests} requests.`,
      operationId: 'createBatch',
      tags: ['batches'],
      body: batchBodySchemas(deps.config.limits),
      querystring: uploadQuery,
      headers: documentedOnly(submissionHeaders.pick({ 'idempotency-key': true })),
      response: { 201: json('The batch, created', batchSchema), 200: json('The batch an earlier request with the same Idempotency-Key created', batchSchema), ...errorResponses },
    },
  }, async (req, reply) => {
    const idem = idempotencyKeyOf(req);
    const defaults = { priority: deps.config.batches.defaultPriority };
    let rawItems: unknown[];
    let opts: BatchOptions;
    let labelOf: (i: number) => string;
    const body = req.body;
    if (typeof body === 'string') {
      opts = parseOptions(req.query, defaults);
      rawItems = [];
      const lines: number[] = [];
      const bad: DomainError[] = [];
      body.split(/\r?\n/).forEach((line, n) => {
        if (!line.trim()) return;
        try {
          rawItems.push(JSON.parse(line));
          lines.push(n + 1);
        } catch (err) {
          const why = (err as Error).message.replace(/ in JSON at position \d+.*$/, '');
          bad.push(invalidParam(`requests[${rawItems.length + bad.length}]`, `Line ${n + 1} is not valid JSON (${why}).`, 'invalid_json'));
        }
      });
      if (bad.length) throw allProblems(bad);
      labelOf = (i) => `Request ${i} (line ${lines[i]})`;
    } else if (Array.isArray(body)) {
      opts = parseOptions(req.query, defaults);
      rawItems = body;
      labelOf = (i) => `Request ${i}`;
    } else if (body && typeof body === 'object') {
      const b = body as Record<string, unknown>;
      const unknown = Object.keys(b).filter((k) => !['requests', 'hourly_spend_cap_usd', 'priority', 'metadata', 'model', 'cache'].includes(k));
      if (unknown.length) throw invalidParam(unknown[0]!, `Unrecognized request argument supplied: ${unknown[0]}`, 'unknown_parameter');
      if (!Array.isArray(b.requests)) throw invalidParam('requests', "Missing required parameter: 'requests' (an array of generation requests).", 'missing_required_parameter');
      opts = parseOptions({ ...req.query, ...b }, defaults);
      rawItems = b.requests;
      labelOf = (i) => `Request ${i}`;
    } else {
      throw new DomainError('invalid', 'Send a JSON object with "requests", a JSON array, or JSONL (Content-Type: application/jsonl).', { code: 'invalid_request' });
    }
    if (rawItems.length === 0) throw invalidParam('requests', 'A batch needs at least one request.');
    const max = deps.config.batches.maxRequests;
    if (rawItems.length > max) throw invalidParam('requests', `A batch may carry at most ${max} requests; this one has ${rawItems.length}. Split it.`, 'batch_too_large');
    // Every request is checked, and every bad one is named at once (the first names `param`).
    const problems: DomainError[] = [];
    const parsedItems = rawItems.map((raw, i) => {
      try {
        return parseItem(raw, i, deps, opts, labelOf(i));
      } catch (err) {
        if (!(err instanceof DomainError)) throw err;
        problems.push(err);
        return undefined;
      }
    });
    if (problems.length) throw allProblems(problems);
    const items = parsedItems as { customId: string | null; body: ItemBody }[];
    const customIds = new Set<string>();
    items.forEach((it, i) => {
      if (it.customId === null) return;
      if (customIds.has(it.customId)) throw invalidParam(`requests[${i}].custom_id`, `${labelOf(i)}: custom_id '${it.customId}' is used twice.`, 'duplicate_custom_id');
      customIds.add(it.customId);
    });
    // The same key with the same batch answers the batch it created; with another batch, 422.
    const print = idem ? fingerprint({ opts, items }) : null;
    const replay = async () => {
      const existing = idem ? await batches.findByIdempotencyKey(req.apiKey.id, idem) : undefined;
      if (!existing) return undefined;
      if (existing.idempotencyFingerprint !== print) {
        throw new DomainError('unprocessable', `Idempotency-Key '${idem}' was already used for batch ${existing.id} with a different request. Use a new key for a new batch.`, { param: 'Idempotency-Key', code: 'idempotency_key_reused' });
      }
      return reply.status(200).header('idempotent-replayed', 'true').send(await view(existing));
    };
    const replayed = await replay();
    if (replayed) return replayed;
    // Every request passes the submission's checks now (model, capability, provider options,
    // moderation, webhook URL), so a bad one fails the batch, not one request of it later.
    for (const [i, it] of items.entries()) {
      await deps.submissions.check(itemCommand(it!.body, opts)).catch((err) => {
        const e = relabel(err, i, labelOf(i));
        if (!(e instanceof DomainError)) throw e;
        problems.push(e);
      });
    }
    if (problems.length) throw allProblems(problems);
    let batch: Batch;
    try {
      batch = await batches.create({ keyId: req.apiKey.id, priority: opts.priority, hourlyCapUsd: opts.hourlyCapUsd, metadata: opts.metadata, idempotencyKey: idem ?? null, idempotencyFingerprint: print, items });
    } catch (err) {
      const again = await replay();
      if (again) return again;
      throw err;
    }
    req.log.info({ batchId: batch.id, requests: items.length, keyId: req.apiKey.id, cap: opts.hourlyCapUsd }, 'batch accepted');
    return reply.status(201).header('location', `${deps.publicUrl()}/v1/images/batches/${batch.id}`).send(await view(batch));
  });

  r.get('/images/batches', {
    config: { limitGroup: 'reads' },
    schema: {
      summary: "The key's batches, newest first",
      operationId: 'listBatches',
      tags: ['batches'],
      querystring: z
        .object({
          limit: queryInt(1, 100, 20, 'Page size (default 20)'),
          after: z.string().regex(BATCH_ID, 'expected a batch id').optional().describe('The last id of the previous page'),
        })
        .strict(),
      response: { 200: json('A page of batches', z.object({ object: z.literal('list'), data: z.array(batchSchema), has_more: z.boolean(), last_id: z.string().nullable() })), ...errorResponses },
    },
  }, async (req) => {
    const page = await batches.list(req.apiKey.id, req.query.limit, req.query.after);
    return { object: 'list' as const, data: await Promise.all(page.batches.map(view)), has_more: page.hasMore, last_id: page.batches.at(-1)?.id ?? null };
  });

  r.get('/images/batches/:id', {
    config: { limitGroup: 'reads' },
    schema: { summary: 'A batch: counts by status, progress, cost so far', operationId: 'getBatch', tags: ['batches'], params: batchParams, querystring: noQuery, response: { 200: json('The batch', batchSchema), ...errorResponses } },
  }, async (req) => view(await own(req.params.id, req.apiKey.id)));

  r.get('/images/batches/:id/results', {
    config: { limitGroup: 'reads' },
    schema: {
      summary: 'Per request: status, job, images or error (by index)',
      operationId: 'listBatchResults',
      tags: ['batches'],
      params: batchParams,
      querystring: z
        .object({
          limit: queryInt(1, 500, 100, 'Page size (default 100)'),
          after: z
            .preprocess((v) => (v === '' ? undefined : typeof v === 'string' && /^\s*-?\d+\s*$/.test(v) ? Number(v) : v), z.int().min(-1, 'expected the index of the last result of the previous page').default(-1))
            .describe('`last_index` of the previous page'),
        })
        .strict(),
      response: { 200: json('A page of results', resultsSchema), ...errorResponses },
    },
  }, async (req) => {
    const b = await own(req.params.id, req.apiKey.id);
    const page = await batches.results(b.id, req.query.after, req.query.limit);
    const data = await Promise.all(
      page.items.map(async (it) => {
        let images = null;
        if (it.status === 'succeeded' && it.jobId) {
          const job = await deps.store.getJob(it.jobId);
          if (job) images = (await deps.views.imagesResponse(job, await deps.store.listImagesForJob(job.id))).data;
        }
        // results() reads a claimed request as pending and a submitted one as its job's status.
        return { index: it.index, custom_id: it.customId, status: it.status as Exclude<typeof it.status, 'claimed' | 'submitted'>, job_id: it.jobId, cost_usd: it.costUsd, data: images, error: it.error ? visibleJobError(it.error, it.jobId ?? b.id, req.apiKey.admin) : null };
      }),
    );
    return { object: 'list' as const, data, has_more: page.hasMore, last_index: page.items.at(-1)?.index ?? null };
  });

  r.post('/images/batches/:id/cancel', {
    config: { limitGroup: 'reads' },
    schema: {
      summary: 'Cancel what has not finished: waiting requests are dropped, queued jobs canceled, running ones asked to stop',
      operationId: 'cancelBatch',
      tags: ['batches'],
      params: batchParams,
      querystring: noQuery,
      body: emptyBody,
      response: { 200: json('The batch', batchSchema), ...errorResponses },
    },
  }, async (req) => {
    const b = await own(req.params.id, req.apiKey.id);
    if (b.status === 'completed') throw new DomainError('conflict', `Batch ${b.id} already completed.`, { code: 'batch_already_finished' });
    const active = await batches.cancel(b.id);
    for (const jobId of active) await deps.settler.cancel(jobId, (id) => deps.queue.remove(id));
    req.log.info({ batchId: b.id, jobs: active.length }, 'batch canceled');
    return view((await batches.get(b.id))!);
  });
}
