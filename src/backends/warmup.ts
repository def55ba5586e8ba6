/**
 * `warmup:` on a GPU backend (ComfyUI, A1111/Forge, the OpenAI-compatible engines): one small
 * request run on each host when it first answers (at start, and when it rejoins after being down),
 * so the first real job does not pay the cold start (the checkpoint load, kernel compilation,
 * allocator growth: tens of seconds to minutes on a fresh GPU). While it runs the host is `warming`:
 * it takes no work, and `/ready` and `/v1/system` say so. Absent: off (hosts take work at once).
 */
import { z } from 'zod';

export const warmupSchema = z
  .object({
    /** What to warm: a checkpoint or workflow (GPU pools), a model id (engines). Default: what the host has loaded, else the first it lists (engines: the server's default). */
    model: z.string().min(1).optional(),
    prompt: z.string().min(1).max(1000).default('a plain grey square'),
    steps: z.number().int().min(1).max(50).default(2),
    width: z.number().int().min(64).max(2048).default(512),
    height: z.number().int().min(64).max(2048).default(512),
    /** Longest a warm-up may take; the host joins after it either way (its probes decide whether it is up). */
    timeoutSeconds: z.number().positive().max(3600).default(600),
  })
  .strict();

export type WarmupConfig = z.infer<typeof warmupSchema>;
