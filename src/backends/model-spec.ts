/**
 * What one model accepts, declared by the backend that serves it (`ImageBackend.modelSpec(id)`),
 * narrowed by config (`models[]`), and read by admission, routing, the batch pump and the backend
 * alike, so a request a model cannot take is refused before any work instead of failing on a worker.
 *
 * Everything here is pure: no I/O, no backend types. The checks answer a `SpecProblem` (the field and
 * the sentence) and leave the error's shape to the caller.
 */
import { z } from 'zod';
import type { ImageRequest, ImageSize } from '../core/image-request.ts';
import type { JobKind } from '../core/job.ts';
import { TIERS } from '../routing/config.ts';
import type { Tier } from '../routing/config.ts';

export interface ModelCapabilities {
  /** Text-to-image. */
  generate: boolean;
  /** Takes input images with a prompt (edits, img2img). */
  edit: boolean;
  /** Takes a mask with the first input image (inpainting). */
  mask: boolean;
  /** Image-to-image variations with no prompt. */
  variation: boolean;
  /** How many input images one call may take (0 when the model takes none). */
  maxInputImages: number;
}

/** The sizes a model offers: an explicit list, or a rule for models that take free sizes. */
export type SizeRule =
  | { kind: 'list'; sizes: readonly string[]; /** `auto` (no size) is accepted too */ auto?: boolean }
  | { kind: 'range'; minSide: number; maxSide: number; multipleOf?: number; maxPixels?: number; /** widest ratio either way, e.g. 3 for 1:3–3:1 */ maxAspect?: number };

/** How an image of the model is costed. */
export type PricingKind =
  /** List prices in the price table (`src/pricing`, `pricing.overrides`). */
  | 'price-table'
  /** The provider reports the cost of each call (the table is the estimate). */
  | 'provider-reported'
  /** Self-hosted: measured GPU time × the backend's $/GPU-hour (`costModel`). */
  | 'gpu-time';

/** A LoRA adapter a model takes: the public name and what the backend sends for it. */
export interface LoraSpec {
  name: string;
  /** The backend's own reference (a file name, a URL, a provider path); defaults to the name. */
  ref?: string;
}

/**
 * How a model takes LoRA adapters (absent: it takes none).
 *
 * - `discovered`: the backend lists what its servers have (ComfyUI's LoraLoader, A1111's
 *   `/sdapi/v1/loras`, sd-server's `/sdapi/v1/loras`); `models[].loras` may narrow that list and
 *   rename entries. A backend that can look again offers `refreshLoras()` (admission asks on a miss).
 * - `configured`: the provider takes references (a Replicate `lora_weights` path, a fal URL, a path on
 *   a vLLM-Omni server) that nobody can list: only what `models[].loras` names is offered, so a caller
 *   can never point a provider at an adapter the operator did not choose.
 */
export interface LoraSupport {
  source: 'discovered' | 'configured';
  /** What is offered (for `configured`, the registry fills it from config). */
  available: readonly LoraSpec[];
  /** Most adapters one request may combine (default {@link MAX_LORAS}). */
  max?: number;
  /** Weights the provider takes (default: the request's own bounds). */
  minWeight?: number;
  maxWeight?: number;
}

/** Most LoRA adapters one request may carry, and the bounds of a weight and a name. */
export const MAX_LORAS = 8;
export const LORA_WEIGHT_MIN = -4;
export const LORA_WEIGHT_MAX = 4;
export const MAX_LORA_NAME_CHARS = 200;

/** A LoRA a request asks for (`loras: [{name, weight}]`; the weight defaults to 1). */
export interface RequestedLora {
  name: string;
  weight: number;
}

/** A LoRA as a backend receives it: resolved to the backend's own reference. */
export interface ResolvedLora extends RequestedLora {
  ref: string;
}

/** An entry of `models[].loras`: a name (offered as is) or a name mapped to the provider's reference. */
export type LoraConfigEntry = string | { name: string; ref?: string };

