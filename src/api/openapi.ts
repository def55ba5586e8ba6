/**
 * The OpenAPI 3.1 document, generated from the zod schemas that validate requests (zod 4 emits JSON
 * Schema), plus zod descriptions of the responses. Served at /openapi.json; /docs renders it.
 */
import { z } from 'zod';
import { generationBodySchema } from './generation-request.ts';
import type { RequestLimits } from './generation-request.ts';
import { JOB_STATUSES } from '../core/job.ts';

const errorSchema = z.object({
  error: z.object({ message: z.string(), type: z.string(), param: z.string().nullable(), code: z.string().nullable() }),
});

const imagesResponseSchema = z.object({
  created: z.number().int().describe('Unix seconds'),
  data: z.array(
    z.object({
      url: z.string().optional().describe('Absolute, expiring link (response_format=url)'),
      b64_json: z.string().optional(),
      revised_prompt: z.string().optional(),
    }),
  ),
  output_format: z.string().optional(),
  size: z.string().optional(),
});

const jobSchema = z.object({
  id: z.string(),
  object: z.literal('image.job'),
  kind: z.enum(['generation', 'edit', 'variation']),
  status: z.enum(JOB_STATUSES),
  progress: z.number().min(0).max(1),
  model: z.string(),
  backend: z.string().nullable(),
  priority: z.enum(['high', 'normal', 'low']),
  created_at: z.number().int(),
  started_at: z.number().int().nullable(),
  finished_at: z.number().int().nullable(),
  attempts: z.number().int(),
  cancel_requested: z.boolean(),
  request: z.record(z.string(), z.unknown()),
  metadata: z.record(z.string(), z.string()).nullable(),
  webhook_url: z.string().nullable(),
  cost_usd: z.number().nullable(),
  result: imagesResponseSchema.nullable(),
  warnings: z.array(z.string()),
  error: z.object({ message: z.string(), code: z.string() }).nullable(),
});

const jobListSchema = z.object({ object: z.literal('list'), data: z.array(jobSchema), has_more: z.boolean(), first_id: z.string().nullable(), last_id: z.string().nullable() });
const modelSchema = z.object({ id: z.string(), object: z.literal('model'), created: z.number().int(), owned_by: z.string() });
const modelListSchema = z.object({ object: z.literal('list'), data: z.array(modelSchema) });

const json = (schema: z.ZodType) => z.toJSONSchema(schema, { unrepresentable: 'any', io: 'input' }) as Record<string, unknown>;
const jsonOut = (schema: z.ZodType) => z.toJSONSchema(schema, { unrepresentable: 'any' }) as Record<string, unknown>;

