/** The `bfl` backend type: Black Forest Labs' own API, resumable, priced by its reported credits. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { bflBackendConfigSchema } from './options.ts';

export const bflDefinition = {
  type: 'bfl',
  description: "Black Forest Labs' own API (FLUX.1 pro/dev/ultra/kontext/fill, FLUX.2), resumable, priced by its reported credits",
  configSchema: bflBackendConfigSchema,
  selfHosted: false,
  // Per image; BFL's own `cost` wins when it reports one.
  prices: [
    { backend: 'bfl', model: 'flux-pro-1.1', usdPerImage: 0.04 },
    { backend: 'bfl', model: 'flux-pro-1.1-ultra', usdPerImage: 0.06 },
    { backend: 'bfl', model: 'flux-pro', usdPerImage: 0.05 },
    { backend: 'bfl', model: 'flux-dev', usdPerImage: 0.025 },
    { backend: 'bfl', model: 'flux-kontext-pro', usdPerImage: 0.04 },
    { backend: 'bfl', model: 'flux-kontext-max', usdPerImage: 0.08 },
  ],
  create: (config, deps): ImageBackend => {
    const { BflBackend } = loadOptional<typeof import('./bfl-backend.ts')>('./bfl-backend.ts', import.meta.url);
    return new BflBackend(config, deps);
  },
} satisfies BackendDefinition<typeof bflBackendConfigSchema>;
