/**
 * What a diffusers-layout ONNX folder holds, read from its files (model_index.json, the scheduler
 * and VAE configs, which component folders exist) plus easel's own `easel-model.json` that
 * `easel models pull` writes. Cheap: no ONNX file is opened here.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { DEFAULT_NOISE_SCHEDULE } from './schedulers.ts';
import type { NoiseScheduleConfig, PredictionType, SchedulerName, TimestepSpacing } from './schedulers.ts';

export const MANIFEST_FILE = 'easel-model.json';

/** Written by `easel models pull` once every file is in place; its presence marks a complete model. */
export interface ModelManifest {
  name: string;
  /** `pipeline`: a full text-to-image model; `decoder`: a replacement VAE decoder such as TAESD. */
  kind: 'pipeline' | 'decoder';
  family?: 'sd15' | 'sd21' | 'turbo' | 'lcm' | 'taesd';
  description?: string;
  source?: { repo: string; revision: string; endpoint?: string };
  /** Token the prompts are padded with (`!` for SD 2.x / Turbo). */
  padToken?: string;
  defaults?: { steps?: number; guidanceScale?: number; scheduler?: SchedulerName; width?: number; height?: number };
  /** Decoder output range, when not diffusers' [-1, 1]. */
  outputRange?: [number, number];
  /** fp32 when converted for the CPU from an fp16 export. */
  precision?: 'fp32' | 'fp16';
  files?: { path: string; size: number; sha256: string }[];
  pulledAt?: string;
}

export interface ModelDefaults {
  steps: number;
  guidanceScale: number;
  scheduler: SchedulerName;
  width: number;
  height: number;
}

export interface ModelFolder {
  id: string;
  dir: string;
  manifest?: ModelManifest;
  tokenizerDir: string;
  textEncoder: string;
  unet: string;
  vaeDecoder?: string;
  vaeEncoder?: string;
  schedule: NoiseScheduleConfig;
  /** The scheduler class diffusers would use, mapped to one of ours. */
  configuredScheduler?: SchedulerName;
  vaeScalingFactor: number;
  padToken?: string;
  /** Best guess before the sessions are opened (LCM is confirmed by the UNet's `timestep_cond`). */
  family: 'sd' | 'turbo' | 'lcm';
  /** The model's native size from its VAE config (`sample_size`), e.g. 512 or 768. */
  nativeSize: number;
}

export interface DecoderFolder {
  dir: string;
  decoder: string;
  encoder?: string;
  scalingFactor: number;
  outputRange: [number, number];
}

function readJson(path: string): Record<string, any> | undefined {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, any>;
  } catch (err) {
    throw new Error(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}

function onnxIn(dir: string, ...candidates: string[]): string | undefined {
  for (const c of candidates) {
    const p = join(dir, c);
    if (existsSync(p) && statSync(p).isFile()) return p;
  }
  return undefined;
}

const SCHEDULER_CLASSES: Record<string, SchedulerName> = {
  EulerDiscreteScheduler: 'euler',
  EulerAncestralDiscreteScheduler: 'euler-a',
  DPMSolverMultistepScheduler: 'dpmpp-2m',
  LCMScheduler: 'lcm',
};

/** A safe model id (a folder name), or an absolute path. */
export function resolveModelDir(modelsDir: string, id: string): string {
  if (isAbsolute(id)) return id;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(id)) throw new Error(`invalid model id ${JSON.stringify(id)}: use a folder name under the models folder`);
  return resolve(modelsDir, id);
}

export function readManifest(dir: string): ModelManifest | undefined {
  return readJson(join(dir, MANIFEST_FILE)) as ModelManifest | undefined;
}

