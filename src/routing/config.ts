/**
 * The `routing` config section (aliases, fallback chains, circuit breakers) and the per-model fields the router reads.
 */
import { z } from 'zod';

const positive = (def: number) => z.number().positive().default(def);

export const TIERS = ['preview', 'standard', 'premium'] as const;
export type Tier = (typeof TIERS)[number];

export const aliasSchema = z
  .object({
    /** Candidate public model names; the cheapest healthy capable one wins. */
    models: z.array(z.string().min(1)).optional(),
    /** Or: every model of this tier (models[].tier, or inferred from the model id). */
    tier: z.enum(TIERS).optional(),
    /** Size the use needs (`WxH`); snapped to the nearest size a model offers. A request's own size wins. */
    size: z.string().regex(/^\d{2,5}x\d{2,5}$/, 'must be WIDTHxHEIGHT').optional(),
    /** Quality asked of the chosen model when the request names none. */
    quality: z.string().optional(),
    /** Steps asked when the request names none (self-hosted models). */
    steps: z.number().int().min(1).max(500).optional(),
    description: z.string().optional(),
  })
  .strict()
  .refine((a) => a.models !== undefined || a.tier !== undefined, { message: 'set models or tier' });
export type AliasConfig = z.infer<typeof aliasSchema>;

export const routingConfigSchema = z
  .object({
    /** Aliases (tiers and use cases) merged over the shipped defaults; `null` removes a default. */
    aliases: z.record(z.string().min(1), aliasSchema.nullable()).default({}),
    /** Fallback chains: public model name → models to try, in order, when its backend fails or is overloaded. */
    fallback: z.record(z.string().min(1), z.array(z.string().min(1))).default({}),
    circuit: z
      .object({
        /** Consecutive failures of a backend that open its circuit. */
        failureThreshold: z.number().int().min(1).default(5),
        /** How long an open circuit refuses work before one trial call is let through. */
        openSeconds: positive(30),
      })
      .strict()
      .prefault({}),
  })
  .strict();
export type RoutingConfig = z.infer<typeof routingConfigSchema>;

/** Per-model fields the router reads (added to `models[]`). */
export const modelRoutingFields = {
  /** Quality tier for the tier aliases (default: inferred from the model id). */
  tier: z.enum(TIERS).optional(),
  /** Sizes (`WxH`) the model offers; default: known for OpenAI models, else any. */
  sizes: z.array(z.string().regex(/^\d{2,5}x\d{2,5}$/, 'must be WIDTHxHEIGHT')).optional(),
  /** Renders legible text in images (preferred for prompts that ask for text). Default: inferred. */
  textInImage: z.boolean().optional(),
  /** Models to fall back to, in order (same as routing.fallback[name]). */
  fallback: z.array(z.string().min(1)).optional(),
};
