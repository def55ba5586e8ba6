/**
 * Config entry for a `stability` backend: Stability AI's v2beta stable-image endpoints. The model
 * picks the endpoint: `ultra` / `stable-image-ultra`, `core` / `stable-image-core`, or an SD3 model
 * (`sd3.5-large`, `sd3.5-large-turbo`, `sd3.5-medium`, …).
 */
import { z } from 'zod';
import { hostedCommonFields } from '../http/options.ts';

export const stabilityBackendConfigSchema = z
  .object({
    type: z.literal('stability'),
    ...hostedCommonFields,
    timeoutSeconds: z.number().positive().max(3600).default(120),
    baseUrl: z.url({ protocol: /^https?$/ }).default('https://api.stability.ai'),
    /** Answer form asked for: raw image bytes (seed and finish-reason in headers) or JSON with base64. */
    accept: z.enum(['image', 'json']).default('image'),
    /** `stability-client-id` header (at most 256 chars). */
    clientId: z.string().min(1).max(256).optional(),
    /** Parallel requests when a job asks for several images (each request makes one). */
    concurrency: z.number().int().min(1).max(16).default(4),
    /** Fields sent with every request; request provider options win. */
    extraFields: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).optional(),
  })
  .strict();

export type StabilityBackendConfig = z.infer<typeof stabilityBackendConfigSchema>;
export type StabilityBackendConfigInput = z.input<typeof stabilityBackendConfigSchema>;
