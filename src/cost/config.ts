/**
 * Config sections for cost control: `budgets`, `routing`, `cache`, `rateLimits`, `batches`,
 * `costModel` and `metrics`. Every key is documented in the README's Configuration table.
 */
import { z } from 'zod';

const usd = z.number().nonnegative();
const positive = (def: number) => z.number().positive().default(def);

/** A daily and/or monthly limit in USD. */
export const budgetLimitSchema = z
  .object({
    dailyUsd: usd.optional(),
    monthlyUsd: usd.optional(),
  })
  .strict();
export type BudgetLimit = z.infer<typeof budgetLimitSchema>;

export const budgetsConfigSchema = z
  .object({
    /** Limits for every key that has no entry of its own in `keys`. */
    default: budgetLimitSchema.optional(),
    /** Per key, by key name or id. */
    keys: z.record(z.string().min(1), budgetLimitSchema).default({}),
    /** Groups of keys (by name or id) sharing one limit, on top of each key's own. */
    groups: z
      .record(
        z.string().min(1),
        budgetLimitSchema.extend({ keys: z.array(z.string().min(1)).min(1) }).strict(),
      )
      .default({}),
    /** Reserved (and, if the real cost stays unknown, charged) per image of a model the price table does not know. */
    unpricedImageUsd: usd.default(0.1),
    /** How often held reservations of jobs that ended without a worker settling them are swept. */
    sweepIntervalSeconds: positive(30),
  })
  .strict();
export type BudgetsConfig = z.infer<typeof budgetsConfigSchema>;

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

export const embedderSchema = z.discriminatedUnion('type', [
  z
    .object({
      /** An OpenAI-compatible `/v1/embeddings` endpoint. */
      type: z.literal('openai'),
      baseUrl: z.string().url().default('https://api.openai.com/v1'),
      apiKey: z.string().optional(),
      apiKeyEnv: z.string().default('OPENAI_API_KEY'),
      model: z.string().default('text-embedding-3-small'),
      timeoutSeconds: positive(10),
    })
    .strict(),
  z
    .object({
      /** The CLIP text encoder of an ONNX model folder (e.g. `<dataDir>/models/sd-turbo`). */
      type: z.literal('onnx-clip'),
      modelDir: z.string().min(1),
    })
    .strict(),
  z
    .object({
      /** Hashed bag of words and character trigrams: no model, deterministic, lexical similarity only. */
      type: z.literal('hashed'),
      dimensions: z.number().int().min(16).max(4096).default(256),
    })
    .strict(),
]);
export type EmbedderConfig = z.infer<typeof embedderSchema>;

export const cacheConfigSchema = z
  .object({
    exact: z
      .object({
        enabled: z.boolean().default(true),
        /** How long a finished image may answer later requests. */
        ttlSeconds: positive(30 * 24 * 3600),
      })
      .strict()
      .prefault({}),
    semantic: z
      .object({
        enabled: z.boolean().default(false),
        embedder: embedderSchema.optional(),
        /** Cosine similarity at or above which an earlier prompt counts as the same. */
        threshold: z.number().min(0).max(1).default(0.95),
        ttlSeconds: positive(7 * 24 * 3600),
        /** Most recent entries compared per request (per model and settings). */
        maxCandidates: z.number().int().min(1).default(2000),
      })
      .strict()
      .prefault({}),
    /** Answer a key's requests with images other keys generated (and let its images serve others). */
    shareAcrossKeys: z.boolean().default(true),
    /** Keys (name or id) whose requests never use or fill the cache. */
    optOutKeys: z.array(z.string().min(1)).default([]),
  })
  .strict();
export type CacheConfig = z.infer<typeof cacheConfigSchema>;

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
    /** Per key (name or id): `perKey` per endpoint, replacing the defaults above for that key. */
    keys: z.record(z.string().min(1), z.object({ generations: z.number().int().min(0).optional(), batches: z.number().int().min(0).optional(), reads: z.number().int().min(0).optional() }).strict()).default({}),
  })
  .strict();
export type RateLimitsConfig = z.infer<typeof rateLimitsConfigSchema>;

