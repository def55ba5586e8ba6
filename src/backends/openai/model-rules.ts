/**
 * OpenAI's per-model rules, applied before a call so a request OpenAI would refuse fails clearly
 * without a round trip (or is adapted, with a warning), and a request OpenAI would take in pieces is
 * split:
 *
 * - dall-e-2: n 1–10; 256/512/1024 squares; quality `standard` only; prompt ≤ 1000 chars; edits
 *   take one image; the only model with variations.
 * - dall-e-3: n = 1 (larger n is split into parallel calls); 1024x1024, 1792x1024, 1024x1792;
 *   quality standard/hd; style vivid/natural; prompt ≤ 4000; returns `revised_prompt`; no edits.
 * - GPT image (gpt-image-1, -1-mini, -1.5, chatgpt-image-latest): n 1–10; 1024x1024, 1536x1024,
 *   1024x1536 or auto; quality low/medium/high/auto; always base64, never a URL; prompt ≤ 32000;
 *   edits take up to 16 images; transparent backgrounds need png or webp; no `input_fidelity` on mini.
 * - gpt-image-2: as above, but any size whose sides are multiples of 16, aspect 1:3–3:1, at most
 *   3840x2160.
 *
 * DALL·E is asked for `b64_json` (and GPT image models never for a response format) by the backend
 * itself; `revised_prompt` is passed through where it comes back.
 */
import { z } from 'zod';
import type { BackendCapabilities, BackendRequest, BackendWarning } from '../image-backend.ts';
import { compatibility, unsupported } from '../warnings.ts';
import { uniformSpec } from '../model-spec.ts';
import type { BackendModelSpec, PricingKind } from '../model-spec.ts';
import { BackendError } from '../image-backend.ts';

export type OpenAIFamily = 'dall-e-2' | 'dall-e-3' | 'gpt-image' | 'gpt-image-2' | 'other';

export function openaiFamily(model: string): OpenAIFamily {
  if (model === '' || model.startsWith('dall-e-2')) return 'dall-e-2';
  if (model.startsWith('dall-e-3')) return 'dall-e-3';
  if (model.startsWith('gpt-image-2')) return 'gpt-image-2';
  if (model.startsWith('gpt-image') || model.startsWith('chatgpt-image')) return 'gpt-image';
  return 'other';
}

export interface OpenAIModelRule {
  maxN: number;
  maxPromptChars: number;
  /** Allowed `WxH` sizes; undefined means the flexible gpt-image-2 rule. */
  sizes?: string[];
  qualities: string[];
  styles?: string[];
  edit: boolean;
  maxEditImages: number;
  variation: boolean;
  /** Answers with a URL unless asked for b64_json. */
  urlByDefault: boolean;
  revisedPrompt: boolean;
}

const GPT_SIZES = ['1024x1024', '1536x1024', '1024x1536'];

export const OPENAI_MODEL_RULES: Record<Exclude<OpenAIFamily, 'other'>, OpenAIModelRule> = {
  'dall-e-2': {
    maxN: 10, maxPromptChars: 1000, sizes: ['256x256', '512x512', '1024x1024'], qualities: ['standard'],
    edit: true, maxEditImages: 1, variation: true, urlByDefault: true, revisedPrompt: false,
  },
  'dall-e-3': {
    maxN: 1, maxPromptChars: 4000, sizes: ['1024x1024', '1792x1024', '1024x1792'], qualities: ['standard', 'hd'],
    styles: ['vivid', 'natural'], edit: false, maxEditImages: 0, variation: false, urlByDefault: true, revisedPrompt: true,
  },
  'gpt-image': {
    maxN: 10, maxPromptChars: 32000, sizes: GPT_SIZES, qualities: ['low', 'medium', 'high', 'auto'],
    edit: true, maxEditImages: 16, variation: false, urlByDefault: false, revisedPrompt: false,
  },
  'gpt-image-2': {
    maxN: 10, maxPromptChars: 32000, qualities: ['low', 'medium', 'high', 'auto'],
    edit: true, maxEditImages: 16, variation: false, urlByDefault: false, revisedPrompt: false,
  },
};

