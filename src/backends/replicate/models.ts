/**
 * How easel's request becomes a Replicate prediction's `input`: a profile per known model (FLUX
 * takes an aspect ratio and up to four outputs, SDXL takes width/height and a negative prompt, …),
 * a conservative default for the rest (only what was set, under the usual names, one image per
 * prediction), and config overrides on top. What a model cannot take is said in a warning.
 */
import type { BackendRequest } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { nearestAspectRatio } from '../http/media.ts';
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
}

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

const PROFILES: Record<string, ReplicateProfile> = {
  'black-forest-labs/flux-schnell': flux({ numOutputsField: 'num_outputs', maxOutputs: 4 }),
  'black-forest-labs/flux-dev': flux({ numOutputsField: 'num_outputs', maxOutputs: 4, guidanceField: 'guidance', imageField: 'image' }),
  'black-forest-labs/flux-pro': flux({ stepsField: 'steps', guidanceField: 'guidance' }),
  'black-forest-labs/flux-1.1-pro': flux({ stepsField: null }),
  'black-forest-labs/flux-1.1-pro-ultra': flux({ stepsField: null }),
  'stability-ai/sdxl': { ...DEFAULT_PROFILE, numOutputsField: 'num_outputs', maxOutputs: 4 },
  'stability-ai/stable-diffusion': { ...DEFAULT_PROFILE, numOutputsField: 'num_outputs', maxOutputs: 4 },
};

export function profileFor(model: string, overrides: ReplicateInputConfig | undefined): ReplicateProfile {
  const base = PROFILES[modelSlug(model)] ?? DEFAULT_PROFILE;
  if (!overrides) return base;
  const merged: ReplicateProfile = { ...base, extra: { ...base.extra, ...overrides.extra } };
  for (const [key, value] of Object.entries(overrides)) {
    if (key === 'extra' || value === undefined) continue;
    (merged as unknown as Record<string, unknown>)[key] = value;
  }
  if (overrides.numOutputsField === null && overrides.maxOutputs === undefined) merged.maxOutputs = 1;
  return merged;
}

/** Keys a request's provider options may not set: easel fills them. */
const RESERVED = new Set(['prompt']);

export function buildInput(
  request: BackendRequest,
  count: number,
  seed: number | undefined,
  profile: ReplicateProfile,
  backend: string,
  dataUri: (data: Uint8Array, mediaType: string) => string,
): { input: Record<string, unknown>; warnings: string[] } {
  const warnings: string[] = [];
  const input: Record<string, unknown> = { ...profile.extra, prompt: request.prompt };
  const unsupported = (what: string) => warnings.push(`${what} is not supported by ${request.model} on backend "${backend}"; ignored`);
  const put = (field: string | null, value: unknown, what: string) => {
    if (value === undefined) return;
    if (field) input[field] = value;
    else unsupported(what);
  };

  if (request.size) {
    if (profile.size === 'width_height') {
      const m = profile.sizeMultiple;
      input.width = Math.max(m, Math.round(request.size.width / m) * m);
      input.height = Math.max(m, Math.round(request.size.height / m) * m);
      if (input.width !== request.size.width || input.height !== request.size.height) {
        warnings.push(`size ${request.size.width}x${request.size.height} rounded to ${input.width}x${input.height} for ${request.model}`);
      }
    } else if (profile.size === 'aspect_ratio') {
      const { ratio, exact } = nearestAspectRatio(request.size, profile.aspectRatios);
      input.aspect_ratio = ratio;
      if (!exact) warnings.push(`size ${request.size.width}x${request.size.height} sent as the nearest aspect ratio ${ratio} for ${request.model}`);
    } else {
      unsupported('size');
    }
  }
  if (count > 1) {
    if (!profile.numOutputsField) throw new Error('planned several outputs for a one-output model');
    input[profile.numOutputsField] = count;
  }
  put(profile.seedField, seed, 'seed');
  put(profile.negativePromptField, request.negativePrompt, 'negative_prompt');
  put(profile.stepsField, request.steps, 'steps');
  put(profile.guidanceField, request.guidanceScale, 'guidance_scale');
  if (profile.outputFormatField) {
    const value = profile.outputFormats[request.outputFormat];
    if (value) input[profile.outputFormatField] = value;
  }
  if (request.quality) unsupported('quality');
  if (request.style) unsupported('style');
  if (request.inputImages.length) {
    if (!profile.imageField) {
      throw new BackendError(`${request.model} on backend "${backend}" takes no input image`, { code: 'invalid_request' });
    }
    if (request.inputImages.length > 1) warnings.push(`only the first input image is sent to ${request.model}`);
    const first = request.inputImages[0]!;
    input[profile.imageField] = dataUri(first.data, first.mediaType);
  }
  if (request.mask) {
    if (!profile.maskField) throw new BackendError(`${request.model} on backend "${backend}" takes no mask`, { code: 'invalid_request' });
    input[profile.maskField] = dataUri(request.mask.data, request.mask.mediaType);
  }
  for (const [key, value] of Object.entries(request.providerOptions)) {
    if (RESERVED.has(key)) {
      warnings.push(`provider option ${key} is not allowed on backend "${backend}"; ignored`);
      continue;
    }
    if (value !== undefined) input[key] = value;
  }
  return { input, warnings };
}
