/** The `comfyui` backend type: ComfyUI hosts behind one pool. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { comfyuiBackendConfigSchema } from './options.ts';

export const comfyuiDefinition = {
  type: 'comfyui',
  description: 'ComfyUI hosts behind one pool: built-in templates per checkpoint family, or user workflows',
  configSchema: comfyuiBackendConfigSchema,
  selfHosted: true,
  create: (config, deps): ImageBackend => {
    const { ComfyUIBackend } = loadOptional<typeof import('./comfyui-backend.ts')>('./comfyui-backend.ts', import.meta.url);
    return new ComfyUIBackend(config, { log: deps.log });
  },
} satisfies BackendDefinition<typeof comfyuiBackendConfigSchema>;
