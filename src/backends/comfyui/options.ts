/**
 * Config entry for a `comfyui` backend: one or more ComfyUI hosts behind one pool. A model routed
 * here names either a checkpoint (run through the built-in txt2img / img2img / inpaint templates for
 * SD 1.5, SDXL or FLUX-style checkpoints) or one of the `workflows` declared below (an API-format
 * graph plus a mapping of request fields onto node inputs; nothing in it is ever executed by easel).
 */
import { z } from 'zod';
import { poolFields, samplingDefaultFields } from '../pool/options.ts';
import { declaredOptionName, declaredOptionTypeFields } from '../declared-options.ts';

export const CHECKPOINT_FAMILIES = ['sd15', 'sdxl', 'flux'] as const;
export type CheckpointFamily = (typeof CHECKPOINT_FAMILIES)[number];

/** `node_id.input_name`, e.g. `6.text` (node ids may themselves hold dots or colons; the last dot splits). */
const nodeInput = z.string().regex(/^.+\.[^.]+$/, 'must be node_id.input_name, e.g. 6.text');
const targets = z.union([nodeInput, z.array(nodeInput).min(1)]);

export const WORKFLOW_FIELDS = [
  'prompt',
  'negativePrompt',
  'seed',
  'steps',
  'cfg',
  'width',
  'height',
  'batchSize',
  'sampler',
  'scheduler',
  'denoise',
  'checkpoint',
  'image',
  'mask',
] as const;
export type WorkflowField = (typeof WORKFLOW_FIELDS)[number];

export const workflowSchema = z
  .object({
    /** The backend model id a `models` entry names to use it. */
    name: z.string().min(1),
    /** Path of the API-format JSON ("Save (API)" in ComfyUI), relative to the working directory. */
    file: z.string().min(1).optional(),
    /** The API-format graph inline, instead of `file`. */
    graph: z.record(z.string(), z.unknown()).optional(),
    /** Which node inputs each request field sets. Unmapped fields are left as the graph has them (with a warning when the request set them). */
    inputs: z.partialRecord(z.enum(WORKFLOW_FIELDS), targets).default({}),
    /** Fixed values written into the graph on every run. */
    set: z.record(nodeInput, z.union([z.string(), z.number(), z.boolean()])).optional(),
    /**
     * Provider options requests may set, each written into the node inputs `to` names, with its type:
     * `{lora_strength: {to: 10.strength_model, type: number, min: 0, max: 2}}`. The workflow takes
     * these and the ones its mapped sampler, scheduler and denoise inputs imply; nothing else.
     * Guarded names (model, n, size, prompt, steps, …) and easel's own fields cannot be declared.
     */
    options: z.record(declaredOptionName, z.object({ to: targets, ...declaredOptionTypeFields }).strict()).default({}),
    /**
     * LoRA slots a request's `loras` fill, in order: LoraLoader (or LoraLoaderModelOnly) nodes of the
     * graph, `{name: 10.lora_name, weight: [10.strength_model, 10.strength_clip]}`. Slots a request
     * leaves over get weight 0 (a no-op; their file stays as saved). Absent: the workflow takes none.
     */
    loras: z.array(z.object({ name: nodeInput, weight: targets }).strict()).max(8).optional(),
    /** Nodes whose saved images are the result, in order (default: every node that saved images, by node id). */
    outputs: z.array(z.string().min(1)).min(1).optional(),
    /** The affinity key: what the graph loads (default: its CheckpointLoaderSimple's ckpt_name, else the workflow name). */
    checkpoint: z.string().min(1).optional(),
    /** Defaults for request fields the client left out. */
    defaults: z
      .object({
        steps: z.number().int().min(1).optional(),
        cfg: z.number().min(0).optional(),
        width: z.number().int().min(16).optional(),
        height: z.number().int().min(16).optional(),
        sampler: z.string().optional(),
        scheduler: z.string().optional(),
        denoise: z.number().min(0).max(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .refine((w) => (w.file === undefined) !== (w.graph === undefined), { message: 'give exactly one of file or graph' });
export type WorkflowConfig = z.infer<typeof workflowSchema>;

const samplingDefaults = samplingDefaultFields(16);

export const comfyuiBackendConfigSchema = z
  .object({
    type: z.literal('comfyui'),
    ...poolFields,
    /**
     * Prompts kept waiting in each host's own queue beyond the `maxConcurrentPerHost` running, so
     * its GPU starts the next one the moment it frees instead of waiting for easel's round trip
     * (0: submit only when the host is idle).
     */
    queueAheadPerHost: z.number().int().min(0).max(8).default(1),
    /** Per checkpoint: its family (else guessed from the name: `flux` → flux, `xl` → sdxl, else sd15) and sampling defaults. */
    checkpoints: z
      .record(z.string(), z.object({ family: z.enum(CHECKPOINT_FAMILIES).optional(), ...samplingDefaults }).strict())
      .default({}),
    /** Sampling defaults for every checkpoint (a checkpoint's own entry wins; family defaults fill the rest). */
    defaults: z
      .object({
        ...samplingDefaults,
        /** img2img / inpaint strength when the request gives none. */
        denoise: z.number().min(0).max(1).default(0.75),
        /** Strength of a variation (an img2img with no prompt). */
        variationDenoise: z.number().min(0).max(1).default(0.6),
      })
      .strict()
      .prefault({}),
    workflows: z.array(workflowSchema).default([]),
    /** SaveImage filename prefix of the built-in templates. */
    filenamePrefix: z.string().min(1).default('easel'),
    /** Subfolder of ComfyUI's input folder that uploads go to. */
    uploadSubfolder: z.string().default('easel'),
    /** Forward the websocket's binary preview frames to the job's event stream as partial images. */
    previews: z.boolean().default(true),
    /** First delay before reconnecting a dropped websocket; it doubles up to 5 s. */
    reconnectDelayMs: z.number().int().min(1).max(60_000).default(250),
    /** While the websocket is down, `/history/{id}` is polled this often. */
    historyPollMs: z.number().int().min(10).max(60_000).default(1000),
  })
  .strict();

export type ComfyUIBackendConfig = z.infer<typeof comfyuiBackendConfigSchema>;
export type ComfyUIBackendConfigInput = z.input<typeof comfyuiBackendConfigSchema>;
