/**
 * How easel's request becomes a Replicate prediction's `input`: a profile per known model (FLUX
 * takes an aspect ratio and up to four outputs, SDXL takes width/height and a negative prompt, …),
 * a conservative default for the rest (only what was set, under the usual names, one image per
 * prediction), and config overrides on top. Each profile is also the model's spec (what it takes,
 * which provider options) and its parameter table. What a model cannot take is said in a warning.
 */
import { z } from 'zod';
import type { BackendCapabilities, BackendRequest, BackendWarning } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { aspectRatioSizes } from '../http/media.ts';
import { aspectRatioRow, easelParams, mapParams, notTaken } from '../http/param-table.ts';
import type { ParamRow } from '../http/param-table.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { declaredOptionType } from '../declared-options.ts';
import { unsupported } from '../warnings.ts';
import type { ImageSize } from '../../core/image-request.ts';
import type { ReplicateInputConfig } from './options.ts';

export type ModelRef =
  | { kind: 'model'; owner: string; name: string }
  | { kind: 'version'; owner?: string; name?: string; version: string }
  | { kind: 'deployment'; owner: string; name: string };

const HEX64 = /^[0-9a-f]{64}$/i;
const SLUG = /^[\w.-]+$/;

/** `owner/name`, `owner/name:<version>`, `<version>` or `deployments/owner/name`. */
export function parseModelRef(model: string): ModelRef {
  const bad = () =>
    new BackendError(
      `"${model}" is not a Replicate model reference (owner/name, owner/name:version, a 64-hex version, or deployments/owner/name)`,
      { code: 'invalid_request' },
    );
  if (HEX64.test(model)) return { kind: 'version', version: model };
  const dep = /^deployments\/([^/]+)\/([^/]+)$/.exec(model);
  if (dep) {
    if (!SLUG.test(dep[1]!) || !SLUG.test(dep[2]!)) throw bad();
    return { kind: 'deployment', owner: dep[1]!, name: dep[2]! };
  }
  const m = /^([^/:]+)\/([^/:]+)(?::([0-9a-f]{64}))?$/i.exec(model);
  if (!m || !SLUG.test(m[1]!) || !SLUG.test(m[2]!)) throw bad();
  if (m[3]) return { kind: 'version', owner: m[1], name: m[2], version: m[3] };
  return { kind: 'model', owner: m[1]!, name: m[2]! };
}

