/**
 * The `bfl` backend: Black Forest Labs' API over fetch. Submit (`POST /v1/{model}`, `x-key`) answers
 * an id and a `polling_url`; both are saved with easel's job before easel polls, and the returned
 * URL is always the one polled (tasks are visible only on the region that took them). Statuses are
 * strings with spaces: `Pending`, `Ready`, `Request Moderated`, `Content Moderated`, `Error`,
 * `Task not found`. A `Ready` sample URL expires after ten minutes, so it is downloaded at once (and
 * polled again for a fresh URL should it have run out). One task makes one image: `n` fans out.
 * BFL's own `cost` (credits) prices the job when it reports one.
 */
import type { BackendCallContext, BackendImage, BackendRequest, BackendResult, BackendWarning } from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { HostedBackend, hostedInit } from '../http/hosted-backend.ts';
import type { HostedBackendDeps } from '../http/hosted-backend.ts';
import { callFingerprint, planJobs, planProgress, runDurable } from '../http/durable.ts';
import { DownloadError, downloadImage } from '../http/media.ts';
import { easelParams, mapParams } from '../http/param-table.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { uniqueWarnings, unsupported } from '../warnings.ts';
import { bflModelSpec, bflRows, modelShape } from './models.ts';

export { modelShape } from './models.ts';
import { moderationError } from '../http/errors.ts';
import { PollBackoff, sleep } from '../http/retry.ts';
import { bflBackendConfigSchema } from './options.ts';
import type { BflBackendConfig, BflBackendConfigInput } from './options.ts';

const KEY_ENVS = ['BFL_API_KEY'];
/** A task may not be visible for a moment after submit; `Task not found` is believed only after this. */
const NOT_FOUND_GRACE_MS = 15_000;

export interface BflHandle {
  id: string;
  polling: string;
  /** Credits BFL said the task costs (at submit). */
  cost?: number;
  submittedAt: number;
}

function isHandle(v: unknown): v is BflHandle {
  const h = v as BflHandle;
  return !!h && typeof h === 'object' && typeof h.id === 'string' && typeof h.polling === 'string';
}

interface PollBody {
  id?: string;
  status?: string;
  result?: { sample?: unknown; seed?: unknown } | null;
  progress?: number | null;
  details?: unknown;
  error?: unknown;
}

export class BflBackend extends HostedBackend {
  readonly type = 'bfl';
  readonly config: BflBackendConfig;
  private readonly baseUrl: string;

  constructor(config: BflBackendConfigInput | BflBackendConfig, deps: HostedBackendDeps = {}) {
    const cfg = bflBackendConfigSchema.parse(config);
    // The union of its models: FLUX.2 takes up to eight input images.
    super(hostedInit(cfg, deps, { provider: 'Black Forest Labs', capabilities: { generate: true, edit: true, mask: true, variation: false, maxInputImages: 8 }, keyEnvs: KEY_ENVS }));
    this.config = cfg;
    this.baseUrl = cfg.baseUrl.replace(/\/+$/, '');
  }

  private headers(json = false): Record<string, string> {
    return { accept: 'application/json', 'x-key': this.apiKey ?? '', ...(json ? { 'content-type': 'application/json' } : {}) };
  }

  /** The key goes to the configured host and to BFL's own hosts (a polling URL may name another region). */
  private trusted(url: string): boolean {
    if (this.sameOrigin(url, [this.baseUrl])) return true;
    try {
      const u = new URL(url);
      return u.protocol === 'https:' && /(^|\.)bfl\.(ai|ml)$/.test(u.hostname);
    } catch {
      return false;
    }
  }

  override modelSpec(model: string): BackendModelSpec {
    return bflModelSpec(model, this.capabilities);
  }

