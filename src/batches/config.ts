/**
 * The `batches` config section.
 */
import { z } from 'zod';

const positive = (def: number) => z.number().positive().default(def);

export const batchesConfigSchema = z
  .object({
    /** Most requests one batch may carry. */
    maxRequests: z.number().int().min(1).default(1000),
    /** Priority of batch jobs unless the batch says otherwise. */
    defaultPriority: z.enum(['high', 'normal', 'low']).default('low'),
    /** Jobs of one batch queued or running at once; the rest wait in the batch. */
    maxInFlight: z.number().int().min(1).default(100),
    /** The hourly spend cap's window (3600 = per clock hour). */
    capWindowSeconds: positive(3600),
    /** How often workers move waiting batch requests onto the queue. */
    pumpIntervalMs: z.number().int().positive().default(500),
  })
  .strict();
export type BatchesConfig = z.infer<typeof batchesConfigSchema>;
