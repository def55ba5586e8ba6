/**
 * What a model behind a `comfyui` backend takes. A checkpoint runs through the built-in templates
 * (text-to-image, img2img, inpainting, variations) of its family; sizes are latent-aligned
 * (EmptyLatentImage: 16–16384 in steps of 8, PROTOCOLS.md §2.5). A user workflow takes what its
 * mapping declares: input images and masks only where it maps them, a size only where it maps width
 * and height, batches only where it maps a batch size, and as options its mapped sampler, scheduler
 * and denoise plus the options it declares.
 */
import { z } from 'zod';
import type { BackendModelSpec, LoraSpec, SizeRule } from '../model-spec.ts';
import { declaredOptionType } from '../declared-options.ts';
import type { CheckpointFamily } from './options.ts';
import type { LoadedWorkflow } from './workflows.ts';

const LATENT_SIZES: SizeRule = { kind: 'range', minSide: 16, maxSide: 16_384, multipleOf: 8 };

/** ComfyUI sampler and scheduler names (`euler`, `dpmpp_2m`, `karras`, …); the host refuses one it lacks. */
const samplerOptions = { sampler_name: z.string().min(1).optional(), sampler: z.string().min(1).optional() };
const schedulerOptions = { scheduler: z.string().min(1).optional() };
/** img2img strength; `strength` is the same thing under the name easel's refine sends. */
const denoiseOptions = { denoise: z.number().min(0).max(1).optional(), strength: z.number().min(0).max(1).optional() };

/**
 * A template's options: sampler, scheduler, denoise, and `batch_index` (make only images
 * `batch_index …` of the batch a seed would make, to reproduce one image of an earlier batch).
 */
export const templateOptions = z
  .object({ ...samplerOptions, ...schedulerOptions, ...denoiseOptions, batch_index: z.number().int().min(0).max(4095).optional() })
  .strict();

/** Extensions a LoRA file's public name leaves out (`sub/style.safetensors` is offered as `sub/style`). */
const LORA_EXT = /\.(safetensors|ckpt|pt|pth|bin)$/i;

/**
 * The LoRA files the hosts list, as a model offers them: each by its path without the extension (the
 * file name itself where two files would share a name), sent as the file name ComfyUI listed.
 */
export function comfyLoras(files: readonly string[] | undefined): LoraSpec[] {
  const list = files ?? [];
  const stems = new Map<string, number>();
  for (const f of list) stems.set(f.replace(LORA_EXT, ''), (stems.get(f.replace(LORA_EXT, '')) ?? 0) + 1);
  return list.map((f) => {
    const stem = f.replace(LORA_EXT, '');
    return { name: stems.get(stem) === 1 ? stem : f, ref: f };
  });
}

export function checkpointSpec(family: CheckpointFamily, maxBatchSize: number, loraFiles?: readonly string[]): BackendModelSpec {
  return {
    capabilities: { generate: true, edit: true, mask: true, variation: true, maxInputImages: 1 },
    maxImagesPerCall: maxBatchSize,
    sizes: LATENT_SIZES,
    pricing: 'gpu-time',
    providerOptions: templateOptions,
    // The templates chain a LoraLoader per adapter: any the hosts have.
    loras: { source: 'discovered', available: comfyLoras(loraFiles) },
    ...(family === 'flux' ? { textInImage: true } : {}),
  };
}

export function workflowOptions(wf: LoadedWorkflow): z.ZodObject {
  const declared = Object.fromEntries(Object.entries(wf.options).map(([name, o]) => [name, declaredOptionType(o.type).optional()]));
  return z
    .object({
      ...(wf.inputs.sampler ? samplerOptions : {}),
      ...(wf.inputs.scheduler ? schedulerOptions : {}),
      ...(wf.inputs.denoise ? denoiseOptions : {}),
      ...declared,
    })
    .strict();
}

export function workflowSpec(wf: LoadedWorkflow, maxBatchSize: number, loraFiles?: readonly string[]): BackendModelSpec {
  const image = !!wf.inputs.image;
  return {
    // LoRAs only where the workflow declares slots for them.
    ...(wf.loraSlots.length ? { loras: { source: 'discovered' as const, available: comfyLoras(loraFiles), max: wf.loraSlots.length } } : {}),
    capabilities: { generate: true, edit: image, mask: image && !!wf.inputs.mask, variation: image, maxInputImages: image ? 1 : 0 },
    // Without a batch-size input the graph makes what it makes: one call per image.
    maxImagesPerCall: wf.inputs.batchSize ? maxBatchSize : 1,
    ...(wf.inputs.width && wf.inputs.height ? { sizes: LATENT_SIZES } : {}),
    pricing: 'gpu-time',
    providerOptions: workflowOptions(wf),
  };
}
