/**
 * What each Stability AI v2beta endpoint takes (PROTOCOLS.md §7.2), as a model spec and as a
 * parameter table: `ultra` (text-to-image, or image-to-image with `strength`), `core` (text-to-image
 * only), and the SD3 family on `sd3` (`model` + `mode`; turbo takes no negative prompt; no webp).
 * All take an aspect ratio rather than pixels, prompts up to 10,000 characters and the style
 * presets; none takes a mask.
 */
import { z } from 'zod';
import type { BackendCapabilities } from '../image-backend.ts';
import { noProviderOptions, uniformSpec } from '../model-spec.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { aspectRatioSizes } from '../http/media.ts';
import { aspectRatioRow, notTaken } from '../http/param-table.ts';
import type { ParamRow } from '../http/param-table.ts';

export const ASPECT_RATIOS = ['16:9', '1:1', '21:9', '2:3', '3:2', '4:5', '5:4', '9:16', '9:21'];
export const STYLE_PRESETS = [
  'enhance', 'anime', 'photographic', 'digital-art', 'comic-book', 'fantasy-art', 'line-art', 'analog-film', 'neon-punk',
  'isometric', 'low-poly', 'origami', 'modeling-compound', 'cinematic', '3d-model', 'pixel-art', 'tile-texture',
];
const MAX_SEED = 4_294_967_294;
const MAX_PROMPT_CHARS = 10_000;

export interface StabilityEndpoint {
  path: 'ultra' | 'core' | 'sd3';
  /** The `model` field for sd3. */
  model?: string;
  negativePrompt: boolean;
  edit: boolean;
  webp: boolean;
  cfgScale: boolean;
}

export function endpointFor(model: string): StabilityEndpoint | undefined {
  const m = model.toLowerCase();
  if (m === 'ultra' || m === 'stable-image-ultra') return { path: 'ultra', negativePrompt: true, edit: true, webp: true, cfgScale: false };
  if (m === 'core' || m === 'stable-image-core') return { path: 'core', negativePrompt: true, edit: false, webp: true, cfgScale: false };
  if (m.startsWith('sd3')) return { path: 'sd3', model: m, negativePrompt: !m.includes('turbo'), edit: true, webp: false, cfgScale: true };
  return undefined;
}

/**
 * Image-to-image strength (0 keeps the input, 1 ignores it): the one setting beyond easel's own
 * fields these endpoints take that changes neither price, moderation nor limits. `cfg_scale` is
 * easel's `guidance_scale` and `style_preset` its `style`, so they are not options.
 */
const editOptions = z.object({ strength: z.number().min(0).max(1).optional() }).strict();

export function stabilityModelSpec(model: string, backend: BackendCapabilities): BackendModelSpec {
  const endpoint = endpointFor(model);
  // An unknown model fails with model_not_found when called; declare nothing it could be steered by.
  if (!endpoint) return uniformSpec(backend, 'price-table', noProviderOptions);
  return {
    capabilities: { generate: true, edit: endpoint.edit, mask: false, variation: false, maxInputImages: endpoint.edit ? 1 : 0 },
    maxImagesPerCall: backend.maxImagesPerCall,
    sizes: aspectRatioSizes(ASPECT_RATIOS),
    styles: STYLE_PRESETS,
    maxPromptChars: MAX_PROMPT_CHARS,
    pricing: 'price-table',
    providerOptions: endpoint.edit ? editOptions : noProviderOptions,
  };
}

/** The table for one image of `model` at `endpoint`; edits take their size from the input image. */
export function stabilityRows(endpoint: StabilityEndpoint, model: string, backend: string, editing: boolean): ParamRow[] {
  return [
    { param: 'prompt', field: 'prompt' },
    editing
      ? { param: 'size', unsupported: `size is taken from the input image for edits on backend "${backend}"; ignored` }
      : aspectRatioRow(ASPECT_RATIOS, model),
    endpoint.negativePrompt ? { param: 'negative_prompt', field: 'negative_prompt' } : notTaken('negative_prompt', model, backend),
    { param: 'seed', field: 'seed', transform: (seed: number) => seed % (MAX_SEED + 1) },
    {
      param: 'style',
      field: 'style_preset',
      transform: (style: string, t) => {
        if (STYLE_PRESETS.includes(style)) return style;
        t.warn(`style "${style}" is not a Stability style preset; ignored`, 'unsupported');
        return undefined;
      },
    },
    // sd3 has no webp: asked as png, and the worker converts.
    { param: 'output_format', field: 'output_format', transform: (f: string) => (f === 'webp' && !endpoint.webp ? 'png' : f) },
    endpoint.cfgScale ? { param: 'guidance_scale', field: 'cfg_scale' } : notTaken('guidance_scale', model, backend),
    notTaken('steps', model, backend),
    notTaken('quality', model, backend),
  ];
}
