/**
 * What every hosted-provider backend shares: its HTTP client, credentials from config or the
 * environment, health that turns red (with one clear log line) the moment a provider refuses the
 * credentials and green again once it accepts them, and the mapping of failures to BackendErrors.
 */
import type {
  BackendCallContext,
  BackendCapabilities,
  BackendHealth,
  BackendRequest,
  BackendResult,
  ImageBackend,
} from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { ProviderHttp } from './client.ts';
import type { FetchLike, HttpAnswer, HttpRequest } from './client.ts';
import { httpFailureError } from './errors.ts';
import type { RetryPolicy } from './retry.ts';
import type { BackendModelSpec } from '../model-spec.ts';

/** The part of a pino logger backends use (tests pass a recorder). */
export interface BackendLog {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

export const silentLog: BackendLog = { error() {}, warn() {}, info() {}, debug() {} };

/** What a hosted backend may be handed besides its config (by the registry, or by tests). */
export interface HostedBackendDeps {
  /** Replaces global fetch (tests, proxies). */
  fetch?: FetchLike;
  /** Where `*Env` keys are looked up (default process.env). */
  env?: Record<string, string | undefined>;
  log?: BackendLog;
  /** easel's public base URL when one is configured (`server.publicUrl`): provider webhooks are sent there. */
  publicUrl?: string;
  /** Backoff tuning (tests shorten the waits; `maxRetries` comes from config). */
  retry?: Partial<Omit<RetryPolicy, 'maxRetries'>>;
}

export interface HostedBackendInit {
  name: string;
  /** Display name in messages (`Replicate`, `fal`, …). */
  provider: string;
  capabilities: BackendCapabilities;
  timeoutMs: number;
  maxRetries: number;
  apiKey: string | undefined;
  /** Where the key comes from, for messages (`apiKey or REPLICATE_API_TOKEN`). */
  keyHint: string;
  /** False for providers that serve some models without a key. */
  keyRequired?: boolean;
  deps: HostedBackendDeps;
}

export abstract class HostedBackend implements ImageBackend {
  abstract readonly type: string;
  readonly name: string;
  readonly capabilities: BackendCapabilities;
  protected readonly provider: string;
  protected readonly http: ProviderHttp;
  protected readonly log: BackendLog;
  protected readonly apiKey: string | undefined;
  protected readonly keyHint: string;
  private readonly keyRequired: boolean;
  private authFailure: string | undefined;

  constructor(init: HostedBackendInit) {
    this.name = init.name;
    this.provider = init.provider;
    this.capabilities = init.capabilities;
    this.apiKey = init.apiKey || undefined;
    this.keyHint = init.keyHint;
    this.keyRequired = init.keyRequired ?? true;
    this.log = init.deps.log ?? silentLog;
    this.http = new ProviderHttp({
      provider: init.provider,
      backend: init.name,
      fetch: init.deps.fetch,
      timeoutMs: init.timeoutMs,
      retry: { ...init.deps.retry, maxRetries: init.maxRetries },
      onRetry: (info) =>
        this.log.warn({ backend: this.name, provider: this.provider, ...info }, `${this.provider} call retried (${info.status ?? info.error})`),
    });
  }

  /** What one of the provider's models takes (each provider declares its own; see its `models.ts`). */
  abstract modelSpec(model: string): BackendModelSpec;

  /** Every provider failure leaves as a BackendError (policy, auth, retryable, aborted), whatever threw it. */
  async generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    try {
      return await this.run(request, ctx);
    } catch (err) {
      throw this.asBackendError(err, ctx.signal);
    }
  }

