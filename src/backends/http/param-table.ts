/**
 * Provider request mapping as data (Portkey's parameter tables): each row says which easel request
 * field (`param`) goes to which provider field (`field`), how it is converted, its default and its
 * bounds, or, with `unsupported`, what to say when a request sets a field the provider cannot take.
 * `mapParams` turns a table and a request into the provider body and the warnings.
 *
 * Order is the defense: config extras first, then the (already screened) provider options, then the
 * mapped fields, so nothing a request's options say can replace what easel mapped, priced and
 * moderated. Control flow that is not a mapping (polling, webhooks, multipart files, fan-out) stays
 * in the backends.
 */
import type { BackendRequest, BackendWarning } from '../image-backend.ts';
import type { ImageSize, OutputFormat } from '../../core/image-request.ts';
import { compatibility, unsupported } from '../warnings.ts';
import { nearestAspectRatio } from './media.ts';

/** easel's request fields under their public (snake_case) names: what a table reads. */
export interface EaselParams {
  prompt: string;
  negative_prompt?: string;
  n: number;
  size?: ImageSize;
  seed?: number;
  steps?: number;
  guidance_scale?: number;
  quality?: string;
  style?: string;
  output_format: OutputFormat;
  output_compression?: number;
  background?: 'transparent' | 'opaque' | 'auto';
  user?: string;
}
export type EaselParam = keyof EaselParams;

/** A request's fields as a table reads them; `over` replaces some per provider call (its `n`, its seed). */
export function easelParams(request: BackendRequest, over: Partial<EaselParams> = {}): EaselParams {
  const params: EaselParams = {
    prompt: request.prompt,
    n: request.n,
    output_format: request.outputFormat,
    ...(request.negativePrompt !== undefined ? { negative_prompt: request.negativePrompt } : {}),
    ...(request.size ? { size: request.size } : {}),
    ...(request.seed !== undefined ? { seed: request.seed } : {}),
    ...(request.steps !== undefined ? { steps: request.steps } : {}),
    ...(request.guidanceScale !== undefined ? { guidance_scale: request.guidanceScale } : {}),
    ...(request.quality !== undefined ? { quality: request.quality } : {}),
    ...(request.style !== undefined ? { style: request.style } : {}),
    ...(request.outputCompression !== undefined ? { output_compression: request.outputCompression } : {}),
    ...(request.background !== undefined ? { background: request.background } : {}),
    ...(request.user !== undefined ? { user: request.user } : {}),
  };
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) delete (params as unknown as Record<string, unknown>)[k];
    else (params as unknown as Record<string, unknown>)[k] = v;
  }
  return params;
}

/** What a row's transform may do besides returning the provider value. */
export interface RowContext {
  params: EaselParams;
  /** Says how the value was honoured differently (`compatibility`) or not at all (`unsupported`). */
  warn(detail: string, type?: 'compatibility' | 'unsupported'): void;
}

export interface ParamRow {
  /** The easel request field. */
  param: EaselParam;
  /** The provider's field; a dotted path nests (`outputOptions.mimeType`). Absent: see `unsupported`. */
  field?: string;
  /** easel value → provider value; undefined leaves the field out. */
  transform?: (value: any, t: RowContext) => unknown;
  /** Sent when the request leaves the field unset. */
  default?: unknown;
  /** Numbers outside are clamped, with a compatibility warning. */
  min?: number;
  max?: number;
  /** The warning when a request sets a field this provider cannot take (the row has no `field`). */
  unsupported?: string;
}

export interface MappedBody {
  body: Record<string, unknown>;
  warnings: BackendWarning[];
}

/**
 * The provider body for one call: `base` (config extras), then `options` (screened provider
 * options), then every row, so a mapped field always wins. Neither input object is modified.
 */
export function mapParams(
  rows: readonly ParamRow[],
  params: EaselParams,
  layers: { base?: Record<string, unknown>; options?: Record<string, unknown> } = {},
): MappedBody {
  const warnings: BackendWarning[] = [];
  const body: Record<string, unknown> = {};
  for (const layer of [layers.base, layers.options]) {
    for (const [k, v] of Object.entries(layer ?? {})) if (v !== undefined && k !== '__proto__') body[k] = v;
  }
  for (const row of rows) {
    let value: unknown = params[row.param];
    if (value === undefined) {
      if (row.default !== undefined && row.field) setPath(body, row.field, row.default);
      continue;
    }
    if (!row.field) {
      warnings.push(unsupported(row.param, row.unsupported ?? `${row.param} is not supported; ignored`));
      continue;
    }
    if (row.transform) {
      const t: RowContext = { params, warn: (detail, type = 'compatibility') => warnings.push(type === 'unsupported' ? unsupported(row.param, detail) : compatibility(row.param, detail)) };
      value = row.transform(value, t);
      if (value === undefined) continue;
    }
    if (typeof value === 'number' && (row.min !== undefined || row.max !== undefined)) {
      const clamped = Math.min(row.max ?? Infinity, Math.max(row.min ?? -Infinity, value));
      if (clamped !== value) {
        warnings.push(compatibility(row.param, `${row.param} ${value} sent as ${clamped} (the provider takes ${row.min ?? '…'}–${row.max ?? '…'})`));
        value = clamped;
      }
    }
    setPath(body, row.field, value);
  }
  return { body, warnings };
}

/** Writes a dotted path, copying (never mutating) any object already at an intermediate key. */
function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let at = target;
  for (const key of keys.slice(0, -1)) {
    const existing = at[key];
    const next: Record<string, unknown> = existing && typeof existing === 'object' && !Array.isArray(existing) ? { ...(existing as Record<string, unknown>) } : {};
    at[key] = next;
    at = next;
  }
  at[keys.at(-1)!] = value;
}

/** A row for a field the provider cannot take: set, it is ignored with the usual warning. */
export function notTaken(param: EaselParam, model: string, backend: string): ParamRow {
  return { param, unsupported: `${param} is not supported by ${model || 'this model'} on backend "${backend}"; ignored` };
}

/** A row sending the size as the nearest of `ratios` (a compatibility warning when it is not exact). */
export function aspectRatioRow(ratios: readonly string[], model: string, field = 'aspect_ratio'): ParamRow {
  return {
    param: 'size',
    field,
    transform: (size: ImageSize, t) => {
      const { ratio, exact } = nearestAspectRatio(size, ratios);
      if (!exact) t.warn(`size ${size.width}x${size.height} sent as the nearest aspect ratio ${ratio} for ${model}`);
      return ratio;
    },
  };
}
