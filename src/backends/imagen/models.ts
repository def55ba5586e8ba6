/**
 * What Imagen on the Gemini API takes (PROTOCOLS.md §8): text-to-image only, 1–4 samples per
 * `:predict`, one of five aspect ratios (`sampleImageSize` 2K on Imagen 4 standard and ultra), and
 * no seed, negative prompt or steps (Vertex-only or absent). Provider options are the request
 * parameters that change neither price, moderation nor limits.
 */
import { z } from 'zod';
import type { BackendCapabilities } from '../image-backend.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { aspectRatioSizes } from '../http/media.ts';
import { aspectRatioRow, notTaken } from '../http/param-table.ts';
import type { ParamRow } from '../http/param-table.ts';

export const ASPECT_RATIOS = ['1:1', '3:4', '4:3', '9:16', '16:9'];
/** Samples one `:predict` makes at most. */
export const MAX_SAMPLES = 4;

/**
 * `language`: the prompt's language; `includeSafetyAttributes`: safety scores on each image (the
 * extra "Positive Prompt" entry it adds is skipped). `personGeneration` and `safetySetting` are
 * moderation: config only. `guidanceScale` is easel's `guidance_scale`.
 */
export const imagenProviderOptionsSchema = z
  .object({
    language: z.string().min(1).max(16).optional(),
    includeSafetyAttributes: z.boolean().optional(),
  })
  .strict();

/** Imagen 4 standard and ultra make 2K images; fast and Imagen 3 only 1K. */
const takes2K = (model: string) => /^imagen-4/.test(model) && !model.includes('fast');

export function imagenModelSpec(_model: string, backend: BackendCapabilities, maxSamplesPerCall: number): BackendModelSpec {
  return {
    capabilities: { generate: true, edit: false, mask: false, variation: false, maxInputImages: 0 },
    maxImagesPerCall: Math.min(backend.maxImagesPerCall, maxSamplesPerCall, MAX_SAMPLES),
    sizes: aspectRatioSizes(ASPECT_RATIOS),
    pricing: 'price-table',
    providerOptions: imagenProviderOptionsSchema,
  };
}

/** The `parameters` table of one `:predict` (its `n` is the call's sample count). */
export function imagenRows(model: string, backend: string): ParamRow[] {
  return [
    // Never left out: Imagen's default is four images, billed.
    { param: 'n', field: 'sampleCount', min: 1, max: MAX_SAMPLES },
    aspectRatioRow(ASPECT_RATIOS, model, 'aspectRatio'),
    { param: 'size', field: 'sampleImageSize', transform: (size) => (takes2K(model) && Math.max(size.width, size.height) > 1024 ? '2K' : undefined) },
    { param: 'guidance_scale', field: 'guidanceScale' },
    {
      param: 'output_format',
      field: 'outputOptions',
      transform: (format: string, t) => ({
        mimeType: format === 'jpeg' ? 'image/jpeg' : 'image/png',
        ...(format === 'jpeg' && t.params.output_compression !== undefined ? { compressionQuality: t.params.output_compression } : {}),
      }),
    },
    // The Gemini API refuses these (they are Vertex-only) or has no such field.
    notTaken('seed', model, backend),
    notTaken('negative_prompt', model, backend),
    notTaken('steps', model, backend),
    notTaken('quality', model, backend),
    notTaken('style', model, backend),
  ];
}
