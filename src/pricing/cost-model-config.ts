/**
 * The `costModel` config section: how self-hosted backends are costed by GPU time.
 */
import { z } from 'zod';
import { SELF_HOSTED_TYPES } from '../backends/definitions.ts';

const usd = z.number().nonnegative();
const positive = (def: number) => z.number().positive().default(def);

export const costModelConfigSchema = z
  .object({
    /** $ per GPU-hour of self-hosted backends with no rate of their own. */
    defaultUsdPerGpuHour: usd.default(1),
    /** Self-hosted backends by name: rate, per-host rates (GPU pools), GPUs and an admission estimate. */
    backends: z
      .record(
        z.string().min(1),
        z
          .object({
            usdPerGpuHour: usd.optional(),
            /** Per GPU host name (ComfyUI/A1111 pools), overriding usdPerGpuHour. */
            hosts: z.record(z.string().min(1), usd).default({}),
            /** GPUs behind the backend (utilization and break-even); default: its hosts, else 1. */
            gpus: z.number().int().min(1).optional(),
            /** GPU-seconds per 1024×1024 image assumed before any job was measured. */
            estimateGpuSecondsPerImage: z.number().positive().optional(),
          })
          .strict(),
      )
      .default({}),
    /** Backend types costed by GPU time (no list price); default: the types whose definition is self-hosted. */
    selfHostedTypes: z.array(z.string().min(1)).default(() => [...SELF_HOSTED_TYPES]),
    /** GPU-seconds per 1024×1024 image assumed before a model's first measured job. */
    estimateGpuSecondsPerImage: positive(20),
    /** Admission estimates use this multiple of the 90th percentile of recently measured images. */
    estimateMargin: z.number().min(1).default(1.25),
  })
  .strict();
export type CostModelConfig = z.infer<typeof costModelConfigSchema>;
