/**
 * Config entry for a `fal` backend: any fal.ai model endpoint (`fal-ai/flux/schnell`, …) through the
 * queue API. The model comes from the `models` entry that routes to this backend.
 */
import { z } from 'zod';
import { hostedCommonFields, pollingFields } from '../http/options.ts';

export const falBackendConfigSchema = z
  .object({
    type: z.literal('fal'),
    ...hostedCommonFields,
    ...pollingFields,
    /** Queue host; status, result and cancel URLs are taken from what submit returns. */
    queueUrl: z.url({ protocol: /^https?$/ }).default('https://queue.fal.run'),
    /** Where fal's webhook signing keys are published (Ed25519 JWKS). */
    jwksUrl: z.url({ protocol: /^https?$/ }).default('https://rest.alpha.fal.ai/.well-known/jwks.json'),
    /** When set, webhooks signed for another fal user id are refused. */
    webhookUserId: z.string().min(1).optional(),
    /** Most images one fal request makes (`num_images`; FLUX takes 1–4); more are fanned out. */
    maxImagesPerRequest: z.number().int().min(1).max(16).default(4),
    /** Input naming the image count; null when the model makes one image per request. */
    numImagesField: z.string().min(1).nullable().default('num_images'),
    /** fal's safety checker (flagged images come back blacked out and are dropped by easel). */
    enableSafetyChecker: z.boolean().default(true),
    /** Price per second of `metrics.inference_time` for per-second endpoints (wins over the price table). */
    usdPerSecond: z.number().nonnegative().optional(),
    /** Inputs sent with every request; request provider options win. */
    extraInput: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export type FalBackendConfig = z.infer<typeof falBackendConfigSchema>;
export type FalBackendConfigInput = z.input<typeof falBackendConfigSchema>;
