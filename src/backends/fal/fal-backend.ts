/**
 * The `fal` backend: fal.ai's queue API over fetch, so the request id and the URLs fal returns are
 * saved with easel's job before easel waits (the official client keeps no handle we could persist).
 *
 * Auth is `Authorization: Key …`. Submit answers the `status_url`, `response_url` and `cancel_url`
 * to use — status and result live under `{owner}/{app}` without the endpoint's sub-path, so they are
 * never rebuilt by hand. Status answers 202 while queued or running and 200 once completed; the
 * result is then fetched (a failed request surfaces there as its error). Signed webhooks (Ed25519,
 * fal's JWKS) are the fast path, polling with backoff the fallback. Images flagged by the safety
 * checker are dropped; all flagged is a content-policy violation.
 */
import type { BackendCallContext, BackendImage, BackendRequest, BackendResult, BackendWarning } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { HostedBackend, cleanupSignal, hostedInit } from '../http/hosted-backend.ts';
import type { HostedBackendDeps } from '../http/hosted-backend.ts';
import { callFingerprint, planJobs, planProgress, runDurable } from '../http/durable.ts';
import { downloadImage } from '../http/media.ts';
import { MODERATION_WORDS, httpFailureError, moderationError, providerMessage } from '../http/errors.ts';
import { PollBackoff } from '../http/retry.ts';
import { ProviderWaiters, SeenIds } from '../http/webhooks.ts';
import type { WebhookOutcome, WebhookReceiver, WebhookRequest } from '../http/webhooks.ts';
import { webhookTarget } from '../http/options.ts';
import type { HttpAnswer } from '../http/client.ts';
import { easelParams, mapParams } from '../http/param-table.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { otherWarning, uniqueWarnings, unsupported } from '../warnings.ts';
import { falBackendConfigSchema } from './options.ts';
import { falEndpoint, falModelSpec, falRows } from './models.ts';
import type { FalBackendConfig, FalBackendConfigInput } from './options.ts';
import { FalJwks, verifyFalWebhook } from './webhook-signature.ts';

const KEY_ENVS = ['FAL_KEY'];

export interface FalHandle {
  id: string;
  status: string;
  response: string;
  cancel: string;
  count: number;
}

function isHandle(v: unknown): v is FalHandle {
  const h = v as FalHandle;
  return !!h && typeof h === 'object' && typeof h.id === 'string' && typeof h.status === 'string' && typeof h.response === 'string';
}

/** What fal's webhook posts. */
interface FalWebhookBody {
  request_id: string;
  status: 'OK' | 'ERROR';
  payload?: unknown;
  error?: string;
  payload_error?: string;
}

function isWebhookBody(v: unknown): v is FalWebhookBody {
  return !!v && typeof v === 'object' && typeof (v as FalWebhookBody).request_id === 'string' && typeof (v as FalWebhookBody).status === 'string';
}

interface FalImage {
  url?: string;
  content_type?: string;
}

interface WaitOutcome {
  images: BackendImage[];
  flagged: number;
  inferenceTime?: number;
  seed?: number;
}

/** `owner/app` of an endpoint id (`fal-ai/flux/schnell` → `fal-ai/flux`), for URLs submit did not name. */
export function falAppId(model: string): string {
  const parts = model.split('/').filter(Boolean);
  if (parts[0] === 'workflows' || parts[0] === 'comfy') return parts.join('/');
  return parts.slice(0, 2).join('/');
}

export class FalBackend extends HostedBackend implements WebhookReceiver {
  readonly type = 'fal';
  readonly config: FalBackendConfig;
  private readonly queueUrl: string;
  private readonly webhook: string | undefined;
  private readonly waiters = new ProviderWaiters();
  private readonly seen = new SeenIds();
  private readonly jwks: FalJwks;