/** What a backend declares per model id; the registry fills what it leaves out. */
export interface BackendModelSpec {
  capabilities: ModelCapabilities;
  /** Most images one backend call returns; the worker splits larger `n`. */
  maxImagesPerCall: number;
  /** Sizes offered; undefined: any size within the server's limits. */
  sizes?: SizeRule;
  /** Quality words the model understands; undefined: the model ignores quality (no refusal). */
  qualities?: readonly string[];
  /** Maps the tier qualities aliases ask for (`low`, `medium`, `high`) onto this model's words; undefined drops it. */
  qualityFor?: (quality: string) => string | undefined;
  /** Style words the model understands; undefined: styles are ignored with a warning. */
  styles?: readonly string[];
  maxPromptChars?: number;
  tier?: Tier;
  textInImage?: boolean;
  pricing: PricingKind;
  /**
   * The provider options this model accepts: a strict zod object (unknown keys are refused). Keys that
   * would change what is priced, moderated or limited are refused before this schema is consulted.
   */
  providerOptions: z.ZodType<Record<string, unknown>>;
  /** LoRA adapters the model takes (absent: none). */
  loras?: LoraSupport;
}

/** A model as admission and routing see it: the backend's declaration with config and defaults applied. */
export interface ModelSpec extends BackendModelSpec {
  tier: Tier;
  textInImage: boolean;
}

export interface SpecProblem {
  /** The request field at fault (`model`, `size`, `provider_options.n`, …). */
  param: string;
  message: string;
  /** A stable code for the kind of refusal. */
  code: 'unsupported_capability' | 'invalid_value' | 'unknown_parameter' | 'provider_option_not_allowed' | 'unknown_lora';
}

/** What a job asks of a model besides its request fields. */
export interface Need {
  kind: JobKind;
  /** Input images (edits, variations, img2img refinements). */
  inputImages: number;
  mask: boolean;
}

/** No provider options at all (the default for models that take none). */
export const noProviderOptions = z.object({}).strict();

/**
 * Fills what a backend left out: tier and text rendering inferred from the model id, unless config
 * says; the LoRAs narrowed (or, for providers that take references, supplied) by `models[].loras`.
 */
export function completeSpec(
  spec: BackendModelSpec,
  modelId: string,
  overrides: { tier?: Tier; textInImage?: boolean; sizes?: readonly string[]; loras?: readonly LoraConfigEntry[] } = {},
): ModelSpec {
  const loras = spec.loras ? configuredLoras(spec.loras, overrides.loras) : undefined;
  return {
    ...spec,
    ...(overrides.sizes ? { sizes: { kind: 'list', sizes: overrides.sizes } as SizeRule } : {}),
    ...(loras ? { loras } : {}),
    tier: overrides.tier ?? spec.tier ?? inferTier(modelId),
    textInImage: overrides.textInImage ?? spec.textInImage ?? inferTextInImage(modelId),
  };
}

/**
 * A model's LoRAs with its `models[].loras` applied. Discovered: the allowlist keeps (and may rename)
 * only entries the backend found, by name or by reference; no list keeps everything found.
 * Configured: the list is everything offered (none without one).
 */
export function configuredLoras(support: LoraSupport, entries: readonly LoraConfigEntry[] | undefined): LoraSupport {
  if (!entries) return support.source === 'configured' ? { ...support, available: [] } : support;
  const wanted = entries.map((e) => (typeof e === 'string' ? { name: e } : e));
  if (support.source === 'configured') return { ...support, available: wanted.map((e) => ({ name: e.name, ref: e.ref ?? e.name })) };
  const available: LoraSpec[] = [];
  for (const e of wanted) {
    const key = e.ref ?? e.name;
    const found = support.available.find((l) => l.name === key || (l.ref ?? l.name) === key);
    if (found) available.push({ name: e.name, ref: found.ref ?? found.name });
  }
  return { ...support, available };
}

/** A model's tier from its id when neither the backend nor config says. */
export function inferTier(modelId: string): Tier {
  const m = modelId.toLowerCase();
  if (/dall-e-2|turbo|schnell|lightning|\blcm\b|-mini|fast|flash|tiny|sd-?1[.-]5/.test(m)) return 'preview';
  if (/ultra|flux-?pro|flux-1\.1-pro|^gpt-image|chatgpt-image|imagen-4\.0-generate|sd3\.5-large$|kontext-max|ideogram/.test(m)) return 'premium';
  return 'standard';
}

/** Whether a model renders legible text, from its id when neither the backend nor config says. */
export function inferTextInImage(modelId: string): boolean {
  return /gpt-image|chatgpt-image|dall-e-3|ideogram|imagen-4|flux-?(pro|dev|1\.1)|sd3|recraft|kontext/.test(modelId.toLowerCase());
}

export const isTier = (v: unknown): v is Tier => (TIERS as readonly unknown[]).includes(v);

