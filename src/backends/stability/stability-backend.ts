/**
 * The `stability` backend: Stability AI's v2beta stable-image generate endpoints (ultra, core, sd3),
 * synchronous, one image per request (a job's `n` fans out, a few at a time).
 *
 * The body is always multipart/form-data, text-only requests included. With `Accept: image/*` the
 * answer is the image bytes with `finish-reason` and `seed` in response headers; with
 * `application/json` it is `{image, finish_reason, seed}`. A 200 can still be `CONTENT_FILTERED` (a
 * blurred image), and input moderation is a 403 `content_moderation`: both become content-policy
 * violations naming Stability.
 */
import type { BackendCallContext, BackendImage, BackendRequest, BackendResult, BackendWarning } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { HostedBackend, hostedInit } from '../http/hosted-backend.ts';
import type { HostedBackendDeps } from '../http/hosted-backend.ts';
import { mapLimit } from '../http/concurrency.ts';
import { moderationError } from '../http/errors.ts';
import { sniffMediaType } from '../http/media.ts';
import { easelParams, mapParams } from '../http/param-table.ts';
import type { HttpAnswer } from '../http/client.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { uniqueWarnings, unsupported } from '../warnings.ts';
import { stabilityBackendConfigSchema } from './options.ts';
import type { StabilityBackendConfig, StabilityBackendConfigInput } from './options.ts';
import { endpointFor, stabilityModelSpec, stabilityRows } from './models.ts';
import type { StabilityEndpoint } from './models.ts';

export { endpointFor } from './models.ts';
export type { StabilityEndpoint } from './models.ts';

const KEY_ENVS = ['STABILITY_API_KEY'];

export class StabilityBackend extends HostedBackend {
  readonly type = 'stability';
  readonly config: StabilityBackendConfig;
  private readonly baseUrl: string;

  constructor(config: StabilityBackendConfigInput | StabilityBackendConfig, deps: HostedBackendDeps = {}) {
    const cfg = stabilityBackendConfigSchema.parse(config);
    super(hostedInit(cfg, deps, { provider: 'Stability AI', capabilities: { generate: true, edit: true, mask: false, variation: false, maxInputImages: 1 }, keyEnvs: KEY_ENVS }));
    this.config = cfg;
    this.baseUrl = cfg.baseUrl.replace(/\/+$/, '');
  }

  override modelSpec(model: string): BackendModelSpec {
    return stabilityModelSpec(model, this.capabilities);
  }