  constructor(config: FalBackendConfigInput | FalBackendConfig, deps: HostedBackendDeps = {}) {
    const cfg = falBackendConfigSchema.parse(config);
    // Public fal models answer without a key.
    super(hostedInit(cfg, deps, { provider: 'fal', capabilities: { generate: true, edit: true, mask: true, variation: false, maxInputImages: 1 }, keyEnvs: KEY_ENVS, keyRequired: false }));
    this.config = cfg;
    this.queueUrl = cfg.queueUrl.replace(/\/+$/, '');
    this.webhook = webhookTarget(cfg.webhookUrl, deps.publicUrl, cfg.name);
    this.jwks = new FalJwks(this.http, cfg.jwksUrl);
  }

  private headers(json = false): Record<string, string> {
    return {
      accept: 'application/json',
      ...(json ? { 'content-type': 'application/json' } : {}),
      ...(this.apiKey ? { authorization: `Key ${this.apiKey}` } : {}),
    };
  }

  /** Credentials go only to fal's queue host (result images live on a CDN). */
  private authFor(url: string): Record<string, string> {
    return this.sameOrigin(url, [this.queueUrl]) ? this.headers() : { accept: 'application/json' };
  }

  override modelSpec(model: string): BackendModelSpec {
    return falModelSpec(model, this.capabilities, this.config.usdPerSecond !== undefined);
  }

  /** One request's input: config extras, then accepted provider options, then easel's mapped fields and images. */
  private buildInput(request: BackendRequest, count: number, seed: number | undefined): { input: Record<string, unknown>; warnings: BackendWarning[] } {
    const endpoint = falEndpoint(request.model);
    const accepted = acceptedOptions(request.providerOptions, endpoint.options, { backend: this.name, model: request.model });
    const mapped = mapParams(falRows(request.model, this.name, this.config.numImagesField), easelParams(request, { n: count, seed }), {
      base: this.config.extraInput,
      options: accepted.options,
    });
    const input = mapped.body;
    const warnings = [...accepted.warnings, ...mapped.warnings];
    // The safety checker is the operator's (config), never a request's options.
    input.enable_safety_checker = this.config.enableSafetyChecker;
    const dataUri = (data: Uint8Array, type: string) => `data:${type};base64,${Buffer.from(data).toString('base64')}`;
    if (request.inputImages.length) {
      if (!endpoint.image) throw new BackendError(`${request.model} on backend "${this.name}" takes no input image`, { code: 'invalid_request' });
      if (request.inputImages.length > 1) warnings.push(unsupported('image', `only the first input image is sent on backend "${this.name}"`));
      input.image_url = dataUri(request.inputImages[0]!.data, request.inputImages[0]!.mediaType);
    } else if (!endpoint.generate) {
      throw new BackendError(`${request.model} on backend "${this.name}" needs an input image`, { code: 'invalid_request' });
    }
    if (request.mask) {
      if (!endpoint.mask) throw new BackendError(`${request.model} on backend "${this.name}" takes no mask`, { code: 'invalid_request' });
      input.mask_url = dataUri(request.mask.data, request.mask.mediaType);
    }
    if (request.loras?.length) {
      if (!endpoint.loras) throw new BackendError(`${request.model} on backend "${this.name}" takes no LoRAs`, { code: 'invalid_request' });
      input.loras = request.loras.map((l) => ({ path: l.ref, scale: l.weight }));
    }
    return { input, warnings };
  }

