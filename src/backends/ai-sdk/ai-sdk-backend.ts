/**
 * The `ai-sdk` backend: any Vercel AI SDK provider package with an image model, loaded by name at
 * first use and called through `generateImage` (its retries honour `retry-after`). Errors become
 * easel's codes the same way as for the dedicated backends: 401/403 turn health red with one log
 * line, moderation refusals name the provider, 429/5xx are retryable.
 */
import { APICallError, RetryError, generateImage } from 'ai';
import type { ImageModel } from 'ai';
import type { BackendCallContext, BackendRequest, BackendResult, BackendWarning } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { HostedBackend, hostedInit } from '../http/hosted-backend.ts';
import type { HostedBackendDeps } from '../http/hosted-backend.ts';
import { MODERATION_WORDS, httpFailureError, providerMessage } from '../http/errors.ts';
import { sniffMediaType } from '../http/media.ts';
import { easelParams, mapParams } from '../http/param-table.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { compatibility, uniqueWarnings } from '../warnings.ts';
import type { JobWarning } from '../../core/job.ts';
import { aiSdkBackendConfigSchema } from './options.ts';
import { aiSdkModelSpec, aiSdkOptionsSchema, aiSdkRows } from './models.ts';
import type { z } from 'zod';
import type { AiSdkBackendConfig, AiSdkBackendConfigInput } from './options.ts';

type ProviderFactory = (settings: Record<string, unknown>) => {
  image?: (id: string) => ImageModel;
  imageModel?: (id: string) => ImageModel;
};

/** `@ai-sdk/black-forest-labs` → `blackForestLabs`. */
export function defaultOptionsKey(pkg: string): string {
  const last = pkg.split('/').pop() ?? pkg;
  return last.replace(/[-_.]+([a-z0-9])/gi, (_, c: string) => c.toUpperCase());
}

/** Words in an error body that mean a moderation refusal (OpenAI's codes among them). */
const MODERATION_CODES = /moderation_blocked|content_policy_violation/;

export interface AiSdkBackendDeps extends HostedBackendDeps {
  /** Replaces `import(package)` (tests). */
  importer?: (pkg: string) => Promise<Record<string, unknown>>;
}

export class AiSdkBackend extends HostedBackend {
  readonly type = 'ai-sdk';
  readonly config: AiSdkBackendConfig;
  private readonly importer: (pkg: string) => Promise<Record<string, unknown>>;
  private readonly fetchImpl: typeof globalThis.fetch | undefined;
  private provider$: Promise<ReturnType<ProviderFactory>> | undefined;
  private readonly models = new Map<string, ImageModel>();
  private readonly optionsSchema: z.ZodObject;

  constructor(config: AiSdkBackendConfigInput | AiSdkBackendConfig, deps: AiSdkBackendDeps = {}) {
    const cfg = aiSdkBackendConfigSchema.parse(config);
    const edit = cfg.edit;
    // Provider packages read their own env var when no key is given.
    super(
      hostedInit(cfg, deps, {
        provider: cfg.package,
        capabilities: { generate: true, edit, mask: edit, variation: false, maxInputImages: edit ? 16 : 0 },
        keyEnvs: [],
        keyHintDefaults: [`the env var ${cfg.package} reads`],
        keyRequired: false,
      }),
    );
    this.config = cfg;
    this.optionsSchema = aiSdkOptionsSchema(cfg);
    this.importer = deps.importer ?? ((pkg) => import(pkg) as Promise<Record<string, unknown>>);
    this.fetchImpl = deps.fetch;
  }

  private async providerInstance(): Promise<ReturnType<ProviderFactory>> {
    this.provider$ ??= (async () => {
      let mod: Record<string, unknown>;
      try {
        mod = await this.importer(this.config.package);
      } catch (err) {
        throw new BackendError(
          `Backend "${this.name}": the AI SDK provider package ${this.config.package} is not installed (npm install ${this.config.package}): ${(err as Error).message}`,
          { code: 'backend_error' },
        );
      }
      const name = this.config.factory ?? Object.keys(mod).find((k) => /^create[A-Z]/.test(k) && typeof mod[k] === 'function');
      const factory = name ? mod[name] : undefined;
      if (typeof factory !== 'function') {
        throw new BackendError(`Backend "${this.name}": ${this.config.package} has no factory export ${name ?? 'create…'}`, { code: 'backend_error' });
      }
      const settings: Record<string, unknown> = { ...this.config.settings };
      if (this.apiKey) settings.apiKey = this.apiKey;
      if (this.fetchImpl) settings.fetch = this.fetchImpl;
      return (factory as ProviderFactory)(settings);
    })();
    this.provider$.catch(() => {
      this.provider$ = undefined;
    });
    return this.provider$;
  }

  private async model(id: string): Promise<ImageModel> {
    const hit = this.models.get(id);
    if (hit) return hit;
    const provider = await this.providerInstance();
    const make = provider.image ?? provider.imageModel;
    if (typeof make !== 'function') {
      throw new BackendError(`Backend "${this.name}": ${this.config.package} has no image models`, { code: 'backend_error' });
    }
    const model = make.call(provider, id);
    this.models.set(id, model);
    return model;
  }

  /** A loaded provider model's own `maxImagesPerCall`, when it states a number. */
  private modelMaxImages(id: string): number | undefined {
    const max = (this.models.get(id) as { maxImagesPerCall?: unknown } | undefined)?.maxImagesPerCall;
    return typeof max === 'number' && max > 0 ? max : undefined;
  }