  /** The provider call itself. */
  protected abstract run(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult>;

  /**
   * Green unless credentials are missing or the provider refused them on the last call. Health
   * never spends money: no generation is made to find out.
   */
  async health(): Promise<BackendHealth> {
    if (this.keyRequired && !this.apiKey) return { ok: false, message: `no ${this.provider} API key configured (set ${this.keyHint})` };
    if (this.authFailure) return { ok: false, message: this.authFailure };
    return { ok: true };
  }

  async close(): Promise<void> {}

  protected requireKey(): void {
    if (this.keyRequired && !this.apiKey) {
      throw new BackendError(`Backend "${this.name}" has no ${this.provider} API key (set ${this.keyHint})`, { code: 'backend_auth' });
    }
  }

  /** Sends and notes a credentials success; answers whatever status came back. */
  protected async call(url: string | URL, req: HttpRequest): Promise<HttpAnswer> {
    const res = await this.http.send(url, req);
    if (res.ok) this.credentialsAccepted();
    return res;
  }

  /** Sends and throws the mapped BackendError on any non-2xx. */
  protected async callOk(url: string | URL, req: HttpRequest, opts: { isModeration?: (res: HttpAnswer) => boolean } = {}): Promise<HttpAnswer> {
    const res = await this.call(url, req);
    if (!res.ok) throw this.failure(res, { moderation: opts.isModeration?.(res) });
    return res;
  }

  /** The BackendError for a non-2xx answer; a credentials refusal also turns health red. */
  protected failure(res: HttpAnswer, extra: { moderation?: boolean; quota?: boolean } = {}): BackendError {
    const err = httpFailureError({ provider: this.provider, backend: this.name, status: res.status, body: res.json() ?? res.text(), ...extra });
    if (err.code === 'backend_auth') this.credentialsRefused(err.message, res.status);
    return err;
  }

  protected credentialsRefused(message: string, status?: number): void {
    if (this.authFailure === undefined) {
      this.log.error(
        { backend: this.name, provider: this.provider, status },
        `backend "${this.name}" is unhealthy: ${message} — check ${this.keyHint}`,
      );
    }
    this.authFailure = message;
  }

  protected credentialsAccepted(): void {
    if (this.authFailure !== undefined) {
      this.log.info({ backend: this.name, provider: this.provider }, `backend "${this.name}": ${this.provider} accepts the credentials again`);
      this.authFailure = undefined;
    }
  }

  /** Any thrown value as a BackendError (aborts stay `aborted`). */
  protected asBackendError(err: unknown, signal: AbortSignal): BackendError {
    if (signal.aborted) {
      return err instanceof BackendError && err.code === 'aborted'
        ? err
        : new BackendError(`Call to backend "${this.name}" was aborted`, { code: 'aborted', cause: err });
    }
    if (err instanceof BackendError) return err;
    return new BackendError(`Backend "${this.name}" (${this.provider}) failed: ${err instanceof Error ? err.message : String(err)}`, {
      code: 'backend_error',
      cause: err,
    });
  }

  /** Headers for a URL: credentials only for the provider's own origins. */
  protected sameOrigin(url: string, origins: string[]): boolean {
    try {
      const o = new URL(url).origin;
      return origins.some((base) => new URL(base).origin === o);
    } catch {
      return false;
    }
  }
}

/** The config fields every hosted backend shares (src/backends/http/options.ts). */
export interface HostedConfigFields {
  name: string;
  timeoutSeconds: number;
  maxRetries: number;
  maxImagesPerCall: number;
  apiKey?: string;
  apiKeyEnv?: string;
}

/**
 * A hosted backend's init from its config: name, timeouts, retries and the key (the config value,
 * else `apiKeyEnv`, else the provider's usual env vars `keyEnvs`).
 */
export function hostedInit(
  cfg: HostedConfigFields,
  deps: HostedBackendDeps,
  opts: { provider: string; capabilities: Omit<BackendCapabilities, 'maxImagesPerCall'>; keyEnvs: string[]; keyRequired?: boolean; keyHintDefaults?: string[] },
): HostedBackendInit {
  return {
    name: cfg.name,
    provider: opts.provider,
    capabilities: { ...opts.capabilities, maxImagesPerCall: cfg.maxImagesPerCall },
    timeoutMs: cfg.timeoutSeconds * 1000,
    maxRetries: cfg.maxRetries,
    apiKey: resolveKey(cfg.apiKey, cfg.apiKeyEnv, opts.keyEnvs, deps.env ?? process.env),
    keyHint: keyHint('apiKey', cfg.apiKeyEnv, opts.keyHintDefaults ?? opts.keyEnvs),
    ...(opts.keyRequired === undefined ? {} : { keyRequired: opts.keyRequired }),
    deps,
  };
}

/** Resolves a key: the config value, else the named env var, else the provider's usual env vars. */
export function resolveKey(
  value: string | undefined,
  envName: string | undefined,
  defaults: string[],
  env: Record<string, string | undefined> = process.env,
): string | undefined {
  if (value) return value;
  if (envName) return env[envName] || undefined;
  for (const name of defaults) if (env[name]) return env[name];
  return undefined;
}

/** `name` or the default env names, for messages. */
export function keyHint(configKey: string, envName: string | undefined, defaults: string[]): string {
  return `${configKey} or ${envName ?? defaults.join(' / ')}`;
}

/** A short wait for cleanup calls made after the job's own signal has aborted. */
export function cleanupSignal(ms = 10_000): AbortSignal {
  return AbortSignal.timeout(ms);
}
