/**
 * Config entry for a `bfl` backend: Black Forest Labs' own API (FLUX.1 pro/dev/ultra/kontext,
 * FLUX.2). The model (`flux-pro-1.1`, …) comes from the `models` entry that routes here.
 */
import { z } from 'zod';
import { hostedCommonFields } from '../http/options.ts';

export const bflBackendConfigSchema = z
  .object({
    type: z.literal('bfl'),
    ...hostedCommonFields,
    /** First poll interval (BFL suggests 0.5–2 s); it stretches by 1.5× up to `maxPollIntervalMs`. */
    pollIntervalMs: z.number().int().min(10).max(60_000).default(500),
    maxPollIntervalMs: z.number().int().min(10).max(300_000).default(2000),
    /** `https://api.bfl.ai` (global), `https://api.eu.bfl.ai` or `https://api.us.bfl.ai`. Polling uses the URL each task returns. */
    baseUrl: z.url({ protocol: /^https?$/ }).default('https://api.bfl.ai'),
    /** BFL reports `cost` in credits; this many USD per credit. */
    usdPerCredit: z.number().nonnegative().default(0.01),
    /** 0 (strict) – 6 (permissive); BFL's default is 2. */
    safetyTolerance: z.number().int().min(0).max(6).optional(),
    /** Inputs sent with every task; request provider options win. */
    extraInput: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

export type BflBackendConfig = z.infer<typeof bflBackendConfigSchema>;
export type BflBackendConfigInput = z.input<typeof bflBackendConfigSchema>;