  /** One task's body: config extras, then accepted provider options, then easel's mapped fields and images. */
  buildBody(request: BackendRequest, seed: number | undefined): { body: Record<string, unknown>; warnings: BackendWarning[] } {
    const shape = modelShape(request.model);
    const accepted = acceptedOptions(request.providerOptions, shape.options, { backend: this.name, model: request.model });
    const mapped = mapParams(bflRows(request.model, this.name), easelParams(request, { seed }), { base: this.config.extraInput, options: accepted.options });
    const body = mapped.body;
    const warnings = [...accepted.warnings, ...mapped.warnings];
    // Moderation is the operator's (config), never a request's options.
    if (this.config.safetyTolerance !== undefined) body.safety_tolerance = this.config.safetyTolerance;
    if (request.inputImages.length) {
      if (!shape.image) throw new BackendError(`${request.model} on backend "${this.name}" takes no input image`, { code: 'invalid_request' });
      const images = request.inputImages.slice(0, shape.maxImages);
      if (request.inputImages.length > images.length) warnings.push(unsupported('image', `only the first ${images.length} input image${images.length === 1 ? ' is' : 's are'} sent to ${request.model}`));
      images.forEach((img, i) => (body[i === 0 ? shape.image! : `${shape.image}_${i + 1}`] = Buffer.from(img.data).toString('base64')));
    } else if (!shape.generate) {
      throw new BackendError(`${request.model} on backend "${this.name}" needs an input image`, { code: 'invalid_request' });
    }
    if (request.mask) {
      if (!shape.mask) throw new BackendError(`${request.model} on backend "${this.name}" takes no mask`, { code: 'invalid_request' });
      body.mask = Buffer.from(request.mask.data).toString('base64');
    }
    return { body, warnings };
  }

  protected async run(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    if (request.kind === 'variation') {
      throw new BackendError(`Backend "${this.name}" (Black Forest Labs) does not do variations`, { code: 'invalid_request' });
    }
    this.requireKey();
    const plan = planJobs(request.n, 1);
    const warnings: BackendWarning[] = [];
    const bodies = plan.map((_, i) => {
      const built = this.buildBody(request, request.seed === undefined ? undefined : request.seed + i);
      warnings.push(...built.warnings);
      return built.body;
    });
    const report = planProgress(plan, request.n, (p) => ctx.reportProgress(p));

    const { results, resumed } = await runDurable<BflHandle, { image: BackendImage; cost?: number; id: string }>({
      backend: this.name,
      ctx,
      fingerprint: callFingerprint(['bfl', request.model, request.kind, request.n, request.seed ?? null, request.size ?? null]),
      plan,
      isHandle,
      submit: (i, _count, signal) => this.submit(request.model, bodies[i]!, signal),
      wait: async (handle, i, signal, wasResumed) => {
        const image = await this.waitFor(handle, signal, wasResumed, (p) => report(i, p));
        report(i, 1);
        return { image, cost: handle.cost, id: handle.id };
      },
      onResume: (count) => this.log.info({ backend: this.name, jobId: ctx.jobId, tasks: count }, 'resuming saved Black Forest Labs tasks'),
    });

    const costs = results.map((r) => r.cost);
    const costUsd = costs.every((c) => typeof c === 'number')
      ? Math.round((costs as number[]).reduce((a, b) => a + b, 0) * this.config.usdPerCredit * 1e6) / 1e6
      : undefined;
    return {
      images: results.map((r) => r.image),
      warnings: uniqueWarnings(warnings),
      ...(costUsd !== undefined ? { costUsd } : {}),
      providerMetadata: { tasks: results.map((r) => r.id), resumed, ...(costUsd !== undefined ? { credits: costs } : {}) },
    };
  }

