/**
 * Config entry for an `onnx` backend: easel's own Stable Diffusion engine, running diffusers-layout
 * ONNX folders in-process on ONNX Runtime. A model's backend id is the name of its folder under
 * `modelsDir` (what `easel models pull` creates), or an absolute path to a diffusers ONNX folder.
 */
import { z } from 'zod';

export const SCHEDULERS = ['euler', 'euler-a', 'dpmpp-2m', 'lcm'] as const;
export const DECODERS = ['auto', 'vae', 'taesd'] as const;

export const onnxBackendConfigSchema = z
  .object({
    type: z.literal('onnx'),
    name: z.string().min(1),
    /** Folder holding one sub-folder per model (default `<dataDir>/models`). */
    modelsDir: z.string().min(1).optional(),
    /** `cuda` is tried when asked for; if it does not load, one log line says so and the CPU runs it. */
    executionProvider: z.enum(['cpu', 'cuda']).default('cpu'),
    /** CUDA device index. */
    deviceId: z.number().int().min(0).default(0),
    /** Intra-op threads of each session; default: every core this process may use. */
    intraOpThreads: z.number().int().min(1).max(256).optional(),
    /** Engine threads (each holds its own copy of the loaded models). */
    workers: z.number().int().min(1).max(8).default(1),
    /** Models kept loaded per engine thread; the least recently used is released beyond this. */
    keepLoaded: z.number().int().min(1).max(8).default(1),
    /**
     * Images denoised together in one UNet call (doubled under classifier-free guidance). On a CPU a
     * batch costs about the sum of its images, and 512² attention takes 0.3–0.5 GB per row, so the default
     * is small; GPUs gain from more.
     */
    maxBatch: z.number().int().min(1).max(16).default(2),
    /**
     * Queued jobs with the same model, size, steps and settings share UNet calls. Off, each job runs
     * alone; on, throughput rises under load and a job's bytes still depend only on its own seed
     * (ORT's CPU kernels treat batch rows independently; `bench/onnx-engine.ts` checks this).
     */
    batchAcrossJobs: z.boolean().default(true),
    /** `auto` decodes with TAESD when one is installed (`<modelsDir>/taesd`), else the model's VAE. */
    decoder: z.enum(DECODERS).default('auto'),
    /** A TAESD folder or model id under `modelsDir` (default `taesd`). */
    taesd: z.string().min(1).optional(),
    /** Largest width × height one image may have (CPU memory grows with it). */
    maxPixels: z.number().int().positive().default(1024 * 1024),
    /** Strength of edits (img2img) when a request gives none: 0 keeps the input, 1 ignores it. */
    defaultStrength: z.number().gt(0).max(1).default(0.6),
  })
  .strict();

export type OnnxBackendConfig = z.infer<typeof onnxBackendConfigSchema>;
export type OnnxBackendConfigInput = z.input<typeof onnxBackendConfigSchema>;

/** Per-request settings accepted in `provider_options` (nothing else is). */
export const onnxProviderOptionsSchema = z
  .object({
    scheduler: z.enum(SCHEDULERS).optional(),
    /** img2img strength (edits). */
    strength: z.number().gt(0).max(1).optional(),
    decoder: z.enum(DECODERS).optional(),
  })
  .strict();