/** The one capability check: can this model do this kind of job with these inputs? */
export function capabilityProblem(model: string, spec: Pick<ModelSpec, 'capabilities'>, need: Need): SpecProblem | undefined {
  const caps = spec.capabilities;
  const refuse = (what: string): SpecProblem => ({ param: 'model', code: 'unsupported_capability', message: `Model '${model}' ${what}.` });
  if (need.kind === 'generation' && !caps.generate) return refuse('cannot generate images from a prompt alone');
  if (need.kind === 'variation') {
    if (!caps.variation) return refuse('cannot do variations');
    if (need.inputImages > 1) return refuse(`takes one image for a variation, not ${need.inputImages}`);
  }
  if (need.kind === 'edit') {
    if (!caps.edit || caps.maxInputImages === 0) return refuse('cannot do edits (it takes no input images)');
    if (need.mask && !caps.mask) return refuse('cannot do edits with a mask');
    if (need.inputImages > caps.maxInputImages) return refuse(`cannot do edits with ${need.inputImages} input images (at most ${caps.maxInputImages})`);
  }
  return undefined;
}

const sizeText = (s: ImageSize) => `${s.width}x${s.height}`;

/** Why a size is not offered by a rule; undefined when it is. */
export function sizeProblem(rule: SizeRule | undefined, size: ImageSize | undefined): string | undefined {
  if (!rule) return undefined;
  if (!size) return rule.kind === 'list' && rule.auto === false ? `a size is required; use one of ${rule.sizes.join(', ')}` : undefined;
  if (rule.kind === 'list') {
    if (rule.sizes.includes(sizeText(size))) return undefined;
    return `${sizeText(size)} is not offered; use one of ${rule.sizes.join(', ')}${rule.auto === false ? '' : ' or auto'}`;
  }
  const { width: w, height: h } = size;
  if (Math.min(w, h) < rule.minSide || Math.max(w, h) > rule.maxSide) return `${sizeText(size)} is not offered: each side must be between ${rule.minSide} and ${rule.maxSide} pixels`;
  if (rule.multipleOf && (w % rule.multipleOf || h % rule.multipleOf)) return `${sizeText(size)} is not offered: both sides must be multiples of ${rule.multipleOf}`;
  if (rule.maxAspect && Math.max(w / h, h / w) > rule.maxAspect) return `${sizeText(size)} is not offered: the aspect ratio must be between 1:${rule.maxAspect} and ${rule.maxAspect}:1`;
  if (rule.maxPixels && w * h > rule.maxPixels) return `${sizeText(size)} is not offered: at most ${rule.maxPixels} pixels`;
  return undefined;
}

/** Checks the request fields a spec constrains (size, quality, style, prompt length). */
export function requestProblem(model: string, spec: ModelSpec, request: Pick<ImageRequest, 'size' | 'quality' | 'style' | 'prompt'>, kind: JobKind): SpecProblem | undefined {
  const size = sizeProblem(spec.sizes, request.size);
  if (size) return { param: 'size', code: 'invalid_value', message: `Invalid value for 'size' on model '${model}': ${size}.` };
  if (request.quality !== undefined && spec.qualities && !spec.qualities.includes(request.quality) && spec.qualityFor?.(request.quality) === undefined) {
    return { param: 'quality', code: 'invalid_value', message: `Invalid value for 'quality' on model '${model}': "${request.quality}" is not offered; use one of ${spec.qualities.join(', ')}.` };
  }
  if (request.style !== undefined && spec.styles && !spec.styles.includes(request.style)) {
    return { param: 'style', code: 'invalid_value', message: `Invalid value for 'style' on model '${model}': "${request.style}" is not offered; use one of ${spec.styles.join(', ')}.` };
  }
  if (kind !== 'variation' && spec.maxPromptChars !== undefined && request.prompt.length > spec.maxPromptChars) {
    return { param: 'prompt', code: 'invalid_value', message: `Invalid value for 'prompt' on model '${model}': it is ${request.prompt.length} characters; this model takes at most ${spec.maxPromptChars}.` };
  }
  return undefined;
}

/**
 * The LoRAs a request asks for, against what the model offers: a model that takes none is refused
 * naming the model; too many, a name it does not offer (`loras[i].name`), a name twice or a weight
 * outside what the provider takes (`loras[i].weight`) are refused naming the entry.
 */