/** Quality words of one family that mean a quality of another. */
const QUALITY_MAP: Record<string, Record<string, string | null>> = {
  'dall-e-2': { hd: null, high: null, medium: null, low: null, auto: null },
  'dall-e-3': { high: 'hd', medium: 'standard', low: 'standard', auto: null },
  'gpt-image': { hd: 'high', standard: 'medium' },
  'gpt-image-2': { hd: 'high', standard: 'medium' },
};

export interface RuledRequest {
  request: BackendRequest;
  /** Images per call: more than one entry when the model takes fewer images per call than asked. */
  calls: number[];
  warnings: BackendWarning[];
}

/** Whether `auto` means on: the backend talks to OpenAI itself. */
export function rulesApply(mode: 'auto' | 'on' | 'off', baseUrl: string): boolean {
  if (mode !== 'auto') return mode === 'on';
  try {
    return new URL(baseUrl).hostname === 'api.openai.com';
  } catch {
    return false;
  }
}

export function gptImage2SizeProblem(width: number, height: number): string | undefined {
  if (width % 16 || height % 16) return 'both sides must be multiples of 16';
  const ratio = width / height;
  if (ratio > 3 || ratio < 1 / 3) return 'the aspect ratio must be between 1:3 and 3:1';
  if (Math.max(width, height) > 3840 || width * height > 3840 * 2160) return 'it must be at most 3840x2160';
  return undefined;
}

/** Applies the rules of `request.model`'s family; unknown models pass through untouched. */
export function applyOpenAIModelRules(request: BackendRequest, backend: string): RuledRequest {
  const family = openaiFamily(request.model);
  if (family === 'other') return { request, calls: [request.n], warnings: [] };
  const rule = OPENAI_MODEL_RULES[family];
  const model = request.model || 'dall-e-2';
  const refuse = (message: string, param?: string) =>
    new BackendError(`${message} (model ${model} on backend "${backend}")${param ? ` [param '${param}']` : ''}`, { code: 'invalid_request' });
  const warnings: BackendWarning[] = [];
  const out: BackendRequest = { ...request, providerOptions: { ...request.providerOptions } };

  if (request.kind !== 'variation' && request.prompt.length > rule.maxPromptChars) {
    throw refuse(`the prompt is ${request.prompt.length} characters; at most ${rule.maxPromptChars} are allowed`, 'prompt');
  }
  if (request.kind === 'variation' && !rule.variation) throw refuse('variations are only offered by dall-e-2', 'model');
  if (request.kind === 'edit') {
    if (!rule.edit) throw refuse(`${model} does not support edits`, 'model');
    if (request.inputImages.length > rule.maxEditImages) {
      throw refuse(`at most ${rule.maxEditImages} input image${rule.maxEditImages === 1 ? '' : 's'} can be edited at once`, 'image');
    }
  }

  if (request.size) {
    const size = `${request.size.width}x${request.size.height}`;
    if (rule.sizes) {
      const allowed = request.kind === 'edit' && family === 'dall-e-2' ? ['256x256', '512x512', '1024x1024'] : rule.sizes;
      if (!allowed.includes(size)) throw refuse(`size ${size} is not offered; use one of ${allowed.join(', ')}${family === 'gpt-image' ? ' or auto' : ''}`, 'size');
    } else {
      const problem = gptImage2SizeProblem(request.size.width, request.size.height);
      if (problem) throw refuse(`size ${size} is not offered: ${problem}`, 'size');
    }
  }

  if (request.quality !== undefined) {
    const q = request.quality.toLowerCase();
    if (!rule.qualities.includes(q)) {
      const mapped = QUALITY_MAP[family]?.[q];
      if (mapped === undefined) throw refuse(`quality "${request.quality}" is not offered; use one of ${rule.qualities.join(', ')}`, 'quality');
      if (mapped === null) {
        if (q !== 'auto') warnings.push(unsupported('quality', `quality "${request.quality}" is not offered by ${model} on backend "${backend}"; the model's default is used`));
        delete out.quality;
      } else {
        warnings.push(compatibility('quality', `quality "${request.quality}" is sent as "${mapped}" to ${model} on backend "${backend}"`));
        out.quality = mapped;
      }
    } else {
      out.quality = q;
    }
  }

  if (request.style !== undefined && rule.styles && !rule.styles.includes(request.style)) {
    throw refuse(`style "${request.style}" is not offered; use one of ${rule.styles.join(', ')}`, 'style');
  }

  if ((family === 'gpt-image' || family === 'gpt-image-2') && request.background === 'transparent' && request.outputFormat === 'jpeg') {
    throw refuse('a transparent background needs output_format png or webp', 'background');
  }
  if (model.startsWith('gpt-image-1-mini') && 'input_fidelity' in out.providerOptions) {
    delete out.providerOptions.input_fidelity;
    warnings.push(unsupported('provider_options.input_fidelity', `input_fidelity is not offered by ${model} on backend "${backend}"; ignored`));
  }
  if (request.outputCompression !== undefined && request.outputFormat === 'png') {
    // Compression applies to jpeg and webp only; the worker re-encodes anyway.
    delete out.outputCompression;
  }

  const calls: number[] = [];
  for (let left = request.n; left > 0; left -= rule.maxN) calls.push(Math.min(rule.maxN, left));
  return { request: out, calls, warnings };
}

