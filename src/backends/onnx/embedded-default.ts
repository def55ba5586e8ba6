/**
 * The embedded default: with no backend configured, the models pulled into `<dataDir>/models`
 * are served by a built-in `onnx` backend named `local` (SD-Turbo first); with none pulled, the
 * runtime downloads the default model in the background (src/models/auto-pull.ts) or, with that
 * turned off, the one line to print says which command fetches one. Also gives configured `onnx`
 * backends their default models folder.
 */
import { join, resolve } from 'node:path';
import type { BackendConfig, ModelConfig } from '../../config/schema.ts';
import { pulledPipelines } from '../../models/model-store.ts';
import { onnxBackendConfigSchema } from './options.ts';

export const EMBEDDED_BACKEND = 'local';
export const PULL_HINT =
  'No image model yet and the automatic download is off (modelStore.autoPull / EASEL_AUTO_PULL): run `npm run easel -- models pull sd-turbo` (about 2.5 GB; or configure a backend, see README), then start easel again.';

export interface EmbeddedSetup {
  backends: BackendConfig[];
  models: ModelConfig[];
  /** Nothing is configured and no model is installed: the default model has to be fetched. */
  needsModel: boolean;
  /** The one line `easel serve` prints when nothing can generate. */
  hint?: string;
}

export function withEmbeddedDefault(backends: BackendConfig[], models: ModelConfig[], dataDir: string): EmbeddedSetup {
  const modelsDir = resolve(dataDir, 'models');
  const withDirs = backends.map((b) => (b.type === 'onnx' && !b.modelsDir ? { ...b, modelsDir } : b));
  if (backends.length > 0 || models.length > 0) return { backends: withDirs, models, needsModel: false };
  const pulled = pulledPipelines(modelsDir);
  if (pulled.length === 0) return { backends: withDirs, models, needsModel: true, hint: PULL_HINT };
  return {
    needsModel: false,
    backends: [onnxBackendConfigSchema.parse({ type: 'onnx', name: EMBEDDED_BACKEND, modelsDir })],
    models: pulled.map((m, i) => ({
      name: m.name,
      backend: EMBEDDED_BACKEND,
      model: m.name,
      default: i === 0,
      description: m.manifest?.description ?? `local model in ${join(modelsDir, m.name)}`,
    })),
  };
}
