/**
 * Builds backends from config and maps public model names to (backend, backend model). Each backend
 * type's definition (`src/backends/definitions.ts`) says how to build it; nothing else in easel
 * knows the concrete classes.
 */
import type { BackendConfig, ModelConfig } from '../config/schema.ts';
import type { BackendHealth, ImageBackend } from './image-backend.ts';
import { backendDefinition } from './definitions.ts';
import { completeSpec } from './model-spec.ts';
import type { BackendModelSpec, ModelSpec } from './model-spec.ts';
import type { BackendFactoryDeps } from './definition.ts';

export type { BackendFactoryDeps } from './definition.ts';

export type BackendFactory = (config: BackendConfig, deps: BackendFactoryDeps) => ImageBackend;

export interface ResolvedModel {
  /** Public name. */
  name: string;
  backend: ImageBackend;
  /** The backend's own model id. */
  backendModel: string;
  /** What the model accepts: the backend's declaration, narrowed by its `models[]` entry. */
  spec: ModelSpec;
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
  private readonly models = new Map<string, { backend: string; model: string; description?: string; config: ModelConfig }>();
  /** The last complete spec per configured model, with the backend spec it was made from. */
  private readonly specs = new WeakMap<ModelConfig, { raw: BackendModelSpec; spec: ModelSpec }>();
  private defaultName: string | undefined;
  private readonly healthCache = new Map<string, { value: BackendHealth; until: number }>();

  constructor(backends: ImageBackend[], models: ModelConfig[]) {
    for (const b of backends) this.backends.set(b.name, b);
    for (const m of models) this.models.set(m.name, { backend: m.backend, model: m.model ?? m.name, description: m.description, config: m });
    this.defaultName = models.find((m) => m.default)?.name ?? models[0]?.name;
  }

  /**
   * Adds backends and their models to a running server (the embedded default once its model is
   * downloaded): routing, the worker and `/v1/models` see them from the next request on.
   */
  add(backends: ImageBackend[], models: ModelConfig[]): void {
    for (const b of backends) this.backends.set(b.name, b);
    for (const m of models) this.models.set(m.name, { backend: m.backend, model: m.model ?? m.name, description: m.description, config: m });
    this.defaultName ??= models.find((m) => m.default)?.name ?? models[0]?.name;
  }

  static fromConfig(
    backends: BackendConfig[],
    models: ModelConfig[],
    extra: Record<string, BackendFactory> = {},
    deps: BackendFactoryDeps = {},
  ): BackendRegistry {
    const built = backends.map((cfg) => {
      // Tests and plugins may replace a type's factory; otherwise its definition builds it.
      const factory = Object.hasOwn(extra, cfg.type) ? extra[cfg.type] : undefined;
      if (factory) return factory(cfg, deps);
      const definition = backendDefinition(cfg.type);
      if (!definition) throw new Error(`backend "${cfg.name}": unknown type "${cfg.type}"`);
      return definition.create(cfg, deps);
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
    return { name, backend, backendModel: entry.model, spec: this.specOf(backend, entry.model, entry.config) };
  }

  /**
   * A model's spec: asked of its backend each time (a backend may learn, e.g. the LoRAs a host has),
   * then config applied, which is done again only when the backend's answer is another object.
   */
  private specOf(backend: ImageBackend, model: string, config: ModelConfig): ModelSpec {
    const raw = backend.modelSpec(model);
    const memo = this.specs.get(config);
    if (memo?.raw === raw) return memo.spec;
    const spec = completeSpec(raw, model, { tier: config.tier, textInImage: config.textInImage, sizes: config.sizes, loras: config.loras });
    this.specs.set(config, { raw, spec });
    return spec;
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

  /** The LoRA adapters a model offers now (its spec asked afresh); undefined when it takes none or is unknown. */
  lorasOf(name: string): string[] | undefined {
    return this.resolve(name)?.spec.loras?.available.map((l) => l.name);
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
