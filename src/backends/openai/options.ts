/**
 * Config entry for an `openai` backend: any endpoint that speaks the OpenAI Images API (OpenAI
 * itself, LocalAI, another easel), driven through the official SDK.
 */
import { z } from 'zod';
import { declaredOptionsSchema } from '../declared-options.ts';
import { warmupSchema } from '../warmup.ts';
import { ENGINE_PRESETS } from './engines.ts';

export const openaiBackendConfigSchema = z
  .object({
    type: z.literal('openai'),
    /** The name models and routes refer to this backend by. */
    name: z.string().min(1),
    /** Base URL including the version path, e.g. `http://localai:8080/v1`. */
    baseUrl: z.url({ protocol: /^https?$/ }).default('https://api.openai.com/v1'),
    /** The key itself; prefer `apiKeyEnv` so it stays out of the file. */
    apiKey: z.string().min(1).optional(),
    /** Env var holding the key when `apiKey` is absent (default OPENAI_API_KEY). No key at all sends no Authorization header. */
    apiKeyEnv: z.string().min(1).optional(),
    organization: z.string().min(1).optional(),
    /** Limit for one HTTP attempt; the SDK retries a timed-out attempt up to `maxRetries` times. */
    timeoutSeconds: z.number().positive().max(3600).default(300),
    /** SDK retries for connection errors, 408/409/429/5xx (honouring retry-after). */
    maxRetries: z.number().int().min(0).max(10).default(2),
    /** Most images one call may ask for (set 1 for dall-e-3). */
    maxImagesPerCall: z.number().int().min(1).max(10).default(10),
    /**
     * Send easel's extensions (negative_prompt, seed, steps, guidance_scale) in the body. OpenAI rejects
     * unknown fields, so this is off by default; LocalAI and another easel accept them.
     */
    extraBodyFields: z.boolean().default(false),
    /**
     * OpenAI's per-model rules (n limits, sizes, qualities, styles, prompt lengths, edit and variation
     * support), applied before a call: `auto` applies them when baseUrl is api.openai.com.
     */
    modelRules: z.enum(['auto', 'on', 'off']).default('auto'),
    /**
     * Charge OpenAI's list prices for images from this endpoint: `auto` does for api.openai.com only.
     * Turn it on for a proxy in front of OpenAI; any other endpoint (LocalAI, vLLM-Omni, another
     * easel) is a GPU somebody runs and is costed by measured time (`costModel`).
     */
    listPrices: z.union([z.literal('auto'), z.boolean()]).default('auto'),
    capabilities: z
      .object({
        edit: z.boolean().optional(),
        mask: z.boolean().optional(),
        variation: z.boolean().optional(),
        maxInputImages: z.number().int().min(0).max(16).optional(),
      })
      .strict()
      .optional(),
    /**
     * Provider options requests may set besides OpenAI's own (`moderation`, `input_fidelity`), for
     * OpenAI-compatible servers that take more (`{true_cfg_scale: number}`); guarded names (model,
     * n, size, prompt, steps, …) cannot be declared.
     */
    providerOptions: declaredOptionsSchema.optional(),
    /** Extra headers sent with every request. */
    headers: z.record(z.string(), z.string()).optional(),
    /**
     * Path (under baseUrl) the health check asks with GET. Any HTTP answer other than a 5xx or a
     * refused key (401/403) counts as up, so an endpoint without `/models` (some images-only servers
     * answer it 404) is still healthy; point it at the server's own health route where it has one.
     * Default `/models`; with a `preset`, the engine's own route (from the server's origin).
     */
    healthPath: z.string().regex(/^\//, 'must start with /').optional(),
    /**
     * An OpenAI-compatible engine on your own GPUs (src/backends/openai/engines.ts): easel's fields
     * under the engine's names, its health route, what it can do, how it takes LoRAs; costed by
     * measured GPU time. `vllm-omni`, `sglang`, `localai`, `sdcpp` (stable-diffusion.cpp's sd-server).
     */
    preset: z.enum(ENGINE_PRESETS).optional(),
    /**
     * sdcpp: the server's `--lora-model-dir` as the server sees it. sd-server takes a LoRA path
     * verbatim on its OpenAI route, so the files it lists are sent under this folder; without it,
     * only `models[].loras` entries (with full paths as `ref`) are offered.
     */
    loraDir: z.string().min(1).optional(),
    /** How often a listed engine's LoRAs are read again (a request naming one not listed looks at once). */
    loraRefreshSeconds: z.number().positive().max(86_400).default(60),
    /** A small generation when the server first answers (and when it comes back), before it is reported ready; absent: off. */
    warmup: warmupSchema.optional(),
  })
  .strict();

export type OpenAIBackendConfig = z.infer<typeof openaiBackendConfigSchema>;
/** What a caller may write before defaults are applied. */
export type OpenAIBackendConfigInput = z.input<typeof openaiBackendConfigSchema>;