export function loraProblem(model: string, spec: Pick<ModelSpec, 'loras'>, loras: readonly RequestedLora[] | undefined): SpecProblem | undefined {
  if (!loras || loras.length === 0) return undefined;
  const support = spec.loras;
  if (!support) return { param: 'loras', code: 'unsupported_capability', message: `Model '${model}' takes no LoRA adapters.` };
  const max = Math.min(support.max ?? MAX_LORAS, MAX_LORAS);
  if (loras.length > max) return { param: 'loras', code: 'invalid_value', message: `Invalid value for 'loras': model '${model}' takes at most ${max} LoRA adapter${max === 1 ? '' : 's'} per request, got ${loras.length}.` };
  const seen = new Set<string>();
  for (const [i, l] of loras.entries()) {
    const param = `loras[${i}].name`;
    if (!support.available.some((a) => a.name === l.name)) {
      const offered = support.available.map((a) => a.name);
      const list = offered.length === 0 ? 'it offers none right now' : `it offers ${offered.slice(0, 20).join(', ')}${offered.length > 20 ? `, … (${offered.length} in all; GET /v1/models lists them)` : ''}`;
      return { param, code: 'unknown_lora', message: `Unknown LoRA '${shorten(l.name)}' for model '${model}': ${list}.` };
    }
    if (seen.has(l.name)) return { param, code: 'invalid_value', message: `Invalid value for '${param}': LoRA '${shorten(l.name)}' is listed twice.` };
    seen.add(l.name);
    const lo = support.minWeight ?? LORA_WEIGHT_MIN;
    const hi = support.maxWeight ?? LORA_WEIGHT_MAX;
    if (l.weight < lo || l.weight > hi) return { param: `loras[${i}].weight`, code: 'invalid_value', message: `Invalid value for 'loras[${i}].weight' on model '${model}': it takes weights from ${lo} to ${hi}, got ${l.weight}.` };
  }
  return undefined;
}

/** The request's LoRAs as the backend receives them (each resolved to its reference; unknown ones keep their name). */
export function resolveLoras(spec: Pick<ModelSpec, 'loras'>, loras: readonly RequestedLora[] | undefined): ResolvedLora[] | undefined {
  if (!loras || loras.length === 0) return undefined;
  return loras.map((l) => {
    const found = spec.loras?.available.find((a) => a.name === l.name);
    return { name: l.name, weight: l.weight, ref: found?.ref ?? found?.name ?? l.name };
  });
}

/** A stable text of a LoRA set (order kept: stacking order can matter), for batch and affinity keys. */
export function loraSetKey(loras: readonly { ref: string; weight: number }[] | undefined): string {
  return loras && loras.length ? loras.map((l) => `${l.ref}@${l.weight}`).join('|') : '';
}

const shorten = (s: string) => (s.length > 80 ? `${s.slice(0, 80)}…` : s);

/**
 * Provider option keys that would change what is priced, moderated or limited, under the names the
 * providers easel drives use for them. They are refused whatever a backend's schema says: the
 * request's own fields (which admission prices, moderates and limits) are the only way to set them.
 */
const GUARDED: Record<string, string> = {};
const guard = (what: string, keys: string[]) => keys.forEach((k) => (GUARDED[k.toLowerCase()] = what));
guard('the model', ['model', 'models', 'version', 'model_id', 'modelId', 'model_name', 'checkpoint', 'ckpt_name', 'sd_model_checkpoint', 'checkpoint_url', 'deployment']);
guard('how many images are made', ['n', 'num_images', 'num_outputs', 'numberOfImages', 'number_of_images', 'sampleCount', 'sample_count', 'batch_size', 'batchSize', 'n_iter', 'batch_count', 'count', 'samples', 'num_images_per_prompt', 'image_count']);
guard('the size', ['size', 'width', 'height', 'image_size', 'imageSize', 'aspect_ratio', 'aspectRatio', 'resolution', 'megapixels', 'output_size', 'dimensions', 'upscale', 'upscale_factor', 'hr_scale', 'enable_hr']);
guard('the quality', ['quality', 'hd']);
guard('the steps', ['steps', 'num_inference_steps', 'num_steps', 'sampling_steps']);
guard('the prompt', ['prompt', 'prompts', 'negative_prompt', 'negativePrompt', 'text_prompts', 'messages', 'system_prompt', 'prompt_2', 'negative_prompt_2']);
guard('the input images', ['image', 'images', 'image_url', 'image_urls', 'input_image', 'input_images', 'init_image', 'init_images', 'mask', 'mask_image', 'mask_url', 'reference_images', 'control_image', 'image_prompt', 'image_input']);
guard('the provider’s moderation', ['safety_checker', 'disable_safety_checker', 'enable_safety_checker', 'safety_tolerance', 'safety_filter_level', 'safetySetting', 'safety_settings', 'personGeneration', 'person_generation', 'moderation_level', 'nsfw', 'allow_nsfw']);
guard('streaming', ['stream', 'partial_images']);
guard('the answer format', ['response_format', 'output_format']);
guard('the LoRA adapters', ['loras', 'lora', 'lora_weights', 'lora_scale', 'adapters', 'extra_lora', 'extra_lora_scale', 'hf_lora', 'lora_path', 'lora_name', 'lora_nickname']);