  override modelSpec(model: string): BackendModelSpec {
    return aiSdkModelSpec(model, this.config, this.capabilities, this.modelMaxImages(model), this.optionsSchema);
  }

  /**
   * The provider's options for one call: the accepted request options, then easel's own fields under
   * the names the package (or config) gives them, which always win.
   */
  private providerOptionsFor(request: BackendRequest): { options: Record<string, unknown>; warnings: BackendWarning[] } {
    const spec = this.modelSpec(request.model);
    const accepted = acceptedOptions(request.providerOptions, spec.providerOptions, { backend: this.name, model: request.model });
    const warnings = [...accepted.warnings];
    let quality = request.quality;
    if (quality !== undefined && spec.qualities && !spec.qualities.includes(quality)) {
      const mapped = spec.qualityFor?.(quality);
      if (mapped !== undefined) warnings.push(compatibility('quality', `quality "${quality}" is sent as "${mapped}" to ${request.model} on backend "${this.name}"`));
      quality = mapped;
    }
    const table = mapParams(aiSdkRows(this.config, this.name), easelParams(request, { quality }), { options: accepted.options });
    return { options: table.body, warnings: [...warnings, ...table.warnings] };
  }

  protected async run(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    if (request.kind === 'variation') throw new BackendError(`Backend "${this.name}" does not do variations`, { code: 'invalid_request' });
    if (request.kind === 'edit' && !this.capabilities.edit) throw new BackendError(`Backend "${this.name}" does not do edits`, { code: 'invalid_request' });
    const key = this.config.providerOptionsKey ?? defaultOptionsKey(this.config.package);
    const { options, warnings } = this.providerOptionsFor(request);
    const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(this.config.timeoutSeconds * 1000)]);
    try {
      const model = await this.model(request.model);
      const prompt =
        request.kind === 'edit'
          ? { text: request.prompt, images: request.inputImages.map((i) => i.data), ...(request.mask ? { mask: request.mask.data } : {}) }
          : request.prompt;
      const result = await generateImage({
        model,
        prompt,
        n: request.n,
        ...(request.size ? { size: `${request.size.width}x${request.size.height}` as `${number}x${number}` } : {}),
        ...(request.seed !== undefined ? { seed: request.seed } : {}),
        providerOptions: { [key]: options as Record<string, never> },
        maxRetries: this.config.maxRetries,
        abortSignal: signal,
      });
      this.credentialsAccepted();
      for (const w of result.warnings) warnings.push(sdkWarning(w));
      const images = result.images.map((f) => ({ data: f.uint8Array, mediaType: sniffMediaType(f.uint8Array) ?? f.mediaType }));
      ctx.reportProgress(1);
      return { images, warnings: uniqueWarnings(warnings) };
    } catch (err) {
      if (ctx.signal.aborted) throw new BackendError(`Call to backend "${this.name}" was aborted`, { code: 'aborted', cause: err });
      throw this.mapError(err, signal);
    }
  }

  private mapError(err: unknown, signal: AbortSignal): BackendError {
    if (err instanceof BackendError) return err;
    const inner = RetryError.isInstance(err) ? err.lastError : err;
    if (signal.aborted || (inner instanceof Error && (inner.name === 'TimeoutError' || inner.name === 'AbortError'))) {
      return new BackendError(`Backend "${this.name}" did not answer within ${this.config.timeoutSeconds} s`, { code: 'timeout', retryable: true, cause: err });
    }
    if (APICallError.isInstance(inner) && typeof inner.statusCode === 'number') {
      let body: unknown = inner.responseBody;
      try {
        body = inner.responseBody ? JSON.parse(inner.responseBody) : inner.message;
      } catch {
        // keep the text
      }
      const text = inner.responseBody ?? '';
      const message = providerMessage(body, inner.message);
      const moderation = MODERATION_CODES.test(text) || (inner.statusCode === 400 && MODERATION_WORDS.test(message));
      const mapped = httpFailureError({ provider: this.config.package, backend: this.name, status: inner.statusCode, body, moderation });
      if (mapped.code === 'backend_auth') this.credentialsRefused(mapped.message, inner.statusCode);
      return mapped;
    }
    if (APICallError.isInstance(inner)) {
      return new BackendError(`Backend "${this.name}" (${this.config.package}) is unreachable: ${inner.message}`, {
        code: 'backend_unavailable',
        retryable: true,
        cause: err,
      });
    }
    return new BackendError(`Backend "${this.name}" (${this.config.package}) failed: ${err instanceof Error ? err.message : String(err)}`, {
      code: 'backend_error',
      cause: err,
    });
  }
}

/** An AI SDK warning (`unsupported` / `compatibility` with a feature, or `other` with a message) as easel's. */
function sdkWarning(w: unknown): JobWarning {
  const o = w as { type?: string; feature?: string; setting?: string; details?: string; message?: string };
  const setting = o.feature ?? o.setting;
  const type = o.type === 'unsupported' || o.type === 'unsupported-setting' ? 'unsupported' : o.type === 'compatibility' ? 'compatibility' : 'other';
  const detail = o.details ?? o.message ?? (setting ? `${setting} is not supported by the provider` : 'the provider warned');
  return { type, ...(setting ? { setting } : {}), detail };
}