const errors = {
  '400': { description: 'Invalid request; `param` names the field', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
  '401': { description: 'Missing or invalid API key', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
  '404': { description: 'Not found (including other keys’ jobs)', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
};

export interface MultipartOperation {
  path: string;
  summary: string;
  schema: z.ZodType;
  fileFields: { name: string; required: boolean; multiple?: boolean; description: string }[];
}

export function buildOpenApi(limits: RequestLimits, serverUrl: string, multipart: MultipartOperation[] = []): Record<string, unknown> {
  const submitResponses = {
    '200': {
      description: 'The images (synchronous); with `"stream": true`, OpenAI\'s image event stream (`*.partial_image` events, then one `*.completed` per image; `error` if the job fails)',
      content: { 'application/json': { schema: { $ref: '#/components/schemas/ImagesResponse' } }, 'text/event-stream': { schema: { type: 'string' } } },
    },
    '202': { description: 'Accepted as a job (`Prefer: respond-async` or `"async": true`); `Location` points at it', content: { 'application/json': { schema: { $ref: '#/components/schemas/Job' } } } },
    ...errors,
    '413': { description: 'Body too large', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
    '504': { description: 'A synchronous request ran out of time; the message names the job, which still finishes', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
  };
  const asyncHeaders = [
    { name: 'Prefer', in: 'header', required: false, schema: { type: 'string', example: 'respond-async' }, description: '`respond-async` answers 202 with the job at once' },
    { name: 'Idempotency-Key', in: 'header', required: false, schema: { type: 'string', maxLength: 255 }, description: 'Retries with the same key return the same job' },
  ];
  const paths: Record<string, unknown> = {
    '/v1/images/generations': {
      post: {
        summary: 'Create images from a prompt (OpenAI-compatible)',
        operationId: 'createImage',
        parameters: asyncHeaders,
        requestBody: { required: true, content: { 'application/json': { schema: json(generationBodySchema(limits)) } } },
        responses: submitResponses,
      },
    },
    '/v1/images/jobs': {
      get: {
        summary: "List the key's jobs, newest first",
        operationId: 'listJobs',
        parameters: [
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 } },
          { name: 'after', in: 'query', schema: { type: 'string' }, description: 'The last id of the previous page' },
          { name: 'status', in: 'query', schema: { type: 'string', enum: [...JOB_STATUSES] } },
        ],
        responses: { '200': { description: 'A page of jobs', content: { 'application/json': { schema: jsonOut(jobListSchema) } } }, ...errors },
      },
    },
    '/v1/images/jobs/{id}': {
      get: {
        summary: 'Get a job',
        operationId: 'getJob',
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { '200': { description: 'The job', content: { 'application/json': { schema: { $ref: '#/components/schemas/Job' } } } }, ...errors },
      },
    },
    '/v1/images/jobs/{id}/cancel': {
      post: {
        summary: 'Cancel a job (queued: at once; running: aborted through its backend)',
        operationId: 'cancelJob',
        parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
        responses: { '200': { description: 'The job', content: { 'application/json': { schema: { $ref: '#/components/schemas/Job' } } } }, ...errors, '409': { description: 'Already finished' } },
      },
    },
    '/v1/images/jobs/{id}/events': {
      get: {
        summary: "Server-Sent Events of the job's status and progress until it ends (`Last-Event-ID` resumes)",
        operationId: 'jobEvents',
        description:
          'Events: `status` (data: the job object), `progress` ({progress}), `partial_image` ({index, partial_image_index, b64_json, media_type}) and a final `done`; ids are numbers that only grow, so a reconnect resumes after the last one seen.',
        parameters: [
          { name: 'id', in: 'path', required: true, schema: { type: 'string' } },
          { name: 'Last-Event-ID', in: 'header', required: false, schema: { type: 'string' } },
          { name: 'last_event_id', in: 'query', required: false, schema: { type: 'string' }, description: 'The same as the header, for clients that cannot set it' },
        ],
        responses: {
          '200': { description: 'An event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          '204': { description: 'The client already saw the terminal event: nothing more will come' },
          ...errors,
        },
      },
    },
    '/v1/models': {
      get: { summary: 'List the models this server serves', operationId: 'listModels', responses: { '200': { description: 'Models', content: { 'application/json': { schema: jsonOut(modelListSchema) } } }, ...errors } },
    },
    '/health': { get: { summary: 'Liveness', security: [], responses: { '200': { description: 'Alive' } } } },
    '/ready': { get: { summary: 'Readiness (database, queue, storage, a healthy backend)', security: [], responses: { '200': { description: 'Ready' }, '503': { description: 'Not ready; `checks` says why' } } } },
  };
  // Operations from the other route groups. Their bodies are validated by the generations schema
  // (drafts, each batch request), so the document points at it rather than restating it.
  const genRef = { $ref: '#/components/schemas/GenerationRequest' };
  const ok = (description: string) => ({ '200': { description, content: { 'application/json': { schema: { type: 'object' } } } }, ...errors });
  const idParam = [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }];
  const more: [string, string, Record<string, unknown>][] = [
    ['get', '/v1/images', { summary: "The key's images, newest first (filters: model, prompt, created_from, created_to; cursor: after)", responses: ok('A page of images with URLs, thumbnails, job and cost') }],
    ['post', '/v1/images/jobs/{id}/retry', { summary: "Submit a failed or canceled job's request again as a new job", parameters: idParam, responses: submitResponses }],
    ['post', '/v1/images/drafts', { summary: 'Several cheap drafts in one job (`n` defaults to 4, `model` to the `preview` tier)', parameters: asyncHeaders, requestBody: { required: true, content: { 'application/json': { schema: genRef } } }, responses: submitResponses }],
    ['post', '/v1/images/refine', { summary: 'Refine one draft with a premium model: `{job_id, index, model?, prompt?, strength?, …}` (img2img where the model can take an input image)', parameters: asyncHeaders, requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['job_id'], properties: { job_id: { type: 'string' }, index: { type: 'integer', minimum: 0 }, model: { type: 'string' }, prompt: { type: 'string' }, strength: { type: 'number' } } } } } }, responses: submitResponses }],
    ['post', '/v1/images/batches', { summary: 'Many generation requests at once: `{requests: [...], hourly_spend_cap_usd?, priority?}`, a JSON array, or JSONL', requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', properties: { requests: { type: 'array', items: genRef }, hourly_spend_cap_usd: { type: 'number' }, priority: { type: 'string', enum: ['high', 'normal', 'low'] } } } }, 'application/jsonl': { schema: { type: 'string' } } } }, responses: ok('The batch') }],
    ['get', '/v1/images/batches', { summary: "The key's batches, newest first", responses: ok('Batches') }],
    ['get', '/v1/images/batches/{id}', { summary: 'A batch: counts by status, progress, cost so far', parameters: idParam, responses: ok('The batch') }],
    ['get', '/v1/images/batches/{id}/results', { summary: 'Per request: status, job, images or error', parameters: idParam, responses: ok('Results') }],
    ['post', '/v1/images/batches/{id}/cancel', { summary: 'Cancel what has not finished', parameters: idParam, responses: ok('The batch') }],
    ['get', '/v1/usage', { summary: 'Spend by day, model and backend; images; cache savings (this key)', responses: ok('Usage') }],
    ['get', '/v1/usage/report', { summary: 'Admin: cost per image by model, GPU utilization, self-hosted vs hosted break-even (`?days=`, default 30)', responses: ok('Cost report') }],
    ['get', '/v1/keys/current', { summary: 'The calling key (name, admin, budget left)', responses: ok('The key') }],
    ['get', '/v1/keys', { summary: 'All keys (admin keys only)', responses: { ...ok('Keys'), '403': { description: 'Not an admin key' } } }],
    ['post', '/v1/keys', { summary: 'Create a key; the secret is in this answer only (admin keys only)', requestBody: { required: true, content: { 'application/json': { schema: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, admin: { type: 'boolean' } } } } } }, responses: { ...ok('The new key and its secret'), '403': { description: 'Not an admin key' } } }],
    ['post', '/v1/keys/{id}/revoke', { summary: 'Revoke a key (admin keys only)', parameters: idParam, responses: { ...ok('The revoked key'), '403': { description: 'Not an admin key' } } }],
    ['get', '/v1/system', { summary: 'Backends and GPU hosts: health, busy time, loaded model, queue depth; the first start\'s model download', responses: ok('System status') }],
    ['get', '/metrics', { summary: 'Prometheus metrics', security: [], responses: { '200': { description: 'Prometheus text format' } } }],
    ['post', '/hooks/providers/{backend}', { summary: "A hosted provider's signed webhook (Replicate, fal); verified before it is used", security: [], parameters: [{ name: 'backend', in: 'path', required: true, schema: { type: 'string' } }], responses: { '200': { description: 'Accepted' }, '401': { description: 'Signature refused' } } }],
  ];
  for (const [method, path, op] of more) paths[path] = { ...(paths[path] as object | undefined), [method]: op };

  for (const op of multipart) {
    const schema = json(op.schema) as { properties?: Record<string, unknown>; required?: string[] };
    for (const f of op.fileFields) {
      schema.properties = { ...schema.properties, [f.name]: f.multiple ? { type: 'array', items: { type: 'string', format: 'binary' }, description: f.description } : { type: 'string', format: 'binary', description: f.description } };
      if (f.required) schema.required = [...(schema.required ?? []), f.name];
    }
    paths[op.path] = {
      post: {
        summary: op.summary,
        parameters: asyncHeaders,
        requestBody: { required: true, content: { 'multipart/form-data': { schema } } },
        responses: submitResponses,
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'easel',
      version: '1',
      description: 'Self-hosted image generation with the OpenAI Images API, durable async jobs, progress streams and signed webhooks.',
    },
    servers: [{ url: serverUrl }],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: { Error: jsonOut(errorSchema), ImagesResponse: jsonOut(imagesResponseSchema), Job: jsonOut(jobSchema), GenerationRequest: json(generationBodySchema(limits)) },
    },
  };
}