/** `owner/name` without any version (what the price table and profiles are keyed by). */
export function modelSlug(model: string): string {
  return model.replace(/:[0-9a-f]{64}$/i, '').replace(/^deployments\//, '').toLowerCase();
}

export interface ReplicateProfile {
  size: 'width_height' | 'aspect_ratio' | 'none';
  aspectRatios: string[];
  numOutputsField: string | null;
  maxOutputs: number;
  seedField: string | null;
  negativePromptField: string | null;
  stepsField: string | null;
  guidanceField: string | null;
  outputFormatField: string | null;
  /** Values the output-format input takes for easel's formats (FLUX says `jpg`). */
  outputFormats: Record<string, string>;
  imageField: string | null;
  maskField: string | null;
  /** Width/height are rounded to a multiple of this. */
  sizeMultiple: number;
  extra: Record<string, unknown>;
  /** The model's inputs beyond easel's own fields that change neither price, moderation nor limits. */
  options: Record<string, z.ZodType>;
  /** Where a request's LoRAs go (PROTOCOLS.md §11 B3); null: the model takes none. */
  lora: ReplicateLoraInputs | null;
}

/** A model's LoRA inputs: the first adapter's reference and scale, and a second one's where it takes one. */
export interface ReplicateLoraInputs {
  field: string;
  scaleField: string;
  extraField?: string;
  extraScaleField?: string;
  minWeight?: number;
  maxWeight?: number;
}

/** `output_quality`: jpg/webp encoder quality (0–100). `go_fast`: the faster, slightly lossy FLUX path. */
const outputQuality = { output_quality: z.number().int().min(0).max(100).optional() };
const goFast = { go_fast: z.boolean().optional() };
/** `prompt_strength`: how far an image-to-image result may move from its input (0–1). */
const promptStrength = { prompt_strength: z.number().min(0).max(1).optional() };

const FLUX_RATIOS = ['1:1', '16:9', '21:9', '3:2', '2:3', '4:5', '5:4', '3:4', '4:3', '9:16', '9:21'];

const DEFAULT_PROFILE: ReplicateProfile = {
  size: 'width_height',
  aspectRatios: FLUX_RATIOS,
  numOutputsField: null,
  maxOutputs: 1,
  seedField: 'seed',
  negativePromptField: 'negative_prompt',
  stepsField: 'num_inference_steps',
  guidanceField: 'guidance_scale',
  outputFormatField: null,
  outputFormats: { png: 'png', jpeg: 'jpg', webp: 'webp' },
  imageField: 'image',
  maskField: 'mask',
  sizeMultiple: 8,
  extra: {},
  options: {},
  lora: null,
};

const flux = (over: Partial<ReplicateProfile>): ReplicateProfile => ({
  ...DEFAULT_PROFILE,
  size: 'aspect_ratio',
  negativePromptField: null,
  guidanceField: null,
  outputFormatField: 'output_format',
  maskField: null,
  imageField: null,
  ...over,
});

const sdOptions = {
  ...promptStrength,
  scheduler: z.string().min(1).optional(),
  /** SDXL's refiner: none, an ensemble of experts, or a refining pass over the base image. */
  refine: z.enum(['no_refiner', 'expert_ensemble_refiner', 'base_image_refiner']).optional(),
  high_noise_frac: z.number().min(0).max(1).optional(),
  apply_watermark: z.boolean().optional(),
};

const PROFILES: Record<string, ReplicateProfile> = {
  'black-forest-labs/flux-schnell': flux({ numOutputsField: 'num_outputs', maxOutputs: 4, options: { ...goFast, ...outputQuality } }),
  'black-forest-labs/flux-dev': flux({
    numOutputsField: 'num_outputs',
    maxOutputs: 4,
    guidanceField: 'guidance',
    imageField: 'image',
    options: { ...goFast, ...outputQuality, ...promptStrength },
  }),
  'black-forest-labs/flux-pro': flux({ stepsField: 'steps', guidanceField: 'guidance', options: { ...outputQuality, prompt_upsampling: z.boolean().optional() } }),
  'black-forest-labs/flux-1.1-pro': flux({ stepsField: null, options: { ...outputQuality, prompt_upsampling: z.boolean().optional() } }),
  'black-forest-labs/flux-1.1-pro-ultra': flux({ stepsField: null, options: { ...outputQuality, raw: z.boolean().optional() } }),
  // cog-flux's LoRA predictors: lora_weights/lora_scale (−1..3), and on dev a second adapter (extra_lora).
  'black-forest-labs/flux-dev-lora': flux({
    numOutputsField: 'num_outputs',
    maxOutputs: 4,
    guidanceField: 'guidance',
    imageField: 'image',
    options: { ...goFast, ...outputQuality, ...promptStrength },
    lora: { field: 'lora_weights', scaleField: 'lora_scale', extraField: 'extra_lora', extraScaleField: 'extra_lora_scale', minWeight: -1, maxWeight: 3 },
  }),
  'black-forest-labs/flux-schnell-lora': flux({ numOutputsField: 'num_outputs', maxOutputs: 4, options: { ...goFast, ...outputQuality }, lora: { field: 'lora_weights', scaleField: 'lora_scale', minWeight: -1, maxWeight: 3 } }),
  // lucataco's: an `hf_lora` reference and lora_scale 0..1.
  'lucataco/flux-dev-lora': flux({ guidanceField: 'guidance_scale', lora: { field: 'hf_lora', scaleField: 'lora_scale', minWeight: 0, maxWeight: 1 } }),
  'stability-ai/sdxl': { ...DEFAULT_PROFILE, numOutputsField: 'num_outputs', maxOutputs: 4, options: sdOptions },
  'stability-ai/stable-diffusion': { ...DEFAULT_PROFILE, numOutputsField: 'num_outputs', maxOutputs: 4, options: sdOptions },
};

export function profileFor(model: string, overrides: ReplicateInputConfig | undefined): ReplicateProfile {
  const base = PROFILES[modelSlug(model)] ?? DEFAULT_PROFILE;
  if (!overrides) return base;
  const declared = Object.fromEntries(Object.entries(overrides.providerOptions ?? {}).map(([k, d]) => [k, declaredOptionType(d)]));
  const merged: ReplicateProfile = { ...base, extra: { ...base.extra, ...overrides.extra }, options: { ...base.options, ...declared } };
  if (overrides.lora !== undefined) merged.lora = overrides.lora;
  for (const [key, value] of Object.entries(overrides)) {
    if (key === 'extra' || key === 'providerOptions' || key === 'lora' || value === undefined) continue;
    (merged as unknown as Record<string, unknown>)[key] = value;
  }
  if (overrides.numOutputsField === null && overrides.maxOutputs === undefined) merged.maxOutputs = 1;
  return merged;
}

const schemas = new WeakMap<ReplicateProfile, z.ZodObject>();

/** The strict schema of a profile's provider options. */
export function profileOptions(profile: ReplicateProfile): z.ZodObject {
  let schema = schemas.get(profile);
  if (!schema) {
    schema = z.object(Object.fromEntries(Object.entries(profile.options).map(([k, t]) => [k, t.optional()]))).strict();
    schemas.set(profile, schema);
  }
  return schema;
}

/** A model's spec from its profile: what it takes follows from which inputs it has. */
export function replicateModelSpec(profile: ReplicateProfile, backend: BackendCapabilities, providerReported: boolean): BackendModelSpec {
  const edit = profile.imageField !== null && backend.edit;
  return {
    capabilities: { generate: true, edit, mask: edit && profile.maskField !== null && backend.mask, variation: false, maxInputImages: edit ? 1 : 0 },
    maxImagesPerCall: backend.maxImagesPerCall,
    ...(profile.size === 'aspect_ratio' ? { sizes: aspectRatioSizes(profile.aspectRatios) } : {}),
    pricing: providerReported ? 'provider-reported' : 'price-table',
    providerOptions: profileOptions(profile),
    // References (an HF repo, a .safetensors URL, a Replicate model) only as models[].loras names them.
    ...(profile.lora
      ? { loras: { source: 'configured' as const, available: [], max: profile.lora.extraField ? 2 : 1, minWeight: profile.lora.minWeight, maxWeight: profile.lora.maxWeight } }
      : {}),
  };
}

/** The table of one prediction of a model with this profile. */
export function replicateRows(profile: ReplicateProfile, model: string, backend: string): ParamRow[] {
  const field = (param: ParamRow['param'], name: string | null): ParamRow => (name ? { param, field: name } : notTaken(param, model, backend));
  const m = profile.sizeMultiple;
  const side = (v: number) => Math.max(m, Math.round(v / m) * m);
  const sizeRows: ParamRow[] =
    profile.size === 'width_height'
      ? [
          {
            param: 'size',
            field: 'width',
            transform: (size: ImageSize, t) => {
              if (side(size.width) !== size.width || side(size.height) !== size.height) {
                t.warn(`size ${size.width}x${size.height} rounded to ${side(size.width)}x${side(size.height)} for ${model}`);
              }
              return side(size.width);
            },
          },
          { param: 'size', field: 'height', transform: (size: ImageSize) => side(size.height) },
        ]
      : profile.size === 'aspect_ratio'
        ? [aspectRatioRow(profile.aspectRatios, model)]
        : [notTaken('size', model, backend)];
  return [
    { param: 'prompt', field: 'prompt' },
    ...sizeRows,
    field('seed', profile.seedField),
    field('negative_prompt', profile.negativePromptField),
    field('steps', profile.stepsField),
    field('guidance_scale', profile.guidanceField),
    // A model without an output-format input answers what it answers; the worker converts.
    ...(profile.outputFormatField ? [{ param: 'output_format', field: profile.outputFormatField, transform: (f: string) => profile.outputFormats[f] } satisfies ParamRow] : []),
    notTaken('quality', model, backend),
    notTaken('style', model, backend),
  ];
}

/**
 * One prediction's input: the profile's extras, then the accepted provider options, then easel's
 * mapped fields, count and images (which always win).
 */
export function buildInput(
  request: BackendRequest,
  count: number,
  seed: number | undefined,
  profile: ReplicateProfile,
  options: Record<string, unknown>,
  backend: string,
  dataUri: (data: Uint8Array, mediaType: string) => string,
): { input: Record<string, unknown>; warnings: BackendWarning[] } {
  const mapped = mapParams(replicateRows(profile, request.model, backend), easelParams(request, { seed }), { base: profile.extra, options });
  const input = mapped.body;
  const warnings = mapped.warnings;
  if (count > 1 && !profile.numOutputsField) throw new Error('planned several outputs for a one-output model');
  // The count is always easel's, even where an extra named the field.
  if (profile.numOutputsField && (count > 1 || profile.numOutputsField in input)) input[profile.numOutputsField] = count;
  if (request.inputImages.length) {
    if (!profile.imageField) {
      throw new BackendError(`${request.model} on backend "${backend}" takes no input image`, { code: 'invalid_request' });
    }
    if (request.inputImages.length > 1) warnings.push(unsupported('image', `only the first input image is sent to ${request.model}`));
    const first = request.inputImages[0]!;
    input[profile.imageField] = dataUri(first.data, first.mediaType);
  }
  if (request.mask) {
    if (!profile.maskField) throw new BackendError(`${request.model} on backend "${backend}" takes no mask`, { code: 'invalid_request' });
    input[profile.maskField] = dataUri(request.mask.data, request.mask.mediaType);
  }
  const loras = request.loras ?? [];
  if (loras.length) {
    const l = profile.lora;
    if (!l || loras.length > (l.extraField ? 2 : 1)) throw new BackendError(`${request.model} on backend "${backend}" takes ${l ? (l.extraField ? 'at most 2 LoRAs' : 'one LoRA') : 'no LoRAs'}`, { code: 'invalid_request' });
    input[l.field] = loras[0]!.ref;
    input[l.scaleField] = loras[0]!.weight;
    if (loras[1]) {
      input[l.extraField!] = loras[1].ref;
      if (l.extraScaleField) input[l.extraScaleField] = loras[1].weight;
    }
  }
  return { input, warnings };
}
