/**
 * The `imagen` backend: Google Imagen through the Gemini API (`POST …/models/{model}:predict`,
 * `x-goog-api-key`), synchronous. `sampleCount` is always sent: left out, Imagen makes (and bills)
 * four. Filtered images are silently missing from `predictions` (or the list is missing
 * altogether): fewer images than asked is a warning, none at all a content-policy violation naming
 * Google. (The AI SDK's Google provider no longer drives Imagen, so this is written over fetch.)
 */
import type { BackendCallContext, BackendImage, BackendRequest, BackendResult, BackendWarning } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { HostedBackend, hostedInit } from '../http/hosted-backend.ts';
import type { HostedBackendDeps } from '../http/hosted-backend.ts';
import { mapLimit } from '../http/concurrency.ts';
import { planJobs } from '../http/durable.ts';
import { MODERATION_WORDS, moderationError, providerMessage } from '../http/errors.ts';
import { sniffMediaType } from '../http/media.ts';
import { easelParams, mapParams } from '../http/param-table.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { otherWarning, uniqueWarnings } from '../warnings.ts';
import { imagenModelSpec, imagenRows } from './models.ts';
import type { HttpAnswer } from '../http/client.ts';
import { imagenBackendConfigSchema } from './options.ts';
import type { ImagenBackendConfig, ImagenBackendConfigInput } from './options.ts';

const KEY_ENVS = ['GEMINI_API_KEY', 'GOOGLE_API_KEY'];

interface Prediction {
  bytesBase64Encoded?: string;
  mimeType?: string;
  raiFilteredReason?: string;
  contentType?: string;
}

export class ImagenBackend extends HostedBackend {
  readonly type = 'imagen';
  readonly config: ImagenBackendConfig;
  private readonly baseUrl: string;

  constructor(config: ImagenBackendConfigInput | ImagenBackendConfig, deps: HostedBackendDeps = {}) {
    const cfg = imagenBackendConfigSchema.parse(config);
    super(hostedInit(cfg, deps, { provider: 'Google Imagen', capabilities: { generate: true, edit: false, mask: false, variation: false, maxInputImages: 0 }, keyEnvs: KEY_ENVS }));
    this.config = cfg;
    this.baseUrl = cfg.baseUrl.replace(/\/+$/, '');
  }

  override modelSpec(model: string): BackendModelSpec {
    return imagenModelSpec(model, this.capabilities, this.config.maxSamplesPerCall);
  }

  /** One `:predict` body: config moderation settings, then accepted options, then easel's mapped fields. */
  buildBody(request: BackendRequest, sampleCount: number): { body: Record<string, unknown>; warnings: BackendWarning[] } {
    const accepted = acceptedOptions(request.providerOptions, this.modelSpec(request.model).providerOptions, { backend: this.name, model: request.model });
    const base = {
      ...(this.config.personGeneration ? { personGeneration: this.config.personGeneration } : {}),
      ...(this.config.safetySetting ? { safetySetting: this.config.safetySetting } : {}),
    };
    const mapped = mapParams(imagenRows(request.model, this.name), easelParams(request, { n: sampleCount }), { base, options: accepted.options });
    const parameters = { ...mapped.body, includeRaiReason: true };
    return { body: { instances: [{ prompt: request.prompt }], parameters }, warnings: [...accepted.warnings, ...mapped.warnings] };
  }

  protected async run(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    if (request.kind !== 'generation') {
      throw new BackendError(`Backend "${this.name}" (Google Imagen) only generates from text`, { code: 'invalid_request' });
    }
    this.requireKey();
    const plan = planJobs(request.n, this.config.maxSamplesPerCall);
    const warnings: BackendWarning[] = [];
    const bodies = plan.map((count) => {
      const built = this.buildBody(request, count);
      warnings.push(...built.warnings);
      return built.body;
    });
    let done = 0;
    const url = `${this.baseUrl}/models/${encodeURIComponent(request.model)}:predict`;
    const calls = await mapLimit(bodies, 4, async (body, i) => {
      const out = await this.predict(url, body, ctx.signal);
      done += plan[i]!;
      ctx.reportProgress(done / request.n);
      return out;
    });
    const images = calls.flatMap((c) => c.images);
    const reasons = calls.flatMap((c) => c.reasons);
    const filtered = request.n - images.length;
    if (images.length === 0) {
      throw moderationError('Google Imagen', this.name, `every image was filtered${reasons.length ? ` (${[...new Set(reasons)].join('; ')})` : ''}`);
    }
    if (filtered > 0) warnings.push(otherWarning(`Google Imagen filtered ${filtered} of ${request.n} images${reasons.length ? ` (${[...new Set(reasons)].join('; ')})` : ''}`));
    return { images, warnings: uniqueWarnings(warnings), providerMetadata: { calls: calls.length, filtered } };
  }

  private async predict(url: string, body: Record<string, unknown>, signal: AbortSignal): Promise<{ images: BackendImage[]; reasons: string[] }> {
    const res = await this.call(url, {
      method: 'POST',
      headers: { 'x-goog-api-key': this.apiKey ?? '', 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      signal,
      // 429/5xx are retried; a timed-out generation is not sent again (it may have been made, and billed).
      idempotent: false,
    });
    if (!res.ok) throw this.googleFailure(res);
    const predictions = (res.json() as { predictions?: unknown } | undefined)?.predictions;
    const list = Array.isArray(predictions) ? (predictions as Prediction[]) : [];
    const images: BackendImage[] = [];
    const reasons: string[] = [];
    for (const p of list) {
      if (typeof p?.bytesBase64Encoded === 'string' && p.bytesBase64Encoded) {
        const data = Buffer.from(p.bytesBase64Encoded, 'base64');
        images.push({ data, mediaType: sniffMediaType(data) ?? p.mimeType ?? 'image/png' });
      } else if (typeof p?.raiFilteredReason === 'string') {
        reasons.push(p.raiFilteredReason);
      }
    }
    return { images, reasons };
  }

  /** Google answers a bad key with 400 API_KEY_INVALID, and safety refusals with 400 too. */
  private googleFailure(res: HttpAnswer): BackendError {
    const body = res.json() ?? res.text();
    const message = providerMessage(body, `HTTP ${res.status}`);
    const text = res.text();
    if (res.status === 400 && /API_KEY_INVALID|API key not valid/i.test(text)) {
      return this.failure({ ...res, status: 401 });
    }
    return this.failure(res, { moderation: res.status === 400 && MODERATION_WORDS.test(message) });
  }
}