export function readModelFolder(dir: string, id = dir): ModelFolder {
  if (!existsSync(dir)) throw new Error(`model folder ${dir} does not exist`);
  const manifest = readManifest(dir);
  const textEncoder = onnxIn(dir, 'text_encoder/model.onnx');
  const unet = onnxIn(dir, 'unet/model.onnx');
  if (!textEncoder || !unet) {
    throw new Error(`${dir} is not a diffusers ONNX folder (needs text_encoder/model.onnx and unet/model.onnx)`);
  }
  const tokenizerDir = join(dir, 'tokenizer');
  const sch = readJson(join(dir, 'scheduler', 'scheduler_config.json')) ?? {};
  const vaeCfg = readJson(join(dir, 'vae_decoder', 'config.json')) ?? readJson(join(dir, 'vae', 'config.json')) ?? {};
  const index = readJson(join(dir, 'model_index.json')) ?? {};

  const schedule: NoiseScheduleConfig = {
    numTrainTimesteps: num(sch.num_train_timesteps) ?? DEFAULT_NOISE_SCHEDULE.numTrainTimesteps,
    betaStart: num(sch.beta_start) ?? DEFAULT_NOISE_SCHEDULE.betaStart,
    betaEnd: num(sch.beta_end) ?? DEFAULT_NOISE_SCHEDULE.betaEnd,
    betaSchedule: sch.beta_schedule === 'linear' ? 'linear' : 'scaled_linear',
    stepsOffset: num(sch.steps_offset) ?? 0,
    timestepSpacing: (['leading', 'trailing', 'linspace'].includes(sch.timestep_spacing) ? sch.timestep_spacing : 'leading') as TimestepSpacing,
    predictionType: (['epsilon', 'v_prediction', 'sample'].includes(sch.prediction_type) ? sch.prediction_type : 'epsilon') as PredictionType,
    originalInferenceSteps: num(sch.original_inference_steps) ?? DEFAULT_NOISE_SCHEDULE.originalInferenceSteps,
    timestepScaling: num(sch.timestep_scaling) ?? DEFAULT_NOISE_SCHEDULE.timestepScaling,
  };
  // No scheduler config at all: the SD-Turbo/modern default (trailing) rather than diffusers' old leading.
  if (!sch.timestep_spacing && !existsSync(join(dir, 'scheduler', 'scheduler_config.json'))) schedule.timestepSpacing = 'trailing';

  const configuredScheduler = SCHEDULER_CLASSES[String(sch._class_name ?? '')];
  const nameHint = `${index._name_or_path ?? ''} ${manifest?.family ?? ''} ${manifest?.name ?? ''} ${id}`.toLowerCase();
  const family: ModelFolder['family'] =
    manifest?.family === 'lcm' || configuredScheduler === 'lcm' ? 'lcm' : manifest?.family === 'turbo' || /turbo/.test(nameHint) ? 'turbo' : 'sd';

  return {
    id,
    dir,
    manifest,
    tokenizerDir,
    textEncoder,
    unet,
    vaeDecoder: onnxIn(dir, 'vae_decoder/model.onnx'),
    vaeEncoder: onnxIn(dir, 'vae_encoder/model.onnx'),
    schedule,
    configuredScheduler,
    vaeScalingFactor: num(vaeCfg.scaling_factor) ?? 0.18215,
    padToken: manifest?.padToken,
    family,
    nativeSize: (num(vaeCfg.sample_size) ?? (family === 'sd' && schedule.predictionType === 'v_prediction' ? 768 : 512)),
  };
}

/** Sampling defaults for a model: the manifest's, else those of its family. */
export function modelDefaults(folder: ModelFolder, family: ModelFolder['family'] = folder.family): ModelDefaults {
  const d = folder.manifest?.defaults ?? {};
  const base: Omit<ModelDefaults, 'width' | 'height'> =
    family === 'turbo'
      ? { steps: 1, guidanceScale: 0, scheduler: 'euler' }
      : family === 'lcm'
        ? { steps: 4, guidanceScale: 8, scheduler: 'lcm' }
        : { steps: 20, guidanceScale: 7.5, scheduler: folder.configuredScheduler && folder.configuredScheduler !== 'lcm' ? folder.configuredScheduler : 'dpmpp-2m' };
  return {
    steps: d.steps ?? base.steps,
    guidanceScale: d.guidanceScale ?? base.guidanceScale,
    scheduler: d.scheduler ?? base.scheduler,
    width: d.width ?? folder.nativeSize,
    height: d.height ?? folder.nativeSize,
  };
}

/** A TAESD-style decoder folder (`vae_decoder/model.onnx` or `taesd_decoder.onnx`). */
export function readDecoderFolder(dir: string): DecoderFolder | undefined {
  if (!existsSync(dir)) return undefined;
  const decoder = onnxIn(dir, 'vae_decoder/model.onnx', 'taesd_decoder.onnx', 'decoder.onnx');
  if (!decoder) return undefined;
  const cfg = readJson(join(dir, 'vae_decoder', 'config.json')) ?? readJson(join(dir, 'config.json')) ?? {};
  const manifest = readManifest(dir);
  return {
    dir,
    decoder,
    encoder: onnxIn(dir, 'vae_encoder/model.onnx', 'taesd_encoder.onnx', 'encoder.onnx'),
    // TAESD decodes UNet-space latents as they are (diffusers' AutoencoderTiny has scaling_factor 1.0).
    scalingFactor: num(cfg.scaling_factor) ?? 1,
    outputRange: manifest?.outputRange ?? [-1, 1],
  };
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
