/**
 * The `modelStore` config section: where models for the built-in engine come from and how the
 * download behaves. (`models:` is the list of public model names; this is the folder of local ones.)
 */
import { z } from 'zod';
import { CATALOG } from './catalog.ts';

const catalogName = z.string().refine((n) => CATALOG.some((e) => e.name === n), { message: `not a catalog model (${CATALOG.map((e) => e.name).join(', ')})` });

export const modelStoreConfigSchema = z
  .object({
    /**
     * With no backend configured and no model installed, `easel serve` downloads `autoPullModels` in
     * the background on start and serves them once they are in (env EASEL_AUTO_PULL=0 turns it off).
     */
    autoPull: z.boolean().default(true),
    /** What the auto-pull fetches, in order: the tiny TAESD decoder, then SD-Turbo. */
    autoPullModels: z.array(catalogName).min(1).default(['taesd', 'sd-turbo']),
    /** Hugging Face or a mirror of it (env HF_ENDPOINT; default https://huggingface.co). */
    endpoint: z.url({ protocol: /^https?$/ }).optional(),
    /** An attempt with no byte for this long is given up on and retried. */
    idleTimeoutSeconds: z.number().positive().max(3600).default(30),
    /** Retries of one file after network failures (the delay doubles from 0.5 s up to 8 s). */
    retries: z.number().int().min(0).max(20).default(5),
  })
  .strict();
export type ModelStoreConfig = z.infer<typeof modelStoreConfigSchema>;