/** OpenAI's own provider options: the ones its Images API takes beyond easel's request fields. */
export const openaiProviderOptionsSchema = z
  .object({
    moderation: z.enum(['low', 'auto']).optional(),
    input_fidelity: z.enum(['high', 'low']).optional(),
  })
  .strict();

/** DALL·E takes only `moderation` (`input_fidelity` is for GPT image edits). */
const dalleProviderOptionsSchema = openaiProviderOptionsSchema.pick({ moderation: true });

/**
 * The spec of one model behind an `openai` backend: with the model rules on (api.openai.com, or
 * `modelRules: on`), the family's sizes, qualities, styles, prompt length and edit/variation support;
 * otherwise (LocalAI, another easel, an unknown model) what the backend's config declares.
 */
export function openaiModelSpec(model: string, backend: BackendCapabilities, rulesOn: boolean, pricing: PricingKind): BackendModelSpec {
  const family = openaiFamily(model);
  if (!rulesOn || family === 'other') {
    return uniformSpec(backend, pricing, openaiProviderOptionsSchema);
  }
  const rule = OPENAI_MODEL_RULES[family];
  const edit = backend.edit && rule.edit;
  const map = QUALITY_MAP[family] ?? {};
  return {
    capabilities: {
      generate: backend.generate,
      edit,
      mask: edit && backend.mask,
      variation: backend.variation && rule.variation,
      maxInputImages: edit ? Math.min(backend.maxInputImages, rule.maxEditImages) : 0,
    },
    maxImagesPerCall: backend.maxImagesPerCall,
    sizes: rule.sizes ? { kind: 'list', sizes: rule.sizes, auto: true } : { kind: 'range', minSide: 16, maxSide: 3840, multipleOf: 16, maxPixels: 3840 * 2160, maxAspect: 3 },
    qualities: rule.qualities,
    qualityFor: (q) => (rule.qualities.includes(q) ? q : (map[q] ?? undefined)),
    ...(rule.styles ? { styles: rule.styles } : {}),
    maxPromptChars: rule.maxPromptChars,
    pricing,
    providerOptions: model.startsWith('gpt-image') || model.startsWith('chatgpt-image') ? openaiProviderOptionsSchema : dalleProviderOptionsSchema,
  };
}