  protected async run(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    if (request.kind === 'variation') throw new BackendError(`Backend "${this.name}" (fal) does not do variations`, { code: 'invalid_request' });
    this.requireKey();
    const perRequest = this.config.numImagesField ? this.config.maxImagesPerRequest : 1;
    const plan = planJobs(request.n, perRequest);
    const warnings: BackendWarning[] = [];
    let before = 0;
    const inputs = plan.map((count) => {
      const seed = request.seed === undefined ? undefined : request.seed + before;
      before += count;
      const built = this.buildInput(request, count, seed);
      warnings.push(...built.warnings);
      return built.input;
    });
    const report = planProgress(plan, request.n, (p) => ctx.reportProgress(p));

    const { results, resumed } = await runDurable<FalHandle, WaitOutcome>({
      backend: this.name,
      ctx,
      fingerprint: callFingerprint(['fal', request.model, request.kind, request.n, request.seed ?? null, request.size ?? null]),
      plan,
      isHandle,
      submit: (i, count, signal) => this.submit(request.model, inputs[i]!, count, signal),
      wait: async (handle, i, signal, wasResumed) => {
        const out = await this.waitFor(handle, signal, wasResumed, (p) => report(i, p));
        report(i, 1);
        return out;
      },
      cancel: (handle) => this.cancelRequest(handle),
      onResume: (count) => this.log.info({ backend: this.name, jobId: ctx.jobId, requests: count }, 'resuming saved fal requests'),
    });

    const images = results.flatMap((r) => r.images);
    const flagged = results.reduce((a, r) => a + r.flagged, 0);
    if (images.length === 0 && flagged > 0) {
      throw moderationError('fal', this.name, `the safety checker flagged all ${flagged} images`);
    }
    if (flagged > 0) warnings.push(otherWarning(`fal's safety checker flagged ${flagged} of ${flagged + images.length} images; they were dropped`));
    if (images.length === 0) throw new BackendError(`fal (backend "${this.name}") returned no images`, { code: 'backend_error' });
    const times = results.map((r) => r.inferenceTime);
    const costUsd =
      this.config.usdPerSecond !== undefined && times.every((t) => typeof t === 'number')
        ? Math.round((times as number[]).reduce((a, b) => a + b, 0) * this.config.usdPerSecond * 1e6) / 1e6
        : undefined;
    return {
      images,
      warnings: uniqueWarnings(warnings),
      ...(costUsd !== undefined ? { costUsd } : {}),
      providerMetadata: { requests: results.length, resumed, seeds: results.map((r) => r.seed ?? null) },
    };
  }

  private async submit(model: string, input: Record<string, unknown>, count: number, signal: AbortSignal): Promise<FalHandle> {
    const path = model.split('/').filter(Boolean).map(encodeURIComponent).join('/');
    const url = new URL(`${this.queueUrl}/${path}`);
    if (this.webhook) url.searchParams.set('fal_webhook', this.webhook);
    const res = await this.callOk(url, {
      method: 'POST',
      headers: this.headers(true),
      body: JSON.stringify(input),
      signal,
      idempotent: false,
    });
    const body = res.json() as Record<string, unknown> | undefined;
    const id = body?.request_id;
    if (typeof id !== 'string' || !id) {
      throw new BackendError(`fal (backend "${this.name}") answered ${res.status} to a submit without a request_id`, { code: 'backend_error' });
    }
    const app = `${this.queueUrl}/${falAppId(model)}/requests/${encodeURIComponent(id)}`;
    const str = (v: unknown, fallback: string) => (typeof v === 'string' && v ? v : fallback);
    return {
      id,
      status: str(body?.status_url, `${app}/status`),
      response: str(body?.response_url, app),
      cancel: str(body?.cancel_url, `${app}/cancel`),
      count,
    };
  }

  private async waitFor(handle: FalHandle, signal: AbortSignal, resumed: boolean, progress: (p: number) => void): Promise<WaitOutcome> {
    const backoff = new PollBackoff(this.config.pollIntervalMs, this.config.maxPollIntervalMs);
    let delay = resumed ? 0 : backoff.next();
    let inferenceTime: number | undefined;
    for (;;) {
      const pushed = delay > 0 ? await this.waiters.wait(handle.id, delay, signal) : this.waiters.take(handle.id);
      if (isWebhookBody(pushed)) {
        if (pushed.status === 'OK' && pushed.payload && typeof pushed.payload === 'object') {
          return this.collect(handle, pushed.payload as Record<string, unknown>, undefined, signal);
        }
        // An ERROR webhook: fetch the result, which carries the error's own status and body.
        break;
      }
      const res = await this.callOk(handle.status, { headers: this.authFor(handle.status), signal, idempotent: true });
      const status = (res.json() as { status?: unknown; metrics?: { inference_time?: unknown } } | undefined) ?? {};
      if (status.status === 'COMPLETED') {
        if (typeof status.metrics?.inference_time === 'number') inferenceTime = status.metrics.inference_time;
        break;
      }
      progress(status.status === 'IN_PROGRESS' ? 0.5 : 0.05);
      delay = backoff.next();
    }
    const res = await this.call(handle.response, { headers: this.authFor(handle.response), signal, idempotent: true });
    if (!res.ok) throw this.resultFailure(res);
    const output = res.json();
    if (!output || typeof output !== 'object') {
      throw new BackendError(`fal (backend "${this.name}") answered the result of ${handle.id} with no JSON`, { code: 'backend_error' });
    }
    return this.collect(handle, output as Record<string, unknown>, inferenceTime, signal);
  }

