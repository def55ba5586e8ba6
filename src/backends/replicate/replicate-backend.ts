/**
 * The `replicate` backend: Replicate predictions over its HTTP API, written over fetch so the
 * prediction id is saved with easel's job before easel waits on it (no SDK call keeps that handle).
 *
 * Create answers 201 with the prediction; with `Prefer: wait` it may still answer an unfinished
 * one, which is then waited on like any other. Waiting is a webhook (Standard Webhooks, verified
 * with the account's signing secret) as the fast path and polling `urls.get` with backoff as the
 * fallback. Outputs (a URL string or an array of them, expiring after an hour) are downloaded the
 * moment the prediction succeeds. `aborted` (a Cancel-After deadline passed before the run started,
 * unbilled) is retryable; `failed` with a safety message is a content-policy violation.
 */
import type { BackendCallContext, BackendImage, BackendRequest, BackendResult, BackendWarning } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { HostedBackend, cleanupSignal, hostedInit } from '../http/hosted-backend.ts';
import type { HostedBackendDeps } from '../http/hosted-backend.ts';
import { callFingerprint, planJobs, planProgress, runDurable } from '../http/durable.ts';
import { downloadImage } from '../http/media.ts';
import { MODERATION_WORDS, moderationError } from '../http/errors.ts';
import { PollBackoff } from '../http/retry.ts';
import { ProviderWaiters, SeenIds, verifyStandardWebhook } from '../http/webhooks.ts';
import type { WebhookOutcome, WebhookReceiver, WebhookRequest } from '../http/webhooks.ts';
import { webhookTarget } from '../http/options.ts';
import { replicateBackendConfigSchema } from './options.ts';
import type { ReplicateBackendConfig, ReplicateBackendConfigInput } from './options.ts';
import { buildInput, parseModelRef, profileFor, profileOptions, replicateModelSpec } from './models.ts';
import type { ReplicateProfile } from './models.ts';
import { perModel } from '../per-model.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { otherWarning, uniqueWarnings } from '../warnings.ts';

const TOKEN_ENVS = ['REPLICATE_API_TOKEN'];
const TERMINAL = new Set(['succeeded', 'failed', 'canceled', 'aborted']);

export interface Prediction {
  id: string;
  status: string;
  output?: unknown;
  error?: unknown;
  logs?: string;
  urls?: { get?: string; cancel?: string };
  metrics?: { predict_time?: number; total_time?: number };
}

/** What is saved per prediction: enough to wait on it and cancel it after a restart. */
export interface ReplicateHandle {
  id: string;
  get: string;
  cancel: string;
  count: number;
}

function isHandle(v: unknown): v is ReplicateHandle {
  const h = v as ReplicateHandle;
  return !!h && typeof h === 'object' && typeof h.id === 'string' && typeof h.get === 'string' && typeof h.count === 'number';
}

function isPrediction(v: unknown): v is Prediction {
  return !!v && typeof v === 'object' && typeof (v as Prediction).id === 'string' && typeof (v as Prediction).status === 'string';
}

/** Output URLs in whatever shape the model returns them (a string, an array, nested arrays, `{image}`). */
export function outputUrls(output: unknown): string[] {
  if (typeof output === 'string') return /^(https?:|data:)/.test(output) ? [output] : [];
  if (Array.isArray(output)) return output.flatMap(outputUrls);
  if (output && typeof output === 'object') return Object.values(output).flatMap(outputUrls);
  return [];
}

/** The last tqdm percentage in the logs (`50%|█████     | 2/4`), as 0..1. */
export function logProgress(logs: string | undefined): number | undefined {
  if (!logs) return undefined;
  let last: number | undefined;
  for (const m of logs.matchAll(/(\d{1,3})%\|/g)) last = Number(m[1]) / 100;
  return last === undefined ? undefined : Math.min(1, last);
}

interface WaitOutcome {
  images: BackendImage[];
  predictTime?: number;
  id: string;
}

