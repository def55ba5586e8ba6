/**
 * The models `easel models pull` knows: Hugging Face repositories of diffusers-layout ONNX exports
 * and the files to take from each. Sizes and SHA-256 are optional: when given they are checked;
 * when not, the server's own `x-linked-size`/`x-linked-etag` (SHA-256 for LFS files) are. The repo
 * paths below follow each repository's published layout and could not be fetched from here (no
 * network to Hugging Face), so no hashes are recorded yet.
 */
import type { ModelManifest } from '../backends/onnx/model-folder.ts';

export interface CatalogFile {
  /** Path inside the repository. */
  path: string;
  /** Path in the local model folder (default: same as `path`). */
  dest?: string;
  size?: number;
  sha256?: string;
  /** A 404 is fine (files only some revisions have, external data of smaller exports). */
  optional?: boolean;
  /** An ONNX graph to turn into fp32 when the model is pulled for the CPU from an fp16 export. */
  onnx?: boolean;
  /** External data of the graph beside it (read by the conversion). */
  onnxData?: boolean;
}

export interface CatalogEntry {
  name: string;
  description: string;
  repo: string;
  revision: string;
  kind: ModelManifest['kind'];
  family: NonNullable<ModelManifest['family']>;
  /** Precision of the published ONNX weights. */
  precision: 'fp16' | 'fp32';
  /** Rough download size, shown by `models list`. */
  approxBytes: number;
  license: string;
  files: CatalogFile[];
  padToken?: string;
  defaults?: ModelManifest['defaults'];
  /** Written when the repository has no scheduler config of its own. */
  schedulerConfig?: Record<string, unknown>;
}

const TOKENIZER: CatalogFile[] = [
  { path: 'tokenizer/vocab.json' },
  { path: 'tokenizer/merges.txt' },
  { path: 'tokenizer/special_tokens_map.json', optional: true },
  { path: 'tokenizer/tokenizer_config.json', optional: true },
];

const TRAILING_EULER = {
  _class_name: 'EulerDiscreteScheduler',
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  timestep_spacing: 'trailing',
  steps_offset: 1,
};

/** One component folder: the graph plus the external-data files exporters name differently. */
function component(name: string, opts: { external?: boolean; optional?: boolean } = {}): CatalogFile[] {
  const files: CatalogFile[] = [
    { path: `${name}/model.onnx`, onnx: true, ...(opts.optional ? { optional: true } : {}) },
    { path: `${name}/config.json`, optional: true },
  ];
  if (opts.external) {
    files.push({ path: `${name}/model.onnx_data`, optional: true, onnxData: true }, { path: `${name}/weights.pb`, optional: true, onnxData: true });
  }
  return files;
}

/** A diffusers-layout ONNX pipeline: tokenizer, text encoder and UNet (weights in external data), VAE. */
const PIPELINE_FILES: CatalogFile[] = [
  { path: 'model_index.json', optional: true },
  { path: 'scheduler/scheduler_config.json', optional: true },
  ...TOKENIZER,
  ...component('text_encoder', { external: true }),
  ...component('unet', { external: true }),
  ...component('vae_decoder'),
  ...component('vae_encoder', { optional: true }),
];

export const CATALOG: CatalogEntry[] = [
  {
    name: 'sd-turbo',
    description: 'SD-Turbo (SD 2.1 distilled): 512×512 in 1 step, no guidance. fp16 export, converted to fp32 for the CPU.',
    repo: 'jdp8/sd-turbo-onnx',
    revision: 'main',
    kind: 'pipeline',
    family: 'turbo',
    precision: 'fp16',
    approxBytes: 2_500_000_000,
    license: 'Stability AI Community License (see the repository)',
    files: PIPELINE_FILES,
    padToken: '!',
    defaults: { steps: 1, guidanceScale: 0, scheduler: 'euler', width: 512, height: 512 },
    schedulerConfig: TRAILING_EULER,
  },
  {
    name: 'lcm-dreamshaper-v7',
    description: 'LCM Dreamshaper v7 (SD 1.5 latent consistency model): good images in 4 steps. fp32.',
    repo: 'SimianLuo/LCM_Dreamshaper_v7',
    revision: 'main',
    kind: 'pipeline',
    family: 'lcm',
    precision: 'fp32',
    approxBytes: 4_300_000_000,
    license: 'MIT (model card) / CreativeML Open RAIL-M (base)',
    files: PIPELINE_FILES,
    defaults: { steps: 4, guidanceScale: 8, scheduler: 'lcm', width: 512, height: 512 },
    schedulerConfig: { ...TRAILING_EULER, _class_name: 'LCMScheduler', timestep_spacing: 'leading', original_inference_steps: 50 },
  },
  {
    name: 'sd-1.5',
    description: 'Stable Diffusion 1.5 with classifier-free guidance and negative prompts, 20–30 steps. fp32.',
    repo: 'onnx-community/stable-diffusion-v1-5-ONNX',
    revision: 'main',
    kind: 'pipeline',
    family: 'sd15',
    precision: 'fp32',
    approxBytes: 5_500_000_000,
    license: 'CreativeML Open RAIL-M',
    files: PIPELINE_FILES,
    defaults: { steps: 20, guidanceScale: 7.5, scheduler: 'dpmpp-2m', width: 512, height: 512 },
    schedulerConfig: { ...TRAILING_EULER, _class_name: 'PNDMScheduler', timestep_spacing: 'leading' },
  },
  {
    name: 'taesd',
    description: 'TAESD, a tiny VAE decoder/encoder for SD 1.x/2.x latents: ~20× faster decoding, slightly softer detail.',
    repo: 'deinferno/taesd-onnx',
    revision: 'main',
    kind: 'decoder',
    family: 'taesd',
    precision: 'fp32',
    approxBytes: 10_000_000,
    license: 'MIT',
    files: [...component('vae_decoder'), ...component('vae_encoder', { optional: true })],
  },
];

export function catalogEntry(name: string): CatalogEntry | undefined {
  return CATALOG.find((e) => e.name === name);
}