/** Deepest nesting accepted in provider options (objects and arrays). */
export const MAX_PROVIDER_OPTION_DEPTH = 8;

/**
 * Refuses provider options that are guarded (at any depth: a provider may nest its input), too
 * deeply nested, or not in the model's strict schema. Returns the parsed options on success.
 */
export function providerOptionsProblem(model: string, spec: Pick<ModelSpec, 'providerOptions'>, options: Record<string, unknown> | undefined): SpecProblem | undefined {
  if (!options || Object.keys(options).length === 0) return undefined;
  const found = guardedOptionsProblem(options);
  if (found) return found;
  const parsed = spec.providerOptions.safeParse(options);
  if (parsed.success) return undefined;
  const issue = parsed.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = issue.keys[0]!;
    const param = ['provider_options', ...issue.path.map(String), key].join('.');
    return { param, code: 'unknown_parameter', message: `Unrecognized provider option '${param}' for model '${model}'.` };
  }
  const param = ['provider_options', ...issue.path.map(String)].join('.');
  return { param, code: 'invalid_value', message: `Invalid value for '${param}' on model '${model}': ${issue.message}.` };
}

/** The model-independent part: guarded keys (at any depth) and nesting depth. */
export function guardedOptionsProblem(options: Record<string, unknown> | undefined): SpecProblem | undefined {
  return options ? guardedKey(options, 'provider_options', 0) : undefined;
}

function guardedKey(value: unknown, path: string, depth: number): SpecProblem | undefined {
  if (depth > MAX_PROVIDER_OPTION_DEPTH) {
    return { param: path, code: 'invalid_value', message: `Invalid value for '${path}': provider options may nest at most ${MAX_PROVIDER_OPTION_DEPTH} levels deep.` };
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const p = guardedKey(value[i], `${path}[${i}]`, depth + 1);
      if (p) return p;
    }
    return undefined;
  }
  if (value === null || typeof value !== 'object') return undefined;
  for (const [key, v] of Object.entries(value)) {
    const here = `${path}.${key}`;
    const what = Object.hasOwn(GUARDED, key.toLowerCase()) ? GUARDED[key.toLowerCase()] : undefined;
    if (what) {
      return {
        param: here,
        code: 'provider_option_not_allowed',
        message: `'${here}' is not allowed: it would change ${what}, which easel prices, moderates and limits from the request's own fields. Use the top-level field instead.`,
      };
    }
    const p = guardedKey(v, here, depth + 1);
    if (p) return p;
  }
  return undefined;
}

/** Whether a key is guarded (backends use it to keep provider options from overriding mapped fields). */
export const isGuardedOption = (key: string): boolean => Object.hasOwn(GUARDED, key.toLowerCase());

/**
 * Provider options for a backend that has not declared its own yet: any key that is not guarded.
 * Prefer a strict object of the keys the provider takes.
 */
export const anyProviderOptions: z.ZodType<Record<string, unknown>> = z.record(z.string(), z.unknown());

/** A spec that gives every model of a backend the backend's own capabilities. */
export function uniformSpec(caps: ModelCapabilities & { maxImagesPerCall: number }, pricing: PricingKind, providerOptions: z.ZodType<Record<string, unknown>> = anyProviderOptions): BackendModelSpec {
  const { maxImagesPerCall, ...capabilities } = caps;
  return { capabilities: { ...capabilities }, maxImagesPerCall, pricing, providerOptions };
}

/**
 * The first guarded (or too deeply nested) key anywhere in provider options, as a problem; undefined
 * when there is none. Backends use it to drop such options where a request is built (see
 * `src/backends/provider-options.ts`), whatever admission did.
 */
export function guardedOptionProblem(options: Record<string, unknown>): SpecProblem | undefined {
  return guardedKey(options, 'provider_options', 0);
}