export class ReplicateBackend extends HostedBackend implements WebhookReceiver {
  readonly type = 'replicate';
  readonly config: ReplicateBackendConfig;
  private readonly baseUrl: string;
  private readonly webhook: string | undefined;
  private readonly waiters = new ProviderWaiters();
  private readonly seen = new SeenIds();
  /** Predictions answered by create (with `Prefer: wait`), used before the first poll. */
  private readonly fresh = new Map<string, Prediction>();
  /** A model's profile with this backend's config applied (remembered per model). */
  private readonly profile = perModel((model): ReplicateProfile => profileFor(model, this.config.input));
  private webhookSecret: string | undefined;
  private secretFetch: Promise<string | undefined> | undefined;

  constructor(config: ReplicateBackendConfigInput | ReplicateBackendConfig, deps: HostedBackendDeps = {}) {
    const cfg = replicateBackendConfigSchema.parse(config);
    const env = deps.env ?? process.env;
    super(hostedInit(cfg, deps, { provider: 'Replicate', capabilities: { generate: true, edit: true, mask: true, variation: false, maxInputImages: 1 }, keyEnvs: TOKEN_ENVS }));
    this.config = cfg;
    this.baseUrl = cfg.baseUrl.replace(/\/+$/, '');
    this.webhook = webhookTarget(cfg.webhookUrl, deps.publicUrl, cfg.name);
    this.webhookSecret = cfg.webhookSecret ?? (cfg.webhookSecretEnv ? env[cfg.webhookSecretEnv] : undefined);
  }

  private headers(): Record<string, string> {
    return { authorization: `Bearer ${this.apiKey}`, 'content-type': 'application/json', accept: 'application/json' };
  }

  override modelSpec(model: string): BackendModelSpec {
    return replicateModelSpec(this.profile(model), this.capabilities, this.config.usdPerSecond !== undefined);
  }

  protected async run(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    if (request.kind === 'variation') {
      throw new BackendError(`Backend "${this.name}" (Replicate) does not do variations`, { code: 'invalid_request' });
    }
    this.requireKey();
    const ref = parseModelRef(request.model);
    const profile = this.profile(request.model);
    const perPrediction = profile.numOutputsField ? profile.maxOutputs : 1;
    const plan = planJobs(request.n, perPrediction);
    const firstSeeds = plan.map((_, i) => plan.slice(0, i).reduce((a, b) => a + b, 0));
    const accepted = acceptedOptions(request.providerOptions, profileOptions(profile), { backend: this.name, model: request.model });
    const warnings: BackendWarning[] = [...accepted.warnings];
    const dataUri = (data: Uint8Array, type: string) => `data:${type};base64,${Buffer.from(data).toString('base64')}`;
    // Build every input up front: a request the model cannot take fails before anything is paid for.
    const inputs = plan.map((count, i) => {
      const seed = request.seed === undefined ? undefined : request.seed + firstSeeds[i]!;
      const built = buildInput(request, count, seed, profile, accepted.options, this.name, dataUri);
      warnings.push(...built.warnings);
      return built.input;
    });
    const report = planProgress(plan, request.n, (p) => ctx.reportProgress(p));

    const { results, resumed } = await runDurable<ReplicateHandle, WaitOutcome>({
      backend: this.name,
      ctx,
      fingerprint: callFingerprint(['replicate', request.model, request.kind, request.n, request.seed ?? null, request.size ?? null]),
      plan,
      isHandle,
      submit: (i, count, signal) => this.create(ref, inputs[i]!, count, signal),
      wait: async (handle, i, signal, wasResumed) => {
        const out = await this.waitFor(handle, signal, wasResumed, (p) => report(i, p));
        report(i, 1);
        return out;
      },
      cancel: (handle) => this.cancelPrediction(handle),
      onResume: (count) => this.log.info({ backend: this.name, jobId: ctx.jobId, predictions: count }, 'resuming saved Replicate predictions'),
    });

    const images = results.flatMap((r) => r.images);
    const times = results.map((r) => r.predictTime);
    const costUsd =
      this.config.usdPerSecond !== undefined && times.every((t) => typeof t === 'number')
        ? round6((times as number[]).reduce((a, b) => a + b, 0) * this.config.usdPerSecond)
        : undefined;
    if (images.length < request.n) warnings.push(otherWarning(`Replicate returned ${images.length} of ${request.n} requested images`));
    return {
      images,
      warnings: uniqueWarnings(warnings),
      ...(costUsd !== undefined ? { costUsd } : {}),
      providerMetadata: {
        predictions: results.map((r) => r.id),
        resumed,
        ...(times.every((t) => typeof t === 'number') ? { predictTime: times } : {}),
      },
    };
  }

