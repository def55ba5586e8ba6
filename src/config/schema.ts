/**
 * The one config schema: a YAML file plus environment overrides, validated at start. Every key is
 * documented in the README; an unknown or bad key is an error that names it.
 */
import { z } from 'zod';
import { backendConfigSchemas } from '../backends/definitions.ts';
import { pricingConfigSchema } from '../pricing/schema.ts';
import { parseNetwork } from '../net/outbound-policy.ts';
import { batchesConfigSchema } from '../batches/config.ts';
import { fairnessConfigSchema } from '../fairness/config.ts';
import { budgetsConfigSchema } from '../budgets/config.ts';
import { cacheConfigSchema } from '../cache/config.ts';
import { checkCostConfig } from './cross-checks.ts';
import { costModelConfigSchema } from '../pricing/cost-model-config.ts';
import { metricsConfigSchema } from '../observability/config.ts';
import { modelRoutingFields, routingConfigSchema } from '../routing/config.ts';
import { rateLimitsConfigSchema } from '../api/rate-limit-config.ts';
import { modelStoreConfigSchema } from '../models/config.ts';
import { MAX_LORA_NAME_CHARS } from '../backends/model-spec.ts';

const seconds = (def: number) => z.number().positive().default(def);

/** One entry of `backends:`: the union of every backend definition's schema, told apart by `type`. */
export const backendConfigSchema = z.discriminatedUnion('type', backendConfigSchemas);
export type BackendConfig = z.infer<typeof backendConfigSchema>;

const loraName = z.string().min(1).max(MAX_LORA_NAME_CHARS);
const loraConfigEntry = z.union([loraName, z.object({ name: loraName, ref: z.string().min(1).max(2048).optional() }).strict()]);

export const modelConfigSchema = z
  .object({
    /** The public name clients send as `model`. */
    name: z.string().min(1),
    /** Which backend (by its `name`) runs it. */
    backend: z.string().min(1),
    /** The backend's own model id; defaults to the public name. */
    model: z.string().min(1).optional(),
    /** Used when a request names no model. */
    default: z.boolean().default(false),
    description: z.string().optional(),
    /**
     * LoRA adapters requests may name. For backends that list theirs (ComfyUI, A1111/Forge,
     * sd-server): an allowlist of what they found (`name`, or `{name, ref}` to offer a found file
     * under another name); absent, everything found. For providers that take references (Replicate,
     * fal, vLLM-Omni): the only adapters offered, each `{name, ref}` with the provider's reference.
     */
    loras: z.array(loraConfigEntry).max(500).optional(),
    // Cost control (src/cost): tier, offered sizes, text rendering, fallback chain.
    ...modelRoutingFields,
  })
  .strict();
export type ModelConfig = z.infer<typeof modelConfigSchema>;

