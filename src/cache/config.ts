/**
 * The `cache` config section: exact and semantic image caching.
 */
import { z } from 'zod';

const positive = (def: number) => z.number().positive().default(def);

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
    /**
     * Groups of keys (names or ids) that trust each other: a key's requests may be answered with
     * images another key of one of its groups made. A key in no group only ever gets its own.
     */
    shareGroups: z.record(z.string().min(1), z.array(z.string().min(1)).min(2)).default({}),
    /** Replaced by `shareGroups` (sharing is now opt-in per group of keys). */
    shareAcrossKeys: z.never({ error: 'was replaced by cache.shareGroups (named groups of keys that may answer each other from the cache; by default a key only gets its own images)' }).optional(),
    /** Keys (name or id) whose requests never use or fill the cache. */
    optOutKeys: z.array(z.string().min(1)).default([]),
  })
  .strict();
export type CacheConfig = z.infer<typeof cacheConfigSchema>;