  /**
   * The multipart fields (as strings) and files for one image: config extras, then the accepted
   * provider options, then easel's mapped fields (which always win).
   */
  buildForm(request: BackendRequest, endpoint: StabilityEndpoint, seed: number | undefined): { form: FormData; fields: Record<string, string>; warnings: BackendWarning[] } {
    const editing = request.inputImages.length > 0;
    if (editing && !endpoint.edit) throw new BackendError(`${request.model} on backend "${this.name}" takes no input image`, { code: 'invalid_request' });
    if (request.mask) throw new BackendError(`masks are not supported by ${request.model} on backend "${this.name}"`, { code: 'invalid_request' });
    const accepted = acceptedOptions(request.providerOptions, this.modelSpec(request.model).providerOptions, { backend: this.name, model: request.model });
    const mapped = mapParams(stabilityRows(endpoint, request.model, this.name, editing), easelParams(request, { seed }), {
      base: this.config.extraFields,
      options: accepted.options,
    });
    const body = mapped.body;
    if (endpoint.model) body.model = endpoint.model;
    if (endpoint.path === 'sd3') body.mode = editing ? 'image-to-image' : 'text-to-image';
    const warnings = [...accepted.warnings, ...mapped.warnings];
    if (editing) body.strength ??= 0.7;
    else if (body.strength !== undefined) {
      delete body.strength;
      warnings.push(unsupported('provider_options.strength', `strength applies to edits only on backend "${this.name}"; ignored`));
    }
    const fields: Record<string, string> = {};
    for (const [k, v] of Object.entries(body)) {
      if (v !== undefined && v !== null) fields[k] = typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
    }
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) form.append(k, v);
    if (editing) {
      const img = request.inputImages[0]!;
      const ext = img.mediaType.split('/')[1] ?? 'png';
      form.append('image', new Blob([img.data as Uint8Array<ArrayBuffer>], { type: img.mediaType }), `image.${ext}`);
      if (request.inputImages.length > 1) warnings.push(unsupported('image', `only the first input image is sent to ${request.model}`));
    }
    return { form, fields, warnings };
  }

  protected async run(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    if (request.kind === 'variation') throw new BackendError(`Backend "${this.name}" (Stability AI) does not do variations`, { code: 'invalid_request' });
    this.requireKey();
    const endpoint = endpointFor(request.model);
    if (!endpoint) {
      throw new BackendError(`Stability AI has no endpoint for model "${request.model}" (use ultra, core or an sd3 model)`, { code: 'model_not_found' });
    }
    const warnings: BackendWarning[] = [];
    // Build every form first: a request the model cannot take fails before anything is paid for.
    const forms = Array.from({ length: request.n }, (_, i) => {
      const built = this.buildForm(request, endpoint, request.seed === undefined ? undefined : request.seed + i);
      warnings.push(...built.warnings);
      return built.form;
    });
    let done = 0;
    const images = await mapLimit(forms, this.config.concurrency, async (form) => {
      const image = await this.one(endpoint, form, ctx.signal);
      ctx.reportProgress(++done / request.n);
      return image;
    });
    return { images, warnings: uniqueWarnings(warnings), providerMetadata: { endpoint: endpoint.path, seeds: images.map((i) => i.seed ?? null) } };
  }

  private async one(endpoint: StabilityEndpoint, form: FormData, signal: AbortSignal): Promise<BackendImage> {
    const json = this.config.accept === 'json';
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.apiKey}`,
      accept: json ? 'application/json' : 'image/*',
      ...(this.config.clientId ? { 'stability-client-id': this.config.clientId } : {}),
    };
    // The body is multipart even when it carries only text fields: Stability refuses anything else.
    const res = await this.callOk(`${this.baseUrl}/v2beta/stable-image/generate/${endpoint.path}`, {
      method: 'POST',
      headers,
      body: form,
      signal,
      // 429/5xx are retried; a timed-out generation is not sent again (it may have been made, and billed).
      idempotent: false,
    }, { isModeration: isModeration });
    let data: Buffer;
    let finish: string | undefined;
    let seed: number | undefined;
    const type = res.headers.get('content-type') ?? '';
    if (type.startsWith('application/json')) {
      const body = res.json() as { image?: unknown; finish_reason?: unknown; seed?: unknown } | undefined;
      if (typeof body?.image !== 'string') throw new BackendError(`Stability AI (backend "${this.name}") answered JSON without an image`, { code: 'backend_error' });
      data = Buffer.from(body.image, 'base64');
      finish = typeof body.finish_reason === 'string' ? body.finish_reason : undefined;
      seed = typeof body.seed === 'number' ? body.seed : undefined;
    } else {
      data = res.body;
      finish = res.headers.get('finish-reason') ?? undefined;
      const s = res.headers.get('seed');
      seed = s !== null && /^\d+$/.test(s) ? Number(s) : undefined;
    }
    if (finish === 'CONTENT_FILTERED') {
      throw moderationError('Stability AI', this.name, 'the generated image was filtered (finish-reason CONTENT_FILTERED)', res.status);
    }
    if (finish && finish !== 'SUCCESS') {
      throw new BackendError(`Stability AI (backend "${this.name}") finished with ${finish}`, { code: 'backend_error' });
    }
    if (data.length === 0) throw new BackendError(`Stability AI (backend "${this.name}") answered an empty image`, { code: 'backend_error', retryable: true });
    const mediaType = sniffMediaType(data) ?? (type.startsWith('image/') ? type.split(';')[0]! : 'image/png');
    return { data, mediaType, ...(seed !== undefined ? { seed } : {}) };
  }
}

function isModeration(res: HttpAnswer): boolean {
  if (res.status !== 403 && res.status !== 400) return false;
  const body = res.json() as { name?: unknown } | undefined;
  return body?.name === 'content_moderation';
}