  private resultFailure(res: HttpAnswer): BackendError {
    const body = res.json() ?? res.text();
    const message = providerMessage(body, `HTTP ${res.status}`);
    const moderation = MODERATION_WORDS.test(message);
    const err = httpFailureError({ provider: 'fal', backend: this.name, status: res.status, body, moderation });
    if (err.code === 'backend_auth') this.credentialsRefused(err.message, res.status);
    return err;
  }

  private async collect(handle: FalHandle, output: Record<string, unknown>, inferenceTime: number | undefined, signal: AbortSignal): Promise<WaitOutcome> {
    const list = Array.isArray(output.images) ? (output.images as FalImage[]) : output.image ? [output.image as FalImage] : [];
    const nsfw = Array.isArray(output.has_nsfw_concepts) ? (output.has_nsfw_concepts as unknown[]) : [];
    const keep = list
      .map((img, i) => ({ img, flagged: nsfw[i] === true }))
      .filter((e) => typeof e.img?.url === 'string')
      .slice(0, handle.count);
    const flagged = keep.filter((e) => e.flagged).length;
    const images = await Promise.all(
      keep
        .filter((e) => !e.flagged)
        .map(async ({ img }): Promise<BackendImage> => {
          const got = await downloadImage(this.http, img.url!, { signal, headers: this.sameOrigin(img.url!, [this.queueUrl]) ? this.headers() : undefined });
          return { data: got.data, mediaType: got.mediaType, ...(typeof output.seed === 'number' ? { seed: output.seed } : {}) };
        }),
    );
    const timings = output.timings as { inference?: unknown } | undefined;
    return {
      images,
      flagged,
      inferenceTime: inferenceTime ?? (typeof timings?.inference === 'number' ? timings.inference : undefined),
      seed: typeof output.seed === 'number' ? output.seed : undefined,
    };
  }

  private async cancelRequest(handle: FalHandle): Promise<void> {
    try {
      await this.http.send(handle.cancel, { method: 'PUT', headers: this.authFor(handle.cancel), signal: cleanupSignal(), idempotent: true });
      this.log.info({ backend: this.name, request: handle.id }, 'fal request canceled');
    } catch (err) {
      this.log.warn({ backend: this.name, request: handle.id, err: (err as Error).message }, 'could not cancel fal request');
    }
  }

  async handleWebhook(req: WebhookRequest): Promise<WebhookOutcome> {
    const verified = await verifyFalWebhook({ req, jwks: this.jwks, userId: this.config.webhookUserId });
    if (!verified.ok) {
      this.log.warn({ backend: this.name, reason: verified.reason }, 'fal webhook refused');
      return { status: 401, message: `signature not valid: ${verified.reason}` };
    }
    let body: unknown;
    try {
      body = JSON.parse(req.rawBody.toString('utf8'));
    } catch {
      return { status: 400, message: 'body is not JSON' };
    }
    if (!isWebhookBody(body) || body.request_id !== verified.id) return { status: 400, message: 'body does not match the signed request id' };
    if (this.seen.seen(`${verified.id}:${verified.timestamp}`)) return { status: 200, message: 'duplicate delivery', providerId: body.request_id };
    this.waiters.notify(body.request_id, body);
    return { status: 200, message: 'ok', providerId: body.request_id };
  }
}
