/** The `a1111` backend type: AUTOMATIC1111 / Forge webui hosts behind one pool. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { a1111BackendConfigSchema } from './options.ts';

export const a1111Definition = {
  type: 'a1111',
  description: 'AUTOMATIC1111 / Forge webui hosts (started with --api) behind one pool',
  configSchema: a1111BackendConfigSchema,
  selfHosted: true,
  create: (config, deps): ImageBackend => {
    const { A1111Backend } = loadOptional<typeof import('./a1111-backend.ts')>('./a1111-backend.ts', import.meta.url);
    return new A1111Backend(config, { log: deps.log });
  },
} satisfies BackendDefinition<typeof a1111BackendConfigSchema>;