  private async create(ref: ReturnType<typeof parseModelRef>, input: Record<string, unknown>, count: number, signal: AbortSignal): Promise<ReplicateHandle> {
    let url: string;
    const body: Record<string, unknown> = { input };
    if (ref.kind === 'model') url = `${this.baseUrl}/models/${ref.owner}/${ref.name}/predictions`;
    else if (ref.kind === 'deployment') url = `${this.baseUrl}/deployments/${ref.owner}/${ref.name}/predictions`;
    else {
      url = `${this.baseUrl}/predictions`;
      body.version = ref.version;
    }
    if (this.webhook) {
      body.webhook = this.webhook;
      body.webhook_events_filter = ['completed'];
    }
    const headers = this.headers();
    const wait = this.config.preferWaitSeconds;
    if (wait > 0) headers.prefer = `wait=${wait}`;
    if (this.config.cancelAfter) headers['cancel-after'] = this.config.cancelAfter;
    const res = await this.callOk(url, {
      method: 'POST',
      headers,
      body: JSON.stringify(body),
      signal,
      idempotent: false,
      timeoutMs: Math.max(this.config.timeoutSeconds, wait + 15) * 1000,
    });
    const prediction = res.json();
    if (!isPrediction(prediction)) {
      throw new BackendError(`Replicate (backend "${this.name}") answered ${res.status} without a prediction`, { code: 'backend_error' });
    }
    if (prediction.status !== 'starting') this.fresh.set(prediction.id, prediction);
    return {
      id: prediction.id,
      get: prediction.urls?.get && this.sameOrigin(prediction.urls.get, [this.baseUrl]) ? prediction.urls.get : `${this.baseUrl}/predictions/${prediction.id}`,
      cancel: prediction.urls?.cancel && this.sameOrigin(prediction.urls.cancel, [this.baseUrl]) ? prediction.urls.cancel : `${this.baseUrl}/predictions/${prediction.id}/cancel`,
      count,
    };
  }

  private async waitFor(handle: ReplicateHandle, signal: AbortSignal, resumed: boolean, progress: (p: number) => void): Promise<WaitOutcome> {
    const backoff = new PollBackoff(this.config.pollIntervalMs, this.config.maxPollIntervalMs);
    let prediction: Prediction | undefined = this.fresh.get(handle.id);
    this.fresh.delete(handle.id);
    // A resumed prediction may have finished long ago: look at once.
    let delay = resumed ? 0 : backoff.next();
    while (!prediction || !TERMINAL.has(prediction.status)) {
      if (prediction) {
        const p = prediction.status === 'processing' ? (logProgress(prediction.logs) ?? 0.1) : 0.02;
        progress(Math.min(0.95, p));
      }
      const pushed = delay > 0 ? await this.waiters.wait(handle.id, delay, signal) : this.waiters.take(handle.id);
      prediction = isPrediction(pushed) ? pushed : await this.poll(handle, signal);
      delay = backoff.next();
    }
    return this.settle(handle, prediction, signal);
  }

  private async poll(handle: ReplicateHandle, signal: AbortSignal): Promise<Prediction> {
    const res = await this.callOk(handle.get, { headers: this.headers(), signal, idempotent: true });
    const prediction = res.json();
    if (!isPrediction(prediction)) {
      throw new BackendError(`Replicate (backend "${this.name}") answered a poll of ${handle.id} without a prediction`, {
        code: 'backend_error',
        retryable: true,
      });
    }
    return prediction;
  }

