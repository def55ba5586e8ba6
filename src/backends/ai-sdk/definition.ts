/** The `ai-sdk` backend type: any Vercel AI SDK provider package with an image model. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { aiSdkBackendConfigSchema } from './options.ts';

export const aiSdkDefinition = {
  type: 'ai-sdk',
  description: 'Any Vercel AI SDK provider package with an image model, through generateImage',
  configSchema: aiSdkBackendConfigSchema,
  selfHosted: false,
  // The AI SDK (~8 MB of heap) is loaded only when an ai-sdk backend is configured.
  create: (config, deps): ImageBackend => {
    const { AiSdkBackend } = loadOptional<typeof import('./ai-sdk-backend.ts')>('./ai-sdk-backend.ts', import.meta.url);
    return new AiSdkBackend(config, deps);
  },
} satisfies BackendDefinition<typeof aiSdkBackendConfigSchema>;
