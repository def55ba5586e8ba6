/**
 * Built-in ComfyUI workflows in API format (node id → {class_type, inputs}; a link is
 * `[node_id, output_index]`): text-to-image, image-to-image and inpainting for SD 1.5, SDXL and
 * FLUX-style (all-in-one) checkpoints. Every node is a core ComfyUI node.
 */
import type { CheckpointFamily } from './options.ts';

export type ApiNode = { class_type: string; inputs: Record<string, unknown>; _meta?: { title: string } };
export type ApiGraph = Record<string, ApiNode>;

export interface SamplingDefaults {
  steps: number;
  cfg: number;
  sampler: string;
  scheduler: string;
  width: number;
  height: number;
}

export const FAMILY_DEFAULTS: Record<CheckpointFamily, SamplingDefaults> = {
  sd15: { steps: 20, cfg: 7, sampler: 'euler', scheduler: 'normal', width: 512, height: 512 },
  sdxl: { steps: 25, cfg: 6.5, sampler: 'dpmpp_2m', scheduler: 'karras', width: 1024, height: 1024 },
  // FLUX dev/schnell run with cfg 1 in the sampler; the guidance goes through FluxGuidance.
  flux: { steps: 20, cfg: 3.5, sampler: 'euler', scheduler: 'simple', width: 1024, height: 1024 },
};

/** A family from a checkpoint's file name when config does not say. */
export function guessFamily(checkpoint: string): CheckpointFamily {
  const name = checkpoint.toLowerCase();
  if (name.includes('flux')) return 'flux';
  if (/(^|[^a-z])(sd_?xl|xl|pony|illustrious|playground)([^a-z]|$)/.test(name) || name.includes('sdxl')) return 'sdxl';
  return 'sd15';
}

export interface TemplateParams {
  family: CheckpointFamily;
  checkpoint: string;
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  /** Images the sampler makes. */
  batchSize: number;
  seed: number;
  steps: number;
  cfg: number;
  sampler: string;
  scheduler: string;
  /** 1 for text-to-image. */
  denoise: number;
  /** Uploaded input image (`subfolder/name`) for img2img / inpaint. */
  image?: string;
  /** Uploaded mask; `alpha`: its transparent pixels are the area to repaint (OpenAI's convention), else white is. */
  mask?: { name: string; alpha: boolean };
  /** Scale the input image to the requested size first. */
  scaleInput?: boolean;
  /**
   * Reproduce images `batchIndex … batchIndex+batchSize-1` of a batch made with `seed`: the noise
   * of those latents is drawn exactly as in the original batch (LatentFromBatch keeps the indices).
   */
  batchIndex?: number;
  filenamePrefix: string;
  /** LoRA files chained after the checkpoint loader, in order (PROTOCOLS.md §11 B1). */
  loras?: ReadonlyArray<{ ref: string; weight: number }>;
}

/** Node id of the i-th LoRA loader of a template (clear of the template's own ids). */
export const loraNodeId = (i: number) => String(20 + i);

/** The node whose images are the result. */
export const TEMPLATE_OUTPUT_NODE = '9';

export function buildTemplate(p: TemplateParams): ApiGraph {
  const g: ApiGraph = {};
  const flux = p.family === 'flux';
  g['4'] = { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: p.checkpoint } };
  // LoRAs chain between the loader and what reads its model and CLIP: the sampler and both text
  // encoders take the last link; the VAE stays the checkpoint's. FLUX LoRAs patch the model only.
  let model: [string, number] = ['4', 0];
  let clip: [string, number] = ['4', 1];
  (p.loras ?? []).forEach((l, i) => {
    const id = loraNodeId(i);
    g[id] = flux
      ? { class_type: 'LoraLoaderModelOnly', inputs: { model, lora_name: l.ref, strength_model: l.weight } }
      : { class_type: 'LoraLoader', inputs: { model, clip, lora_name: l.ref, strength_model: l.weight, strength_clip: l.weight } };
    model = [id, 0];
    if (!flux) clip = [id, 1];
  });
  g['6'] = { class_type: 'CLIPTextEncode', inputs: { text: p.prompt, clip }, _meta: { title: 'positive prompt' } };
  g['7'] = { class_type: 'CLIPTextEncode', inputs: { text: p.negativePrompt, clip }, _meta: { title: 'negative prompt' } };
  let positive: [string, number] = ['6', 0];
  if (flux) {
    g['10'] = { class_type: 'FluxGuidance', inputs: { conditioning: ['6', 0], guidance: p.cfg } };
    positive = ['10', 0];
  }

  let latent: [string, number];
  const skip = p.batchIndex ?? 0;
  if (p.image) {
    let pixels: [string, number] = ['11', 0];
    g['11'] = { class_type: 'LoadImage', inputs: { image: p.image } };
    if (p.scaleInput) {
      g['16'] = { class_type: 'ImageScale', inputs: { image: ['11', 0], upscale_method: 'lanczos', width: p.width, height: p.height, crop: 'disabled' } };
      pixels = ['16', 0];
    }
    g['12'] = { class_type: 'VAEEncode', inputs: { pixels, vae: ['4', 2] } };
    latent = ['12', 0];
    if (p.batchSize + skip > 1) {
      g['13'] = { class_type: 'RepeatLatentBatch', inputs: { samples: latent, amount: p.batchSize + skip } };
      latent = ['13', 0];
    }
  } else {
    g['5'] = {
      class_type: flux ? 'EmptySD3LatentImage' : 'EmptyLatentImage',
      inputs: { width: p.width, height: p.height, batch_size: p.batchSize + skip },
    };
    latent = ['5', 0];
  }
  if (skip > 0) {
    g['17'] = { class_type: 'LatentFromBatch', inputs: { samples: latent, batch_index: skip, length: p.batchSize } };
    latent = ['17', 0];
  }
  if (p.image && p.mask) {
    g['14'] = p.mask.alpha
      ? { class_type: 'LoadImage', inputs: { image: p.mask.name } }
      : { class_type: 'LoadImageMask', inputs: { image: p.mask.name, channel: 'red' } };
    // LoadImage's MASK output is 1 − alpha: the transparent area is the one to repaint.
    g['15'] = { class_type: 'SetLatentNoiseMask', inputs: { samples: latent, mask: p.mask.alpha ? ['14', 1] : ['14', 0] } };
    latent = ['15', 0];
  }

  g['3'] = {
    class_type: 'KSampler',
    inputs: {
      seed: p.seed,
      steps: p.steps,
      cfg: flux ? 1 : p.cfg,
      sampler_name: p.sampler,
      scheduler: p.scheduler,
      denoise: p.denoise,
      model,
      positive,
      negative: ['7', 0],
      latent_image: latent,
    },
  };
  g['8'] = { class_type: 'VAEDecode', inputs: { samples: ['3', 0], vae: ['4', 2] } };
  g[TEMPLATE_OUTPUT_NODE] = { class_type: 'SaveImage', inputs: { images: ['8', 0], filename_prefix: p.filenamePrefix } };
  return g;
}
