/**
 * Config entry for a `replicate` backend: predictions on Replicate, on official models
 * (`owner/name`), on versions (`owner/name:<hex>` or a bare 64-hex version) or on deployments
 * (`deployments/owner/name`). The model comes from the `models` entry that routes to this backend.
 */
import { z } from 'zod';
import { hostedCommonFields, pollingFields } from '../http/options.ts';
import { declaredOptionsSchema } from '../declared-options.ts';

export const replicateInputSchema = z
  .object({
    /** How the size is sent: `width`/`height`, a nearest `aspect_ratio`, or not at all. */
    size: z.enum(['width_height', 'aspect_ratio', 'none']).optional(),
    /** Aspect ratios the model takes when `size` is `aspect_ratio`. */
    aspectRatios: z.array(z.string().regex(/^\d+:\d+$/)).min(1).optional(),
    /** Input naming how many images one prediction makes (`num_outputs`); null when the model makes one. */
    numOutputsField: z.string().min(1).nullable().optional(),
    /** Most images one prediction makes; more are fanned out to more predictions. */
    maxOutputs: z.number().int().min(1).max(16).optional(),
    /** Input names for easel's fields; null leaves the field out (with a warning when set). */
    seedField: z.string().min(1).nullable().optional(),
    negativePromptField: z.string().min(1).nullable().optional(),
    stepsField: z.string().min(1).nullable().optional(),
    guidanceField: z.string().min(1).nullable().optional(),
    outputFormatField: z.string().min(1).nullable().optional(),
    imageField: z.string().min(1).nullable().optional(),
    maskField: z.string().min(1).nullable().optional(),
    /**
     * Where a request's LoRAs go, for a model the built-in profiles do not know (or null: it takes
     * none): `{field: lora_weights, scaleField: lora_scale, extraField: extra_lora, extraScaleField:
     * extra_lora_scale}`. The references come from `models[].loras`.
     */
    lora: z
      .object({
        field: z.string().min(1),
        scaleField: z.string().min(1),
        extraField: z.string().min(1).optional(),
        extraScaleField: z.string().min(1).optional(),
        minWeight: z.number().optional(),
        maxWeight: z.number().optional(),
      })
      .strict()
      .nullable()
      .optional(),
    /** Inputs sent with every prediction (e.g. `{disable_safety_checker: false}`); easel's mapped fields win over them. */
    extra: z.record(z.string(), z.unknown()).optional(),
    /**
     * Provider options requests may set, with their types (`{lora_scale: number}` is refused: guarded
     * names cannot be declared). They add to what a built-in profile declares; for any other model they
     * are all it takes.
     */
    providerOptions: declaredOptionsSchema.optional(),
  })
  .strict();

export const replicateBackendConfigSchema = z
  .object({
    type: z.literal('replicate'),
    ...hostedCommonFields,
    ...pollingFields,
    baseUrl: z.url({ protocol: /^https?$/ }).default('https://api.replicate.com/v1'),
    /**
     * Seconds of `Prefer: wait` on create (1–60; 0 = none). It saves a poll on fast models, but the
     * prediction id is only known when the create call answers, so a worker that dies during that
     * wait cannot resume the prediction. Off by default.
     */
    preferWaitSeconds: z.number().int().min(0).max(60).default(0),
    /** `Cancel-After` on create (e.g. `5m`): a prediction not started by then ends `aborted`, unbilled. */
    cancelAfter: z.string().regex(/^\d+(ms|s|m|h)$/, 'a duration such as 30s or 5m').optional(),
    /** Hardware price per second; with it, a prediction's `metrics.predict_time` prices the image (it wins over the price table). */
    usdPerSecond: z.number().nonnegative().optional(),
    /** Webhook signing secret (`whsec_…`); unset, it is fetched once from `GET /webhooks/default/secret`. */
    webhookSecret: z.string().min(1).optional(),
    webhookSecretEnv: z.string().min(1).optional(),
    /** Overrides of how easel's request maps to the model's inputs (built-in profiles cover FLUX and SDXL). */
    input: replicateInputSchema.optional(),
  })
  .strict();

export type ReplicateBackendConfig = z.infer<typeof replicateBackendConfigSchema>;
export type ReplicateBackendConfigInput = z.input<typeof replicateBackendConfigSchema>;
export type ReplicateInputConfig = z.infer<typeof replicateInputSchema>;