export const batchesConfigSchema = z
  .object({
    /** Most requests one batch may carry. */
    maxRequests: z.number().int().min(1).default(1000),
    /** Priority of batch jobs unless the batch says otherwise. */
    defaultPriority: z.enum(['high', 'normal', 'low']).default('low'),
    /** Jobs of one batch queued or running at once; the rest wait in the batch. */
    maxInFlight: z.number().int().min(1).default(100),
    /** The hourly spend cap's window (3600 = per clock hour). */
    capWindowSeconds: positive(3600),
    /** How often workers move waiting batch requests onto the queue. */
    pumpIntervalMs: z.number().int().positive().default(500),
  })
  .strict();
export type BatchesConfig = z.infer<typeof batchesConfigSchema>;

export const costModelConfigSchema = z
  .object({
    /** $ per GPU-hour of self-hosted backends with no rate of their own. */
    defaultUsdPerGpuHour: usd.default(1),
    /** Self-hosted backends by name: rate, per-host rates (GPU pools), GPUs and an admission estimate. */
    backends: z
      .record(
        z.string().min(1),
        z
          .object({
            usdPerGpuHour: usd.optional(),
            /** Per GPU host name (ComfyUI/A1111 pools), overriding usdPerGpuHour. */
            hosts: z.record(z.string().min(1), usd).default({}),
            /** GPUs behind the backend (utilization and break-even); default: its hosts, else 1. */
            gpus: z.number().int().min(1).optional(),
            /** GPU-seconds per 1024×1024 image assumed before any job was measured. */
            estimateGpuSecondsPerImage: z.number().positive().optional(),
          })
          .strict(),
      )
      .default({}),
    /** Backend types costed by GPU time (no list price). */
    selfHostedTypes: z.array(z.string().min(1)).default(['onnx', 'comfyui', 'a1111']),
    /** GPU-seconds per 1024×1024 image assumed before a model's first measured job. */
    estimateGpuSecondsPerImage: positive(20),
    /** Admission estimates use this multiple of the 90th percentile of recently measured images. */
    estimateMargin: z.number().min(1).default(1.25),
  })
  .strict();
export type CostModelConfig = z.infer<typeof costModelConfigSchema>;

export const metricsConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** When set, GET /metrics needs `Authorization: Bearer <token>`. */
    bearerToken: z.string().min(8).optional(),
    /** A worker-only process (`easel worker`) serves /metrics on this port (0 = off). */
    workerPort: z.number().int().min(0).max(65535).default(0),
  })
  .strict();
export type MetricsConfig = z.infer<typeof metricsConfigSchema>;

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

interface RefineCtx {
  addIssue(issue: { code: 'custom'; path: (string | number)[]; message: string }): void;
}

/**
 * Cross-checks of the cost-control sections against `backends` and `models` (called from the
 * config schema's superRefine), so `easel config check` names a typo'd model or backend.
 * With no models configured (the embedded default serves what was pulled) names are not checked.
 */
export function checkCostConfig(
  cfg: { backends: { name: string }[]; models: { name: string; fallback?: string[] }[]; routing: RoutingConfig; costModel: CostModelConfig },
  ctx: RefineCtx,
): void {
  const backends = new Set(cfg.backends.map((b) => b.name));
  const models = new Set(cfg.models.map((m) => m.name));
  if (cfg.models.length > 0) {
    for (const [name, alias] of Object.entries(cfg.routing.aliases)) {
      alias?.models?.forEach((m, i) => {
        if (!models.has(m)) ctx.addIssue({ code: 'custom', path: ['routing', 'aliases', name, 'models', i], message: `no model named "${m}"` });
      });
    }
    for (const [from, chain] of Object.entries(cfg.routing.fallback)) {
      if (!models.has(from)) ctx.addIssue({ code: 'custom', path: ['routing', 'fallback', from], message: `no model named "${from}"` });
      chain.forEach((m, i) => {
        if (!models.has(m)) ctx.addIssue({ code: 'custom', path: ['routing', 'fallback', from, i], message: `no model named "${m}"` });
      });
    }
    cfg.models.forEach((model, mi) =>
      model.fallback?.forEach((m, i) => {
        if (!models.has(m)) ctx.addIssue({ code: 'custom', path: ['models', mi, 'fallback', i], message: `no model named "${m}"` });
      }),
    );
  }
  if (cfg.backends.length > 0) {
    for (const name of Object.keys(cfg.costModel.backends)) {
      if (!backends.has(name)) ctx.addIssue({ code: 'custom', path: ['costModel', 'backends', name], message: `no backend named "${name}"` });
    }
  }
}
