/**
 * What a checkpoint behind an `a1111` backend takes (PROTOCOLS.md §3): txt2img, img2img (edits and
 * variations) and inpainting with one input image, up to the pool's batch size per call, sizes in
 * multiples of 8 (the latent grid). Provider options are the txt2img/img2img fields that change
 * neither the model, count, size, steps, prompt nor moderation: the sampler and scheduler, img2img
 * strength, face restoration and tiling, variation seeds and the inpainting settings.
 * `override_settings`, scripts, hires fix, refiners and prompt styles are never options (they change
 * the checkpoint, the size, the steps or the prompt); `cfg_scale` is easel's `guidance_scale`.
 */
import { z } from 'zod';
import type { BackendModelSpec } from '../model-spec.ts';

const fraction = z.number().min(0).max(1).optional();

export const a1111ProviderOptionsSchema = z
  .object({
    /** e.g. `Euler a`, `DPM++ 2M` (`GET /sdapi/v1/samplers`); the host refuses one it lacks. */
    sampler_name: z.string().min(1).optional(),
    /** e.g. `Karras` (v1.9+). */
    scheduler: z.string().min(1).optional(),
    /** img2img / inpaint strength; `strength` is the same under the name easel's refine sends. */
    denoising_strength: fraction,
    strength: fraction,
    restore_faces: z.boolean().optional(),
    tiling: z.boolean().optional(),
    subseed: z.number().int().optional(),
    subseed_strength: fraction,
    resize_mode: z.number().int().min(0).max(3).optional(),
    mask_blur: z.number().int().min(0).max(64).optional(),
    inpainting_fill: z.number().int().min(0).max(3).optional(),
    inpaint_full_res: z.boolean().optional(),
    inpaint_full_res_padding: z.number().int().min(0).max(256).optional(),
    inpainting_mask_invert: z.number().int().min(0).max(1).optional(),
  })
  .strict();

export function a1111ModelSpec(maxBatchSize: number, loraNames?: readonly string[]): BackendModelSpec {
  return {
    // `<lora:NAME:WEIGHT>` in the prompt, for any LoRA the hosts list (`GET /sdapi/v1/loras`).
    loras: { source: 'discovered', available: (loraNames ?? []).map((name) => ({ name, ref: name })) },
    capabilities: { generate: true, edit: true, mask: true, variation: true, maxInputImages: 1 },
    maxImagesPerCall: maxBatchSize,
    sizes: { kind: 'range', minSide: 64, maxSide: 16_384, multipleOf: 8 },
    pricing: 'gpu-time',
    providerOptions: a1111ProviderOptionsSchema,
  };
}
