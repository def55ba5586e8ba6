/**
 * The `rateLimits` config section: requests per key and per client address, per route group.
 */
import { z } from 'zod';

const positive = (def: number) => z.number().positive().default(def);

export const RATE_LIMIT_ENDPOINTS = ['generations', 'batches', 'reads'] as const;
export type RateLimitEndpoint = (typeof RATE_LIMIT_ENDPOINTS)[number];

const endpointLimitSchema = (perKey: number, perAddress: number) =>
  z
    .object({
      /** Requests one API key may make per window. */
      perKey: z.number().int().min(0).default(perKey),
      /** Requests one client address may make per window (across keys). */
      perAddress: z.number().int().min(0).default(perAddress),
      windowSeconds: positive(60),
    })
    .strict()
    .prefault({});

export const rateLimitsConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** The admin key (the operator's own) is not limited. */
    exemptAdmin: z.boolean().default(true),
    /** Generations, edits, variations, drafts and refinements. */
    generations: endpointLimitSchema(10, 30),
    /** Batch submissions. */
    batches: endpointLimitSchema(2, 5),
    /** Everything else under /v1 (job reads, lists, usage). */
    reads: endpointLimitSchema(600, 1200),
    /**
     * Requests with a missing or wrong key, per client address: past this many in a window, the
     * address is refused (429) until the window ends, whatever key it sends.
     */
    failedAuth: z
      .object({ perAddress: z.number().int().min(0).default(30), windowSeconds: positive(60) })
      .strict()
      .prefault({}),
    /** Per key (name or id): `perKey` per endpoint, replacing the defaults above for that key. */
    keys: z.record(z.string().min(1), z.object({ generations: z.number().int().min(0).optional(), batches: z.number().int().min(0).optional(), reads: z.number().int().min(0).optional() }).strict()).default({}),
  })
  .strict();
export type RateLimitsConfig = z.infer<typeof rateLimitsConfigSchema>;
