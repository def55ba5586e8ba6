/**
 * Presets of the `openai` backend for the OpenAI-compatible image servers people run on their own
 * GPUs (PROTOCOLS.md §11 A1–A4). They all answer `POST /v1/images/generations` in OpenAI's shape, so
 * the SDK's transport, retries, multipart and error handling serve them unchanged; what differs is
 * data: which of easel's fields each takes and under what name, where it says it is ready, what it
 * can do besides generating, and how (or whether) it takes a LoRA.
 *
 *   vllm-omni   negative_prompt, num_inference_steps (1–200), guidance_scale (0–20), seed; one LoRA
 *               per request as `lora: {name, path, scale}` (a path on the server, from models[].loras;
 *               a JSON string on edits); edits without masks (it names the mask `mask_image`); /health.
 *   sglang      width/height besides size, and always `response_format: b64_json` (its declared
 *               default is a URL it can only serve with cloud storage); negative_prompt,
 *               num_inference_steps, guidance_scale, seed; edits with masks; /health. No LoRA: its
 *               `set_lora` is server state shared by every request in flight, which one job cannot
 *               change safely while others run.
 *   localai     `step` (not steps), the negative prompt after a `|` in the prompt, seed, response_format
 *               as the string `b64_json`; no guidance (model YAML only), no edits or variations (it
 *               has no /v1/images/edits); /readyz. No per-request LoRA (model YAML).
 *   sdcpp       stable-diffusion.cpp's sd-server: only prompt, n, size and output format on the OpenAI
 *               route, so the rest rides in the prompt as `<sd_cpp_extra_args>{…}</sd_cpp_extra_args>`
 *               (negative_prompt, seed, sample_params.sample_steps, sample_params.guidance.txt_cfg,
 *               lora [{path, multiplier}]); LoRAs discovered at /sdapi/v1/loras; health: /v1/models.
 */
import type { BackendRequest, BackendWarning } from '../image-backend.ts';
import { compatibility, unsupported } from '../warnings.ts';

export const ENGINE_PRESETS = ['vllm-omni', 'sglang', 'localai', 'sdcpp'] as const;
export type EnginePresetName = (typeof ENGINE_PRESETS)[number];

export interface EnginePreset {
  name: EnginePresetName;
  /** What the engine is called in messages. */
  label: string;
  /** GET path from the server's origin that answers 2xx when it can take work. */
  healthPath: string;
  capabilities: { edit: boolean; mask: boolean; variation: boolean; maxInputImages: number };
  /** How it takes LoRAs: not at all, references config names (server paths), or files it lists. */
  loras: 'none' | 'configured' | 'discovered';
  maxLoras?: number;
  /** GET path from the origin listing `[{name, path}]` (discovered LoRAs). */
  loraListPath?: string;
  /**
   * Writes easel's fields onto the body under the engine's names. `body` holds OpenAI's fields as
   * the backend built them (model, prompt, n, size, quality, …); what the engine does not take is
   * removed, with a warning where the request set it.
   */
  map(request: BackendRequest, body: Record<string, unknown>, warn: (w: BackendWarning) => void): void;
}

const drop = (body: Record<string, unknown>, keys: readonly string[], request: BackendRequest, label: string, warn: (w: BackendWarning) => void) => {
  for (const key of keys) {
    if (!(key in body)) continue;
    const value = body[key];
    delete body[key];
    // The output format and compression are the worker's to convert; `auto` backgrounds ask nothing.
    if (key === 'output_format' || key === 'output_compression' || (key === 'background' && value === 'auto')) continue;
    warn(unsupported(key, `${key} is not supported by ${label}${request.model ? ` (${request.model})` : ''}; ignored`));
  }
};

/** A number within the engine's bounds; out of them it is clamped, and the warning says so. */
function bounded(value: number | undefined, lo: number, hi: number, setting: string, label: string, warn: (w: BackendWarning) => void): number | undefined {
  if (value === undefined) return undefined;
  const v = Math.min(hi, Math.max(lo, value));
  if (v !== value) warn(compatibility(setting, `${setting} ${value} is outside ${label}'s ${lo}–${hi}; sent as ${v}`));
  return v;
}

