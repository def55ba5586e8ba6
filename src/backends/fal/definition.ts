/** The `fal` backend type: fal.ai endpoints through the queue API, resumable, with signed webhooks. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { falBackendConfigSchema } from './options.ts';

export const falDefinition = {
  type: 'fal',
  description: 'fal.ai endpoints through the queue API, resumable, with signed webhooks',
  configSchema: falBackendConfigSchema,
  selfHosted: false,
  // Per megapixel (1024×1024 = 1).
  prices: [
    { backend: 'fal', model: 'fal-ai/flux/schnell', usdPerMegapixel: 0.003 },
    { backend: 'fal', model: 'fal-ai/flux/dev', usdPerMegapixel: 0.025 },
    { backend: 'fal', model: 'fal-ai/flux-pro*', usdPerMegapixel: 0.05 },
    { backend: 'fal', model: 'fal-ai/flux-pro/v1.1*', usdPerMegapixel: 0.04 },
  ],
  create: (config, deps): ImageBackend => {
    const { FalBackend } = loadOptional<typeof import('./fal-backend.ts')>('./fal-backend.ts', import.meta.url);
    return new FalBackend(config, deps);
  },
} satisfies BackendDefinition<typeof falBackendConfigSchema>;