  private async submit(model: string, body: Record<string, unknown>, signal: AbortSignal): Promise<BflHandle> {
    const res = await this.callOk(`${this.baseUrl}/v1/${encodeURIComponent(model)}`, {
      method: 'POST',
      headers: this.headers(true),
      body: JSON.stringify(body),
      signal,
      idempotent: false,
    }, { isModeration: (r) => r.status === 400 && /moderat/i.test(r.text()) });
    const answer = res.json() as { id?: unknown; polling_url?: unknown; cost?: unknown } | undefined;
    if (typeof answer?.id !== 'string' || !answer.id) {
      throw new BackendError(`Black Forest Labs (backend "${this.name}") answered ${res.status} to a submit without an id`, { code: 'backend_error' });
    }
    const polling = typeof answer.polling_url === 'string' && answer.polling_url
      ? answer.polling_url
      : `${this.baseUrl}/v1/get_result?id=${encodeURIComponent(answer.id)}`;
    return { id: answer.id, polling, submittedAt: Date.now(), ...(typeof answer.cost === 'number' ? { cost: answer.cost } : {}) };
  }

  private async poll(handle: BflHandle, signal: AbortSignal): Promise<PollBody> {
    const res = await this.callOk(handle.polling, {
      headers: this.trusted(handle.polling) ? this.headers() : { accept: 'application/json' },
      signal,
      idempotent: true,
    });
    return (res.json() as PollBody | undefined) ?? {};
  }

  private async waitFor(handle: BflHandle, signal: AbortSignal, resumed: boolean, progress: (p: number) => void): Promise<BackendImage> {
    const backoff = new PollBackoff(this.config.pollIntervalMs, this.config.maxPollIntervalMs);
    let delay = resumed ? 0 : backoff.next();
    let refreshes = 0;
    for (;;) {
      if (delay > 0) await sleep(delay, signal);
      delay = backoff.next();
      const body = await this.poll(handle, signal);
      const status = String(body.status ?? '');
      switch (status) {
        case 'Pending':
          progress(typeof body.progress === 'number' ? Math.min(0.95, Math.max(0, body.progress)) : 0.05);
          continue;
        case 'Ready': {
          const sample = body.result?.sample;
          if (typeof sample !== 'string') {
            throw new BackendError(`Black Forest Labs task ${handle.id} is Ready without a sample URL`, { code: 'backend_error' });
          }
          try {
            const got = await downloadImage(this.http, sample, { signal, headers: this.sameOrigin(sample, [this.baseUrl]) ? this.headers() : undefined });
            const seed = body.result?.seed;
            return { data: got.data, mediaType: got.mediaType, ...(typeof seed === 'number' ? { seed } : {}) };
          } catch (err) {
            // Signed sample URLs run out after ten minutes; a fresh poll may hand out a new one.
            if (err instanceof DownloadError && err.expired && refreshes++ < 1) {
              delay = 0;
              continue;
            }
            if (err instanceof DownloadError && err.expired) {
              throw new BackendError(
                `the sample of Black Forest Labs task ${handle.id} has expired (BFL keeps results for 10 minutes)`,
                { code: 'backend_error', status: err.status, cause: err },
              );
            }
            throw err;
          }
        }
        case 'Request Moderated':
          throw moderationError('Black Forest Labs', this.name, `the request was moderated${reasons(body.details)}`);
        case 'Content Moderated':
          throw moderationError('Black Forest Labs', this.name, `the generated image was moderated${reasons(body.details)}`);
        case 'Error':
          throw new BackendError(`Black Forest Labs task ${handle.id} failed (backend "${this.name}"): ${describe(body.error ?? body.details)}`, {
            code: 'backend_error',
            retryable: true,
          });
        case 'Task not found':
          if (Date.now() - handle.submittedAt < NOT_FOUND_GRACE_MS) continue;
          throw new BackendError(`Black Forest Labs no longer knows task ${handle.id} (unknown or expired)`, { code: 'backend_error' });
        default:
          throw new BackendError(`Black Forest Labs task ${handle.id} has an unknown status "${status}"`, { code: 'backend_error' });
      }
    }
  }
}

function describe(value: unknown): string {
  if (value === undefined || value === null) return 'no details given';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function reasons(details: unknown): string {
  if (!details || typeof details !== 'object') return '';
  const list = (details as Record<string, unknown>)['Moderation Reasons'];
  return Array.isArray(list) && list.length ? ` (${list.join(', ')})` : ` (${JSON.stringify(details)})`;
}
