/**
 * The job object of the async API and OpenAI's ImagesResponse, as src/api/job-view.ts and
 * src/api/job-extras.ts write them: what GET /v1/images/jobs/{id}, the 202 of every submission, the
 * job event stream's `status` events and the job lists answer.
 */
import { z } from 'zod';
import { JOB_STATUSES, PRIORITIES } from '../../core/job.ts';
import { errorResponses, json } from './common.ts';

const unix = z.int().describe('Unix seconds');
const usd = z.number().describe('US dollars');

export const imagesResponseSchema = z
  .object({
    created: unix,
    data: z.array(
      z.object({
        url: z.string().optional().describe('Absolute, expiring link (response_format=url)'),
        b64_json: z.string().optional().describe('The image, base64 (response_format=b64_json)'),
        revised_prompt: z.string().optional(),
      }),
    ),
    output_format: z.string().optional(),
    size: z.string().optional().describe('WIDTHxHEIGHT of the images'),
  })
  .meta({ id: 'ImagesResponse', description: "OpenAI's images response" });

/** The request a job carries, as the job object and the gallery show it. */
export const requestViewSchema = z.object({
  prompt: z.string(),
  n: z.int(),
  size: z.string().describe('WIDTHxHEIGHT or auto'),
  response_format: z.enum(['url', 'b64_json']),
  output_format: z.enum(['png', 'jpeg', 'webp']),
  negative_prompt: z.string().optional(),
  seed: z.int().optional(),
  steps: z.int().optional(),
  guidance_scale: z.number().optional(),
  quality: z.string().optional(),
  style: z.string().optional(),
  loras: z.array(z.object({ name: z.string(), weight: z.number() })).optional().describe('The LoRA adapters applied, in stacking order'),
});

export type RequestView = z.output<typeof requestViewSchema>;

const webhookSchema = z
  .object({
    url: z.string().nullable(),
    status: z.enum(['pending', 'delivered', 'failed']),
    deliveries: z.array(
      z.object({
        id: z.string(),
        type: z.string(),
        status: z.enum(['pending', 'delivered', 'failed']),
        attempts: z.array(z.object({ attempt: z.int(), at: unix, status_code: z.int().optional(), error: z.string().optional(), duration_ms: z.number() })),
        next_attempt_at: unix.nullable(),
        delivered_at: unix.nullable(),
      }),
    ),
  })
  .describe('Webhook deliveries for the job and their attempts (jobs with a webhook_url)');

export const jobSchema = z
  .object({
    id: z.string(),
    object: z.literal('image.job'),
    kind: z.enum(['generation', 'edit', 'variation']),
    status: z.enum(JOB_STATUSES),
    progress: z.number().min(0).max(1),
    model: z.string(),
    backend: z.string().nullable(),
    priority: z.enum(PRIORITIES),
    created_at: unix,
    started_at: unix.nullable(),
    finished_at: unix.nullable(),
    attempts: z.int(),
    cancel_requested: z.boolean(),
    request: requestViewSchema,
    metadata: z.record(z.string(), z.string()).nullable(),
    webhook_url: z.string().nullable(),
    cost_usd: usd.nullable(),
    result: imagesResponseSchema.nullable().describe('The images, once the job succeeded'),
    warnings: z.array(
      z.object({
        type: z.enum(['unsupported', 'compatibility', 'other']),
        setting: z.string().optional().describe('The request setting concerned'),
        detail: z.string(),
      }),
    ).describe('Settings that were not honoured as asked'),
    error: z.object({ message: z.string(), code: z.string() }).nullable(),
    // Cost control's fields (src/api/job-extras.ts).
    cost: z
      .object({
        usd: usd.nullable(),
        estimate_usd: usd.nullable(),
        gpu_seconds: z.number().optional(),
        saved_usd: usd.nullable().optional(),
        budget: z.object({ status: z.string(), reserved_usd: usd, charged_usd: usd.nullable() }).optional(),
      })
      .optional(),
    cache: z
      .object({
        hit: z.boolean(),
        kind: z.string().optional(),
        source_job_id: z.string().nullable().optional(),
        similarity: z.number().nullable().optional(),
      })
      .optional(),
    routing: z
      .object({
        requested: z.string().nullable(),
        alias: z.string().optional(),
        model: z.string(),
        backend: z.string().nullable(),
        reason: z.string(),
        fallbacks: z.array(z.object({ from: z.string(), to: z.string(), reason: z.string(), at: unix })).optional(),
        candidates: z.array(z.object({ model: z.string(), backend: z.string(), estimate_usd: usd, available: z.boolean(), note: z.string().optional() })).optional(),
      })
      .optional(),
    refined_from: z.object({ job_id: z.string(), index: z.int().nullable() }).optional().describe('The draft this job refines'),
    refinements: z.array(z.string()).optional().describe('Jobs that refine this draft'),
    batch_id: z.string().optional(),
    webhook: webhookSchema.nullable().optional(),
  })
  .meta({ id: 'Job', description: 'An image job: its status, progress, request, result or error, and cost' });

export const jobListSchema = z.object({
  object: z.literal('list'),
  data: z.array(jobSchema),
  has_more: z.boolean(),
  first_id: z.string().nullable(),
  last_id: z.string().nullable(),
});

/** What the submission routes answer: the images (sync), an event stream (`stream: true`), or the job (async). */
export const submissionResponses = {
  200: {
    description:
      "The images (synchronous). With `\"stream\": true`, OpenAI's image event stream instead: `*.partial_image` events, then one `*.completed` per image (base64), or `error` if the job fails.",
    content: {
      'application/json': { schema: imagesResponseSchema },
      'text/event-stream': { schema: z.string().describe('Server-Sent Events') },
    },
  },
  202: json('Accepted as a job (`Prefer: respond-async` or `"async": true`); `Location` points at it', jobSchema),
  ...errorResponses,
};
