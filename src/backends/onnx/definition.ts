/** The `onnx` backend type: easel's own Stable Diffusion engine on ONNX Runtime, in-process. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import { onnxBackendConfigSchema } from './options.ts';

export const onnxDefinition = {
  type: 'onnx',
  description: "easel's own Stable Diffusion engine on ONNX Runtime, in-process",
  configSchema: onnxBackendConfigSchema,
  selfHosted: true,
  create: (config, deps): ImageBackend => {
    const { OnnxBackend } = loadOptional<typeof import('./onnx-backend.ts')>('./onnx-backend.ts', import.meta.url);
    return new OnnxBackend(config, { log: deps.log });
  },
} satisfies BackendDefinition<typeof onnxBackendConfigSchema>;
