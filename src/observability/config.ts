/**
 * The `metrics` config section.
 */
import { z } from 'zod';

export const metricsConfigSchema = z
  .object({
    enabled: z.boolean().default(true),
    /** When set, GET /metrics needs `Authorization: Bearer <token>`. */
    bearerToken: z.string().min(8).optional(),
    /** A worker-only process (`easel worker`) serves /metrics on this port (0 = off). */
    workerPort: z.number().int().min(0).max(65535).default(0),
  })
  .strict();
export type MetricsConfig = z.infer<typeof metricsConfigSchema>;
