/** The `stability` backend type: Stability AI's v2beta stable-image endpoints. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { stabilityBackendConfigSchema } from './options.ts';

export const stabilityDefinition = {
  type: 'stability',
  description: "Stability AI's v2beta stable-image endpoints (ultra, core, SD3)",
  configSchema: stabilityBackendConfigSchema,
  selfHosted: false,
  prices: [
    { backend: 'stability', model: 'ultra', usdPerImage: 0.08 },
    { backend: 'stability', model: 'stable-image-ultra', usdPerImage: 0.08 },
    { backend: 'stability', model: 'core', usdPerImage: 0.03 },
    { backend: 'stability', model: 'stable-image-core', usdPerImage: 0.03 },
    { backend: 'stability', model: 'sd3.5-large', usdPerImage: 0.065 },
    { backend: 'stability', model: 'sd3.5-large-turbo', usdPerImage: 0.04 },
    { backend: 'stability', model: 'sd3.5-medium', usdPerImage: 0.035 },
    { backend: 'stability', model: 'sd3.5-flash', usdPerImage: 0.025 },
  ],
  create: (config, deps): ImageBackend => {
    const { StabilityBackend } = loadOptional<typeof import('./stability-backend.ts')>('./stability-backend.ts', import.meta.url);
    return new StabilityBackend(config, deps);
  },
} satisfies BackendDefinition<typeof stabilityBackendConfigSchema>;