  private async settle(handle: ReplicateHandle, prediction: Prediction, signal: AbortSignal): Promise<WaitOutcome> {
    const error = typeof prediction.error === 'string' ? prediction.error : prediction.error ? JSON.stringify(prediction.error) : '';
    if (prediction.status === 'failed') {
      if (MODERATION_WORDS.test(error)) throw moderationError('Replicate', this.name, error);
      throw new BackendError(`Replicate prediction ${handle.id} failed (backend "${this.name}"): ${error || 'no error given'}`, {
        code: 'backend_error',
      });
    }
    if (prediction.status === 'aborted') {
      throw new BackendError(
        `Replicate prediction ${handle.id} was aborted before it started (Cancel-After ${this.config.cancelAfter ?? 'deadline'} passed; not billed)`,
        { code: 'backend_unavailable', retryable: true },
      );
    }
    if (prediction.status === 'canceled') {
      throw new BackendError(`Replicate prediction ${handle.id} was canceled at Replicate (backend "${this.name}")`, { code: 'backend_error' });
    }
    const urls = outputUrls(prediction.output);
    if (urls.length === 0) {
      throw new BackendError(`Replicate prediction ${handle.id} succeeded with no image output (backend "${this.name}")`, { code: 'backend_error' });
    }
    // Output URLs expire after an hour: copy them now. They live on a CDN, so no credentials go along.
    const images = await Promise.all(
      urls.slice(0, handle.count).map(async (url): Promise<BackendImage> => {
        const img = await downloadImage(this.http, url, {
          signal,
          headers: this.sameOrigin(url, [this.baseUrl]) ? { authorization: `Bearer ${this.apiKey}` } : undefined,
        });
        return { data: img.data, mediaType: img.mediaType };
      }),
    );
    return { images, predictTime: prediction.metrics?.predict_time, id: prediction.id };
  }

  private async cancelPrediction(handle: ReplicateHandle): Promise<void> {
    try {
      await this.http.send(handle.cancel, { method: 'POST', headers: this.headers(), signal: cleanupSignal(), idempotent: true });
      this.log.info({ backend: this.name, prediction: handle.id }, 'Replicate prediction canceled');
    } catch (err) {
      this.log.warn({ backend: this.name, prediction: handle.id, err: (err as Error).message }, 'could not cancel Replicate prediction');
    }
  }

  /** The signing secret: configured, or the account's default one fetched once with the API token. */
  private async signingSecret(): Promise<string | undefined> {
    if (this.webhookSecret) return this.webhookSecret;
    if (!this.apiKey) return undefined;
    this.secretFetch ??= (async () => {
      try {
        const res = await this.http.send(`${this.baseUrl}/webhooks/default/secret`, {
          headers: this.headers(),
          signal: cleanupSignal(),
          idempotent: true,
        });
        const key = (res.json() as { key?: unknown } | undefined)?.key;
        if (res.ok && typeof key === 'string') {
          this.webhookSecret = key;
          return key;
        }
        this.log.warn({ backend: this.name, status: res.status }, 'could not fetch the Replicate webhook signing secret');
      } catch (err) {
        this.log.warn({ backend: this.name, err: (err as Error).message }, 'could not fetch the Replicate webhook signing secret');
      }
      return undefined;
    })().finally(() => {
      this.secretFetch = undefined;
    });
    return this.secretFetch;
  }

  async handleWebhook(req: WebhookRequest): Promise<WebhookOutcome> {
    const secret = await this.signingSecret();
    if (!secret) return { status: 503, message: 'no webhook signing secret known for this backend' };
    const verified = verifyStandardWebhook({ secret, headers: req.headers, rawBody: req.rawBody });
    if (!verified.ok) {
      this.log.warn({ backend: this.name, reason: verified.reason }, 'Replicate webhook refused');
      return { status: 401, message: `signature not valid: ${verified.reason}` };
    }
    let prediction: unknown;
    try {
      prediction = JSON.parse(req.rawBody.toString('utf8'));
    } catch {
      return { status: 400, message: 'body is not JSON' };
    }
    if (!isPrediction(prediction)) return { status: 400, message: 'body is not a prediction' };
    if (this.seen.seen(`${verified.id}:${prediction.status}`)) return { status: 200, message: 'duplicate delivery', providerId: prediction.id };
    this.waiters.notify(prediction.id, prediction);
    return { status: 200, message: 'ok', providerId: prediction.id };
  }
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}