export const configSchema = z
  .object({
    /** Folder for the SQLite file, local images and generated secrets. */
    dataDir: z.string().default('./data'),
    server: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8080),
        /** Base of absolute URLs handed to clients (image links, Location headers). */
        publicUrl: z.string().url().optional(),
        /** Largest accepted request body. */
        bodyLimitBytes: z.number().int().positive().default(26_214_400),
        /** How long a synchronous request waits for its job before answering with the job id. */
        syncTimeoutSeconds: seconds(300),
        trustProxy: z.boolean().default(false),
        /**
         * Tests: check every JSON answer against the schema its route declares (unknown keys and
         * undeclared statuses included) and answer 500 on drift. Off in production: answers are
         * sent without being re-checked.
         */
        validateResponses: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    database: z
      .object({
        /** `postgres://…` for Postgres; otherwise a SQLite file (default `<dataDir>/easel.db`). */
        url: z.string().optional(),
      })
      .strict()
      .prefault({}),
    redis: z
      .object({
        /** Set to use BullMQ for the queue and Redis pub/sub for job events. */
        url: z.string().optional(),
        prefix: z.string().default('easel'),
      })
      .strict()
      .prefault({}),
    queue: z
      .object({
        /** A job whose worker stops renewing its lease for this long is delivered again. */
        visibilityTimeoutSeconds: seconds(60),
        /** The embedded queue's poll interval for jobs enqueued by other processes. */
        pollIntervalMs: z.number().int().positive().default(250),
        /** Deliveries of one job before it fails as lost (worker crashes on it every time). */
        maxAttempts: z.number().int().min(1).default(5),
      })
      .strict()
      .prefault({}),
    storage: z
      .object({
        type: z.enum(['local', 's3']).default('local'),
        /** Local image folder (default `<dataDir>/images`). */
        dir: z.string().optional(),
        /** How long image URLs handed to clients stay valid. */
        urlTtlSeconds: z.number().int().positive().default(3600),
        /** `max-age` for served images; their bytes never change. */
        cacheMaxAgeSeconds: z.number().int().positive().default(31_536_000),
        /** Local storage: `/ready` fails while the disk holding the images has less free space than this (0 = never). */
        minFreeBytes: z.number().int().min(0).default(512 * 1024 * 1024),
        s3: z
          .object({
            bucket: z.string().min(1),
            region: z.string().default('us-east-1'),
            endpoint: z.string().url().optional(),
            /** Endpoint put in presigned URLs when clients reach the store under another address (compose: through nginx). */
            publicEndpoint: z.string().url().optional(),
            accessKeyId: z.string().optional(),
            secretAccessKey: z.string().optional(),
            forcePathStyle: z.boolean().default(false),
            prefix: z.string().default(''),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    worker: z
      .object({
        /** Jobs one worker process runs at once. */
        concurrency: z.number().int().min(1).default(8),
        /** A job running longer than this fails with `timeout`. */
        jobTimeoutSeconds: seconds(600),
        /** On SIGTERM, how long in-flight jobs may finish before they are handed back. */
        shutdownGraceSeconds: seconds(30),
      })
      .strict()
      .prefault({}),
    auth: z
      .object({
        /** Admin key to create on first start instead of a random one (env EASEL_ADMIN_KEY). */
        adminKey: z.string().min(16).optional(),
        /**
         * How long an API process trusts a key it looked up. A revocation reaches every API process at
         * once through the event bus (Redis when there are several); this bounds it when an event is lost.
         */
        keyCacheSeconds: z.number().min(0).max(300).default(1),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        maxImagesPerRequest: z.number().int().min(1).max(100).default(10),
        maxPromptChars: z.number().int().positive().default(32_000),
        maxPixels: z.number().int().positive().default(4096 * 4096),
      })
      .strict()
      .prefault({}),
    uploads: z
      .object({
        /** Largest single uploaded image or mask. */
        maxFileBytes: z.number().int().positive().default(50 * 1024 * 1024),
        /** Most input images one edit may carry. */
        maxImages: z.number().int().min(1).max(16).default(16),
        /** Largest side of an uploaded image, in pixels. */
        maxDimension: z.number().int().positive().default(8192),
      })
      .strict()
      .prefault({}),
    /**
     * What easel may call on a user's behalf beyond public addresses (webhook receivers on private
     * networks). Cloud metadata endpoints are refused whatever this says.
     */
    outbound: z
      .object({
        /** Host names (`hooks.internal`, or `*.svc.cluster.local`) that may resolve to private addresses. */
        allowHosts: z.array(z.string().min(1).max(253).regex(/^(\*\.)?[A-Za-z0-9.-]+$/, 'must be a host name, or *.suffix')).default([]),
        /** Networks (CIDR: `10.20.0.0/16`, `fd00:1::/64`) that may be called although they are not public. */
        allowNetworks: z.array(z.string().min(1).refine((v) => { try { parseNetwork(v); return true; } catch { return false; } }, 'must be a network such as 10.0.0.0/8 or fd00::/8')).default([]),
      })
      .strict()
      .prefault({}),
    webhooks: z
      .object({
        /** Standard Webhooks signing secret (`whsec_` + base64). Generated into the data folder when absent. */
        secret: z.string().regex(/^whsec_[A-Za-z0-9+/=]{16,}$/, 'must be whsec_ followed by base64').optional(),
        /** Replaced by `outbound.allowHosts` / `outbound.allowNetworks`; kept only to say so. */
        allowPrivateAddresses: z
          .never({ error: 'was replaced by outbound.allowNetworks (CIDRs such as 10.0.0.0/8) and outbound.allowHosts (host names) for receivers on private networks' })
          .optional(),
        /** Per-attempt timeout. */
        timeoutSeconds: seconds(15),
        /** Retries stop once this long has passed since the first attempt. */
        retryForSeconds: seconds(24 * 3600),
        /** First retry delay; later ones double (with jitter). */
        initialBackoffSeconds: seconds(5),
      })
      .strict()
      .prefault({}),
    moderation: z
      .object({
        /** Words refused anywhere in a prompt (case-insensitive, whole words). */
        blocklist: z.array(z.string().min(1)).default([]),
        /** Regular expressions refused in a prompt (case-insensitive). */
        patterns: z.array(z.string().min(1)).default([]),
        /** An OpenAI-compatible moderations endpoint asked about every prompt. */
        endpoint: z
          .object({
            url: z.string().url(),
            apiKey: z.string().optional(),
            apiKeyEnv: z.string().optional(),
            model: z.string().default('omni-moderation-latest'),
            timeoutSeconds: seconds(10),
            /** Refuse (true) or allow (false) prompts when the endpoint cannot be reached. */
            failClosed: z.boolean().default(true),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    cors: z
      .object({
        /** Origins whose browsers may call the API (`*` for any). The console easel serves itself needs none. */
        origins: z.array(z.string().min(1)).default([]),
      })
      .strict()
      .prefault({}),
    retention: z
      .object({
        /** Days after a job ends before its images and metadata are deleted; unset keeps them forever. */
        days: z.number().positive().optional(),
        /** Per API key, by key name or id: days, or null to keep that key's jobs forever. Wins over `days`. */
        keys: z.record(z.string().min(1), z.number().positive().nullable()).default({}),
        /** How often the retention sweep runs (one worker at a time, whichever takes the lease). */
        intervalSeconds: seconds(3600),
        /** Jobs deleted per database round trip. */
        batchSize: z.number().int().min(1).max(10_000).default(500),
      })
      .strict()
      .prefault({}),
    logging: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .strict()
      .prefault({}),
    /** Price table overrides (defaults are the providers' list prices); see src/pricing. */
    pricing: pricingConfigSchema.prefault({}),
    // Cost control (src/cost, src/batches): see the README's Configuration table.
    budgets: budgetsConfigSchema.prefault({}),
    routing: routingConfigSchema.prefault({}),
    cache: cacheConfigSchema.prefault({}),
    rateLimits: rateLimitsConfigSchema.prefault({}),
    batches: batchesConfigSchema.prefault({}),
    /** Fair sharing between keys: turns by weight, running and queued limits (src/fairness). */
    fairness: fairnessConfigSchema.prefault({}),
    costModel: costModelConfigSchema.prefault({}),
    metrics: metricsConfigSchema.prefault({}),
    /** Local models of the built-in engine: auto-pull on first start, download endpoint and timeouts. */
    modelStore: modelStoreConfigSchema.prefault({}),
    backends: z.array(backendConfigSchema).default([]),
    models: z.array(modelConfigSchema).default([]),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const names = new Set<string>();
    cfg.backends.forEach((b, i) => {
      if (names.has(b.name)) ctx.addIssue({ code: 'custom', path: ['backends', i, 'name'], message: `duplicate backend name "${b.name}"` });
      names.add(b.name);
    });
    const models = new Set<string>();
    cfg.models.forEach((m, i) => {
      if (!names.has(m.backend)) ctx.addIssue({ code: 'custom', path: ['models', i, 'backend'], message: `no backend named "${m.backend}"` });
      if (models.has(m.name)) ctx.addIssue({ code: 'custom', path: ['models', i, 'name'], message: `duplicate model name "${m.name}"` });
      models.add(m.name);
    });
    if (cfg.models.filter((m) => m.default).length > 1) ctx.addIssue({ code: 'custom', path: ['models'], message: 'more than one model is marked default' });
    checkCostConfig(cfg, ctx);
    if (cfg.storage.type === 's3' && !cfg.storage.s3) ctx.addIssue({ code: 'custom', path: ['storage', 's3'], message: 'storage.type is s3 but storage.s3 is missing' });
  });

export type EaselConfig = z.infer<typeof configSchema>;
