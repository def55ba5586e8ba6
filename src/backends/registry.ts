/**
 * Builds backends from config and maps public model names to (backend, backend model). Each backend
 * type registers a factory here; nothing else in easel knows the concrete classes.
 */
import type { BackendConfig, ModelConfig } from '../config/schema.ts';
import type { BackendHealth, ImageBackend } from './image-backend.ts';
import { OpenAIBackend } from './openai/openai-backend.ts';
import { ReplicateBackend } from './replicate/replicate-backend.ts';
import { FalBackend } from './fal/fal-backend.ts';
import { BflBackend } from './bfl/bfl-backend.ts';
import { StabilityBackend } from './stability/stability-backend.ts';
import { ImagenBackend } from './imagen/imagen-backend.ts';
import { loadOptional } from '../core/optional-module.ts';
import { OnnxBackend } from './onnx/onnx-backend.ts';
import { ComfyUIBackend } from './comfyui/comfyui-backend.ts';
import { A1111Backend } from './a1111/a1111-backend.ts';
import type { HostedBackendDeps } from './http/hosted-backend.ts';

/** What the runtime hands every factory besides the backend's own config (logger, public URL for provider webhooks). */
export type BackendFactoryDeps = Pick<HostedBackendDeps, 'log' | 'publicUrl'>;

export type BackendFactory = (config: BackendConfig, deps: BackendFactoryDeps) => ImageBackend;

const factories: Record<string, BackendFactory> = {
  openai: (config) => new OpenAIBackend(config),
  replicate: (config, deps) => new ReplicateBackend(config as ConstructorParameters<typeof ReplicateBackend>[0], deps),
  fal: (config, deps) => new FalBackend(config as ConstructorParameters<typeof FalBackend>[0], deps),
  bfl: (config, deps) => new BflBackend(config as ConstructorParameters<typeof BflBackend>[0], deps),
  stability: (config, deps) => new StabilityBackend(config as ConstructorParameters<typeof StabilityBackend>[0], deps),
  imagen: (config, deps) => new ImagenBackend(config as ConstructorParameters<typeof ImagenBackend>[0], deps),
  // The AI SDK is loaded only when an ai-sdk backend is configured.
  'ai-sdk': (config, deps) => {
    const { AiSdkBackend } = loadOptional<typeof import('./ai-sdk/ai-sdk-backend.ts')>('./ai-sdk/ai-sdk-backend.ts', import.meta.url);
    return new AiSdkBackend(config as ConstructorParameters<typeof AiSdkBackend>[0], deps);
  },
  onnx: (config, deps) => new OnnxBackend(config as ConstructorParameters<typeof OnnxBackend>[0], { log: deps.log }),
  comfyui: (config, deps) => new ComfyUIBackend(config as ConstructorParameters<typeof ComfyUIBackend>[0], { log: deps.log }),
  a1111: (config, deps) => new A1111Backend(config as ConstructorParameters<typeof A1111Backend>[0], { log: deps.log }),
};

export interface ResolvedModel {
  /** Public name. */
  name: string;
  backend: ImageBackend;
  /** The backend's own model id. */
  backendModel: string;
}

export interface ModelInfo {
  name: string;
  backend: string;
  type: string;
  description?: string;
  isDefault: boolean;
}

export class BackendRegistry {
  private readonly backends = new Map<string, ImageBackend>();
  private readonly models = new Map<string, { backend: string; model: string; description?: string }>();
  private defaultName: string | undefined;
  private readonly healthCache = new Map<string, { value: BackendHealth; until: number }>();

  constructor(backends: ImageBackend[], models: ModelConfig[]) {
    for (const b of backends) this.backends.set(b.name, b);
    for (const m of models) this.models.set(m.name, { backend: m.backend, model: m.model ?? m.name, description: m.description });
    this.defaultName = models.find((m) => m.default)?.name ?? models[0]?.name;
  }

  /**
   * Adds backends and their models to a running server (the embedded default once its model is
   * downloaded): routing, the worker and `/v1/models` see them from the next request on.
   */
  add(backends: ImageBackend[], models: ModelConfig[]): void {
    for (const b of backends) this.backends.set(b.name, b);
    for (const m of models) this.models.set(m.name, { backend: m.backend, model: m.model ?? m.name, description: m.description });
    this.defaultName ??= models.find((m) => m.default)?.name ?? models[0]?.name;
  }

  static fromConfig(
    backends: BackendConfig[],
    models: ModelConfig[],
    extra: Record<string, BackendFactory> = {},
    deps: BackendFactoryDeps = {},
  ): BackendRegistry {
    const all = { ...factories, ...extra };
    const built = backends.map((cfg) => {
      const factory = all[cfg.type];
      if (!factory) throw new Error(`backend "${cfg.name}": unknown type "${cfg.type}"`);
      return factory(cfg, deps);
    });
    return new BackendRegistry(built, models);
  }

  get defaultModel(): string | undefined {
    return this.defaultName;
  }

  resolve(publicName: string | undefined): ResolvedModel | undefined {
    const name = publicName ?? this.defaultName;
    if (!name) return undefined;
    const entry = this.models.get(name);
    const backend = entry && this.backends.get(entry.backend);
    if (!entry || !backend) return undefined;
    return { name, backend, backendModel: entry.model };
  }

  hasModel(name: string): boolean {
    return this.models.has(name);
  }

  listModels(): ModelInfo[] {
    return [...this.models.entries()].map(([name, m]) => ({
      name,
      backend: m.backend,
      type: this.backends.get(m.backend)?.type ?? 'unknown',
      description: m.description,
      isDefault: name === this.defaultName,
    }));
  }

  listBackends(): ImageBackend[] {
    return [...this.backends.values()];
  }

  /** Health of every backend, cached briefly so probes and /ready stay cheap. */
  async health(maxAgeMs = 5000): Promise<Record<string, BackendHealth>> {
    const now = Date.now();
    const entries = await Promise.all(
      this.listBackends().map(async (b) => {
        const cached = this.healthCache.get(b.name);
        if (cached && cached.until > now) return [b.name, cached.value] as const;
        let value: BackendHealth;
        try {
          value = await b.health();
        } catch (err) {
          value = { ok: false, message: (err as Error).message };
        }
        this.healthCache.set(b.name, { value, until: now + maxAgeMs });
        return [b.name, value] as const;
      }),
    );
    return Object.fromEntries(entries);
  }

  async close(): Promise<void> {
    await Promise.all(this.listBackends().map((b) => b.close?.()));
  }
}