const vllmOmni: EnginePreset = {
  name: 'vllm-omni',
  label: 'vLLM-Omni',
  healthPath: '/health',
  // Edits take images; the mask is `mask_image` there, which OpenAI's multipart does not send.
  capabilities: { edit: true, mask: false, variation: false, maxInputImages: 16 },
  loras: 'configured',
  maxLoras: 1,
  map(request, body, warn) {
    drop(body, ['quality', 'style', 'background', 'user'], request, this.label, warn);
    if (request.kind === 'edit' && body.output_compression !== undefined) delete body.output_compression;
    body.response_format = 'b64_json';
    if (request.negativePrompt) body.negative_prompt = request.negativePrompt;
    const steps = bounded(request.steps, 1, 200, 'steps', this.label, warn);
    if (steps !== undefined) body.num_inference_steps = steps;
    const cfg = bounded(request.guidanceScale, 0, 20, 'guidance_scale', this.label, warn);
    if (cfg !== undefined) body.guidance_scale = cfg;
    if (request.seed !== undefined) body.seed = request.seed;
    const lora = request.loras?.[0];
    if (lora) {
      const value = { name: lora.name, path: lora.ref, scale: lora.weight };
      // Multipart edits take it as a JSON string (docs/serving/image_edit_api.md).
      body.lora = request.kind === 'edit' ? JSON.stringify(value) : value;
    }
  },
};

const sglang: EnginePreset = {
  name: 'sglang',
  label: 'SGLang Diffusion',
  healthPath: '/health',
  capabilities: { edit: true, mask: true, variation: false, maxInputImages: 16 },
  loras: 'none',
  map(request, body, warn) {
    drop(body, ['user'], request, this.label, warn);
    body.response_format = 'b64_json';
    if (request.size && request.kind === 'generation') {
      body.width = request.size.width;
      body.height = request.size.height;
    }
    if (request.negativePrompt) body.negative_prompt = request.negativePrompt;
    if (request.steps !== undefined) body.num_inference_steps = request.steps;
    if (request.guidanceScale !== undefined) body.guidance_scale = request.guidanceScale;
    if (request.seed !== undefined) body.seed = request.seed;
  },
};

const localai: EnginePreset = {
  name: 'localai',
  label: 'LocalAI',
  healthPath: '/readyz',
  capabilities: { edit: false, mask: false, variation: false, maxInputImages: 0 },
  loras: 'none',
  map(request, body, warn) {
    // `quality` is read as a step count when numeric: never send it.
    drop(body, ['quality', 'style', 'background', 'output_format', 'output_compression'], request, this.label, warn);
    body.response_format = 'b64_json';
    // Its own convention: what not to draw follows a `|` (the JSON negative_prompt is not used).
    if (request.negativePrompt) body.prompt = `${request.prompt}|${request.negativePrompt}`;
    if (request.steps !== undefined) body.step = request.steps;
    if (request.seed !== undefined) body.seed = request.seed;
    if (request.guidanceScale !== undefined) warn(unsupported('guidance_scale', `guidance_scale is set in the model's YAML on ${this.label} (cfg_scale), not per request; ignored`));
  },
};

const sdcpp: EnginePreset = {
  name: 'sdcpp',
  label: 'stable-diffusion.cpp sd-server',
  healthPath: '/v1/models',
  capabilities: { edit: true, mask: true, variation: false, maxInputImages: 16 },
  loras: 'discovered',
  loraListPath: '/sdapi/v1/loras',
  map(request, body, warn) {
    drop(body, ['quality', 'style', 'background', 'user', 'response_format'], request, this.label, warn);
    if (request.kind === 'edit' && body.output_format === 'webp') delete body.output_format;
    const sample: Record<string, unknown> = {};
    if (request.steps !== undefined) sample.sample_steps = request.steps;
    if (request.guidanceScale !== undefined) sample.guidance = { txt_cfg: request.guidanceScale };
    const extra: Record<string, unknown> = {
      ...(request.negativePrompt ? { negative_prompt: request.negativePrompt } : {}),
      ...(request.seed !== undefined ? { seed: request.seed } : {}),
      ...(Object.keys(sample).length ? { sample_params: sample } : {}),
      // `<lora:…>` tags are not read by sd-server; the structured list is (paths as the server sees them).
      ...(request.loras?.length ? { lora: request.loras.map((l) => ({ path: l.ref, multiplier: l.weight })) } : {}),
    };
    if (Object.keys(extra).length) body.prompt = `${String(body.prompt ?? '')} <sd_cpp_extra_args>${JSON.stringify(extra)}</sd_cpp_extra_args>`;
  },
};

const PRESETS: Record<EnginePresetName, EnginePreset> = { 'vllm-omni': vllmOmni, sglang, localai, sdcpp };

export function enginePreset(name: EnginePresetName): EnginePreset {
  return PRESETS[name];
}
