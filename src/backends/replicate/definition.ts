/** The `replicate` backend type: Replicate predictions, resumable, with signed webhooks. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { replicateBackendConfigSchema } from './options.ts';

export const replicateDefinition = {
  type: 'replicate',
  description: 'Replicate predictions (official models, versions, deployments), resumable, with signed webhooks',
  configSchema: replicateBackendConfigSchema,
  selfHosted: false,
  // Official models, per output image (a prediction's metrics.predict_time × usdPerSecond wins).
  prices: [
    { backend: 'replicate', model: 'stability-ai/sdxl', usdPerImage: 0.0023 },
    { backend: 'replicate', model: 'black-forest-labs/flux-schnell', usdPerImage: 0.003 },
    { backend: 'replicate', model: 'black-forest-labs/flux-dev', usdPerImage: 0.025 },
    { backend: 'replicate', model: 'black-forest-labs/flux-pro', usdPerImage: 0.05 },
    { backend: 'replicate', model: 'black-forest-labs/flux-1.1-pro', usdPerImage: 0.04 },
    { backend: 'replicate', model: 'black-forest-labs/flux-1.1-pro-ultra', usdPerImage: 0.06 },
  ],
  create: (config, deps): ImageBackend => {
    const { ReplicateBackend } = loadOptional<typeof import('./replicate-backend.ts')>('./replicate-backend.ts', import.meta.url);
    return new ReplicateBackend(config, deps);
  },
} satisfies BackendDefinition<typeof replicateBackendConfigSchema>;
