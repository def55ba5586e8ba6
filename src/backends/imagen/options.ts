/**
 * Config entry for an `imagen` backend: Google Imagen through the Gemini API's `:predict` route
 * (`imagen-4.0-generate-001`, `imagen-4.0-fast-generate-001`, `imagen-4.0-ultra-generate-001`,
 * `imagen-3.0-generate-002`). Google is retiring this route; the backend is there while it lasts.
 */
import { z } from 'zod';
import { hostedCommonFields } from '../http/options.ts';

export const imagenBackendConfigSchema = z
  .object({
    type: z.literal('imagen'),
    ...hostedCommonFields,
    timeoutSeconds: z.number().positive().max(3600).default(120),
    baseUrl: z.url({ protocol: /^https?$/ }).default('https://generativelanguage.googleapis.com/v1beta'),
    /** `dont_allow`, `allow_adult` (Google's default) or `allow_all` (not in the EU, UK, CH, MENA). */
    personGeneration: z.enum(['dont_allow', 'allow_adult', 'allow_all']).optional(),
    safetySetting: z.enum(['BLOCK_LOW_AND_ABOVE', 'BLOCK_MEDIUM_AND_ABOVE', 'BLOCK_ONLY_HIGH', 'BLOCK_NONE']).optional(),
    /** Most samples one `:predict` call asks for (Imagen takes 1–4); more are fanned out. */
    maxSamplesPerCall: z.number().int().min(1).max(4).default(4),
  })
  .strict();

export type ImagenBackendConfig = z.infer<typeof imagenBackendConfigSchema>;
export type ImagenBackendConfigInput = z.input<typeof imagenBackendConfigSchema>;
