/** The `imagen` backend type: Google Imagen through the Gemini API. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { imagenBackendConfigSchema } from './options.ts';

export const imagenDefinition = {
  type: 'imagen',
  description: 'Google Imagen through the Gemini API',
  configSchema: imagenBackendConfigSchema,
  selfHosted: false,
  prices: [
    { backend: 'imagen', model: 'imagen-4.0-generate-*', usdPerImage: 0.04 },
    { backend: 'imagen', model: 'imagen-4.0-ultra-generate-*', usdPerImage: 0.06 },
    { backend: 'imagen', model: 'imagen-4.0-fast-generate-*', usdPerImage: 0.02 },
    { backend: 'imagen', model: 'imagen-3.0-generate-*', usdPerImage: 0.03 },
  ],
  create: (config, deps): ImageBackend => {
    const { ImagenBackend } = loadOptional<typeof import('./imagen-backend.ts')>('./imagen-backend.ts', import.meta.url);
    return new ImagenBackend(config, deps);
  },
} satisfies BackendDefinition<typeof imagenBackendConfigSchema>;
