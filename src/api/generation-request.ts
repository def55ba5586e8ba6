/**
 * The body of POST /v1/images/generations: OpenAI's fields plus easel's extensions, validated with
 * zod into the normalised ImageRequest. Each invalid field becomes a 400 that names it in `param`.
 */
import { z } from 'zod';
import { DomainError, invalidParam } from '../core/errors.ts';
import { zodToDomainError } from '../core/zod-errors.ts';
import { parseSize } from '../core/image-request.ts';
import type { ImageRequest } from '../core/image-request.ts';
import type { Priority } from '../core/job.ts';
import { LORA_WEIGHT_MAX, LORA_WEIGHT_MIN, MAX_LORAS, MAX_LORA_NAME_CHARS } from '../backends/model-spec.ts';

export interface RequestLimits {
  maxImagesPerRequest: number;
  maxPromptChars: number;
  maxPixels: number;
}

/** `loras: [{name, weight}]`: LoRA adapters by the names the model offers, in stacking order. */
export const loraListSchema = z
  .array(
    z
      .object({
        name: z.string().trim().min(1, 'must not be empty').max(MAX_LORA_NAME_CHARS, `must be at most ${MAX_LORA_NAME_CHARS} characters`).regex(/^[^\u0000-\u001f<>]+$/, 'must not hold control characters or < >').describe('A LoRA the model offers (GET /v1/models lists them)'),
        weight: z.number().min(LORA_WEIGHT_MIN, `must be at least ${LORA_WEIGHT_MIN}`).max(LORA_WEIGHT_MAX, `must be at most ${LORA_WEIGHT_MAX}`).optional().describe('How strongly it applies (default 1)'),
      })
      .strict(),
  )
  .max(MAX_LORAS, `at most ${MAX_LORAS} LoRA adapters`)
  .describe(`easel: LoRA adapters to apply (at most ${MAX_LORAS}; weights ${LORA_WEIGHT_MIN} to ${LORA_WEIGHT_MAX}, default 1), for models that take them`);

export const generationBodySchema = (limits: RequestLimits) =>
  z
    .object({
      prompt: z.string().trim().min(1, 'must not be empty').max(limits.maxPromptChars, `must be at most ${limits.maxPromptChars} characters`).describe('What to draw'),
      model: z.string().min(1).max(200).optional().describe('A model name from GET /v1/models, or a routing alias (`preview`, `premium`, …); the default model when absent'),
      n: z.number().int('must be an integer').min(1, 'must be at least 1').max(limits.maxImagesPerRequest, `must be at most ${limits.maxImagesPerRequest}`).nullish().describe('How many images (default 1)'),
      size: z.string().nullish().describe('`WIDTHxHEIGHT` (e.g. `1024x1024`) or `auto`; the model decides which sizes it takes'),
      quality: z.enum(['standard', 'hd', 'low', 'medium', 'high', 'auto']).nullish(),
      style: z.enum(['vivid', 'natural']).nullish(),
      response_format: z.enum(['url', 'b64_json']).nullish().describe('`url` (an expiring link, the default) or `b64_json`'),
      output_format: z.enum(['png', 'jpeg', 'webp']).nullish().describe("The stored image's format (default png)"),
      output_compression: z.number().int('must be an integer').min(0).max(100).nullish(),
      background: z.enum(['transparent', 'opaque', 'auto']).nullish(),
      moderation: z.enum(['low', 'auto']).nullish(),
      user: z.string().max(256).nullish(),
      stream: z.boolean().nullish().describe("Answer with OpenAI's image event stream (partial images, then the images)"),
      partial_images: z.number().int().min(0).max(3).nullish().describe('Partial images to stream before the final ones (backends that report them)'),
      // easel extensions
      seed: z.number().int('must be an integer').min(0).max(2 ** 32 - 1).nullish().describe('easel: a seed, for backends that take one'),
      negative_prompt: z.string().max(limits.maxPromptChars).nullish().describe('easel: what not to draw, for backends that take one'),
      steps: z.number().int('must be an integer').min(1).max(500).nullish().describe('easel: sampling steps (self-hosted backends)'),
      guidance_scale: z.number().min(0).max(100).nullish().describe('easel: classifier-free guidance (self-hosted backends)'),
      webhook_url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).max(2048).nullish().describe('easel: called (signed, Standard Webhooks) when the job ends'),
      metadata: z
        .record(z.string().max(64), z.string().max(512, 'values must be at most 512 characters'))
        .refine((m) => Object.keys(m).length <= 16, 'at most 16 keys')
        .nullish()
        .describe('easel: up to 16 string values kept on the job and sent with its webhook'),
      async: z.boolean().nullish().describe('easel: answer 202 with the job at once (like `Prefer: respond-async`)'),
      priority: z.enum(['high', 'normal', 'low']).nullish().describe('easel: queue priority (default normal)'),
      loras: loraListSchema.nullish(),
      provider_options: z.record(z.string(), z.unknown()).nullish().describe("easel: options for the model's provider, checked against the model's own schema"),
    })
    .strict();

