/**
 * What a fal endpoint takes (PROTOCOLS.md §5.5, §11 B4), as a model spec and a parameter table.
 * The endpoint id says what it does: `…/image-to-image` edits one image (`image_url`), `…/inpainting`
 * and `…/fill` take a mask too (`mask_url`), the rest make images from a prompt. The FLUX family
 * (`fal-ai/flux/schnell`, `fal-ai/flux/dev`, `fal-ai/flux-lora`) is known field by field; an endpoint
 * easel does not know keeps the backend's capabilities and takes only `sync_mode` as an option.
 */
import { z } from 'zod';
import type { BackendCapabilities } from '../image-backend.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { notTaken } from '../http/param-table.ts';
import type { ParamRow } from '../http/param-table.ts';
import type { ImageSize } from '../../core/image-request.ts';
import { perModel } from '../per-model.ts';

export interface FalEndpoint {
  /** Makes images from a prompt alone. */
  generate: boolean;
  /** Takes `image_url`. */
  image: boolean;
  /** Takes `mask_url` (with the image). */
  mask: boolean;
  /** A FLUX model: no negative prompt. */
  flux: boolean;
  /** Most inference steps it takes (schnell: 12). */
  maxSteps?: number;
  /** Options beyond easel's own fields that change neither price, moderation nor limits. */
  options: z.ZodObject;
  /** Takes `loras: [{path, scale}]` (the flux-lora family, PROTOCOLS.md §11 B4). */
  loras?: boolean;
}

/** `sync_mode`: images come back inline as data URIs (not kept in fal's request history). */
const syncMode = { sync_mode: z.boolean().optional() };
/** `acceleration`: fal's faster (slightly lossy) inference. */
const acceleration = (levels: readonly [string, ...string[]]) => ({ acceleration: z.enum(levels).optional() });
/** `strength`: how far an image-to-image result may move from its input (0 keeps it, 1 ignores it). */
const strength = { strength: z.number().min(0).max(1).optional() };

const FLUX_TEXT = new Set(['fal-ai/flux/schnell', 'fal-ai/flux/dev', 'fal-ai/flux-lora']);

/** What an endpoint takes (remembered per id). */
export const falEndpoint = perModel(classify);

function classify(model: string): FalEndpoint {
  const e = classifyFields(model);
  const id = model.toLowerCase().replace(/\/+$/, '');
  return id === 'fal-ai/flux-lora' || id.startsWith('fal-ai/flux-lora/') ? { ...e, loras: true } : e;
}

function classifyFields(model: string): FalEndpoint {
  const id = model.toLowerCase().replace(/\/+$/, '');
  const flux = /flux/.test(id);
  const accel = id === 'fal-ai/flux-lora' || id.startsWith('fal-ai/flux-lora/') ? acceleration(['none', 'regular']) : acceleration(['none', 'regular', 'high']);
  if (id.endsWith('/image-to-image')) {
    return { generate: false, image: true, mask: false, flux, options: z.object({ ...syncMode, ...(flux ? accel : {}), ...strength }).strict() };
  }
  if (id.endsWith('/inpainting') || id.endsWith('/fill')) {
    return { generate: false, image: true, mask: true, flux, options: z.object({ ...syncMode, ...(id.endsWith('/inpainting') ? strength : {}) }).strict() };
  }
  if (FLUX_TEXT.has(id)) {
    return { generate: true, image: false, mask: false, flux: true, ...(id === 'fal-ai/flux/schnell' ? { maxSteps: 12 } : {}), options: z.object({ ...syncMode, ...accel }).strict() };
  }
  // Not known field by field: the backend's capabilities, and nothing but sync_mode as an option.
  return { generate: true, image: true, mask: true, flux, options: z.object(syncMode).strict() };
}

export function falModelSpec(model: string, backend: BackendCapabilities, providerReported: boolean): BackendModelSpec {
  const e = falEndpoint(model);
  const edit = e.image && backend.edit;
  return {
    capabilities: { generate: e.generate, edit, mask: edit && e.mask && backend.mask, variation: false, maxInputImages: edit ? 1 : 0 },
    maxImagesPerCall: backend.maxImagesPerCall,
    pricing: providerReported ? 'provider-reported' : 'price-table',
    providerOptions: e.options,
    // Adapter URLs (or HF repos) only as models[].loras names them; fal merges any number.
    ...(e.loras ? { loras: { source: 'configured' as const, available: [] } } : {}),
  };
}

/** The table of one fal request (its `n` is the request's image count). */
export function falRows(model: string, backend: string, numImagesField: string | null): ParamRow[] {
  const e = falEndpoint(model);
  return [
    { param: 'prompt', field: 'prompt' },
    { param: 'size', field: 'image_size', transform: (s: ImageSize) => ({ width: s.width, height: s.height }) },
    ...(numImagesField ? [{ param: 'n', field: numImagesField } satisfies ParamRow] : []),
    { param: 'seed', field: 'seed' },
    { param: 'steps', field: 'num_inference_steps', min: 1, ...(e.maxSteps ? { max: e.maxSteps } : {}) },
    { param: 'guidance_scale', field: 'guidance_scale' },
    // FLUX answers jpeg or png; webp is asked as png and converted by the worker.
    { param: 'output_format', field: 'output_format', transform: (f: string) => (f === 'jpeg' ? 'jpeg' : 'png') },
    e.flux ? notTaken('negative_prompt', model, backend) : { param: 'negative_prompt', field: 'negative_prompt' },
    notTaken('quality', model, backend),
    notTaken('style', model, backend),
  ];
}
