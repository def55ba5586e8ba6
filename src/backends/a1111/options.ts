/**
 * Config entry for an `a1111` backend: AUTOMATIC1111 stable-diffusion-webui or Forge hosts started
 * with `--api`, behind one pool. A model routed here names a checkpoint (its file name, model name or
 * title); it is chosen per request through `override_settings` and left loaded afterwards, which is
 * what makes model affinity pay.
 */
import { z } from 'zod';
import { poolFields, samplingDefaultFields } from '../pool/options.ts';

const samplingDefaults = samplingDefaultFields(64);

export const a1111BackendConfigSchema = z
  .object({
    type: z.literal('a1111'),
    ...poolFields,
    /** A1111 runs one generation at a time under a global lock, and progress is per host: one call per host. */
    maxConcurrentPerHost: z.number().int().min(1).max(1).default(1),
    /** Per checkpoint sampling defaults (keys as requests name the checkpoint). */
    checkpoints: z.record(z.string(), z.object(samplingDefaults).strict()).default({}),
    defaults: z
      .object({
        ...samplingDefaults,
        /** img2img / inpaint strength when the request gives none. */
        denoise: z.number().min(0).max(1).default(0.75),
        /** Strength of a variation (an img2img with no prompt). */
        variationDenoise: z.number().min(0).max(1).default(0.6),
      })
      .strict()
      .prefault({}),
    /** Fields merged into every txt2img / img2img body (request provider options win). */
    extraFields: z.record(z.string(), z.unknown()).optional(),
    /** How often `/sdapi/v1/progress` is polled while a generation runs. */
    progressPollMs: z.number().int().min(10).max(60_000).default(500),
    /** Forward live previews (`current_image`, when the webui has them on) as partial images. */
    previews: z.boolean().default(false),
  })
  .strict();

export type A1111BackendConfig = z.infer<typeof a1111BackendConfigSchema>;
export type A1111BackendConfigInput = z.input<typeof a1111BackendConfigSchema>;