export type GenerationBody = z.infer<ReturnType<typeof generationBodySchema>>;

export interface ParsedGeneration {
  request: ImageRequest;
  model: string | undefined;
  async: boolean;
  /** `stream: true`: answer with OpenAI's image event stream (partial images, then the finished ones). */
  stream: boolean;
  priority: Priority;
  webhookUrl: string | null;
  metadata: Record<string, string> | null;
}

// Building a zod schema costs far more than using it (zod 4 compiles a fast path on first use), so
// each distinct set of limits gets one, built on first use: the config never changes at runtime.
const schemas = new Map<string, ReturnType<typeof generationBodySchema>>();
export function schemaFor(limits: RequestLimits): ReturnType<typeof generationBodySchema> {
  const key = `${limits.maxImagesPerRequest}/${limits.maxPromptChars}/${limits.maxPixels}`;
  let schema = schemas.get(key);
  if (!schema) {
    schema = generationBodySchema(limits);
    schemas.set(key, schema);
  }
  return schema;
}

/** Validates a generations-shaped body (drafts, refine, batch requests, edits' text fields), then reads it. */
export function parseGeneration(body: unknown, limits: RequestLimits, preferAsync: boolean): ParsedGeneration {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new DomainError('invalid', 'The request body must be a JSON object.', { code: 'invalid_request' });
  }
  const parsed = schemaFor(limits).safeParse(body, { reportInput: true });
  if (!parsed.success) throw zodToDomainError(parsed.error);
  return readGeneration(parsed.data, limits, preferAsync);
}

/**
 * A body the schema already validated (POST /v1/images/generations: its route schema did) as the
 * submission's terms: the checks that span fields, defaults, provider options.
 */
export function readGeneration(b: GenerationBody, limits: RequestLimits, preferAsync: boolean): ParsedGeneration {
  let size: ImageRequest['size'];
  if (b.size) {
    const s = parseSize(b.size);
    if (s === null) throw invalidParam('size', `Invalid value for 'size': expected "auto" or WIDTHxHEIGHT such as "1024x1024", got "${b.size}".`);
    if (s && (s.width < 16 || s.height < 16 || s.width > 8192 || s.height > 8192)) {
      throw invalidParam('size', `Invalid value for 'size': each side must be between 16 and 8192 pixels, got "${b.size}".`);
    }
    if (s && s.width * s.height > limits.maxPixels) {
      throw invalidParam('size', `Invalid value for 'size': ${b.size} is ${s.width * s.height} pixels; this server allows at most ${limits.maxPixels}.`);
    }
    size = s;
  }
  const stream = b.stream === true;
  if (stream && (b.async ?? preferAsync)) {
    throw invalidParam('stream', "'stream' cannot be combined with an asynchronous submission ('async' or 'Prefer: respond-async'); follow the job at GET /v1/images/jobs/{id}/events instead.");
  }
  if (b.background === 'transparent' && b.output_format === 'jpeg') {
    throw invalidParam('background', "Invalid value for 'background': transparent backgrounds need output_format png or webp.");
  }

  const providerOptions: Record<string, unknown> = { ...(b.provider_options ?? {}) };

  const request: ImageRequest = {
    prompt: b.prompt,
    n: b.n ?? 1,
    size,
    responseFormat: b.response_format ?? 'url',
    outputFormat: b.output_format ?? 'png',
    ...(b.negative_prompt ? { negativePrompt: b.negative_prompt } : {}),
    ...(b.quality ? { quality: b.quality } : {}),
    ...(b.style ? { style: b.style } : {}),
    ...(b.output_compression != null ? { outputCompression: b.output_compression } : {}),
    ...(b.background ? { background: b.background } : {}),
    ...(b.user ? { user: b.user } : {}),
    ...(b.seed != null ? { seed: b.seed } : {}),
    ...(b.steps != null ? { steps: b.steps } : {}),
    ...(b.guidance_scale != null ? { guidanceScale: b.guidance_scale } : {}),
    ...(b.partial_images ? { partialImages: b.partial_images } : {}),
    ...(b.moderation ? { moderation: b.moderation } : {}),
    ...(b.loras?.length ? { loras: b.loras.map((l) => ({ name: l.name, weight: l.weight ?? 1 })) } : {}),
    ...(Object.keys(providerOptions).length ? { providerOptions } : {}),
  };
  return {
    request,
    model: b.model ?? undefined,
    async: stream ? false : (b.async ?? preferAsync),
    stream,
    priority: b.priority ?? 'normal',
    webhookUrl: b.webhook_url ?? null,
    metadata: b.metadata ?? null,
  };
}
