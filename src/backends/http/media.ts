/**
 * Small image helpers shared by the hosted-provider backends: what bytes are, what aspect ratio a
 * size is closest to, sizes snapped to a provider's grid, and copying a provider's output URL into
 * memory (so the worker stores it before the URL expires).
 */
import type { ImageSize } from '../../core/image-request.ts';
import { BackendError } from '../image-backend.ts';
import type { ProviderHttp } from './client.ts';
import type { SizeRule } from '../model-spec.ts';

/** What the bytes are, by magic number; undefined when unrecognised. */
export function sniffMediaType(data: Uint8Array): string | undefined {
  if (data.length >= 8 && data[0] === 0x89 && data[1] === 0x50 && data[2] === 0x4e && data[3] === 0x47) return 'image/png';
  if (data.length >= 3 && data[0] === 0xff && data[1] === 0xd8 && data[2] === 0xff) return 'image/jpeg';
  if (
    data.length >= 12 &&
    data[0] === 0x52 && data[1] === 0x49 && data[2] === 0x46 && data[3] === 0x46 &&
    data[8] === 0x57 && data[9] === 0x45 && data[10] === 0x42 && data[11] === 0x50
  ) {
    return 'image/webp';
  }
  if (data.length >= 6 && data[0] === 0x47 && data[1] === 0x49 && data[2] === 0x46) return 'image/gif';
  return undefined;
}

export function ratioOf(text: string): number {
  const [w, h] = text.split(':').map(Number);
  return w! / h!;
}

/**
 * The allowed `W:H` closest to `size` (compared on a log scale, so 2:1 and 1:2 are equally far from
 * 1:1), and whether it is exact.
 */
export function nearestAspectRatio(size: ImageSize, allowed: readonly string[]): { ratio: string; exact: boolean } {
  const want = Math.log(size.width / size.height);
  let best = allowed[0]!;
  let bestDistance = Infinity;
  for (const candidate of allowed) {
    const d = Math.abs(Math.log(ratioOf(candidate)) - want);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return { ratio: best, exact: bestDistance < 0.01 };
}

/**
 * The sizes a provider that takes an aspect ratio (not pixels) accepts: any size whose ratio one of
 * `ratios` approximates, i.e. no wider or taller than the widest ratio (with a 10% margin: 1536x640
 * is FLUX's own 21:9). The size then only picks the nearest ratio, said in a compatibility warning
 * when it is not exact. The sides are bounded only loosely; the provider decides the pixels.
 */
export function aspectRatioSizes(ratios: readonly string[]): SizeRule {
  const widest = Math.max(...ratios.map((r) => Math.max(ratioOf(r), 1 / ratioOf(r))));
  return { kind: 'range', minSide: 64, maxSide: 8192, maxAspect: Math.round(widest * 1.1 * 100) / 100 };
}

/** Rounds a side to a multiple of `step` within [min, max]. */
export function snapSide(value: number, step: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, Math.round(value / step) * step));
}

export interface DownloadedImage {
  data: Buffer;
  mediaType: string;
}

export interface DownloadOptions {
  signal: AbortSignal;
  /** Headers for this URL only (credentials go only to the provider's own origin). */
  headers?: Record<string, string>;
  maxBytes?: number;
}

/** The reason a download failed; `expired` when the URL is no longer served (signed URLs run out). */
export class DownloadError extends BackendError {
  readonly expired: boolean;
  constructor(message: string, opts: { status?: number; expired: boolean; retryable: boolean }) {
    super(message, { code: opts.retryable ? 'backend_unavailable' : 'backend_error', retryable: opts.retryable, status: opts.status });
    this.name = 'DownloadError';
    this.expired = opts.expired;
  }
}

const DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024;

/** Copies an output (https URL or data: URI) into memory; retries transient failures. */
export async function downloadImage(http: ProviderHttp, url: string, opts: DownloadOptions): Promise<DownloadedImage> {
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_IMAGE_BYTES;
  if (url.startsWith('data:')) return decodeDataUri(url, http, maxBytes);
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw new BackendError(`${http.provider} (backend "${http.backend}") returned an unparseable output URL`, { code: 'backend_error' });
  }
  if (target.protocol !== 'https:' && target.protocol !== 'http:') {
    throw new BackendError(`${http.provider} (backend "${http.backend}") returned an output URL with scheme ${target.protocol}`, {
      code: 'backend_error',
    });
  }
  const res = await http.send(target, { signal: opts.signal, idempotent: true, headers: opts.headers, maxBytes });
  if (!res.ok) {
    const expired = res.status === 403 || res.status === 404 || res.status === 410;
    throw new DownloadError(
      `${http.provider} (backend "${http.backend}"): downloading its output failed with ${res.status}${expired ? ' (the URL has expired or is no longer served)' : ''}`,
      { status: res.status, expired, retryable: res.status === 429 || res.status >= 500 },
    );
  }
  if (res.body.length === 0) {
    throw new BackendError(`${http.provider} (backend "${http.backend}") served an empty output`, { code: 'backend_error', retryable: true });
  }
  const declared = res.headers.get('content-type')?.split(';')[0]?.trim();
  return { data: res.body, mediaType: sniffMediaType(res.body) ?? (declared?.startsWith('image/') ? declared : 'application/octet-stream') };
}

function decodeDataUri(uri: string, http: ProviderHttp, maxBytes: number): DownloadedImage {
  const m = /^data:([^;,]*)((?:;[^;,]*)*),(.*)$/s.exec(uri);
  if (!m) throw new BackendError(`${http.provider} (backend "${http.backend}") returned a malformed data URI`, { code: 'backend_error' });
  const base64 = m[2]!.split(';').includes('base64');
  const data = base64 ? Buffer.from(m[3]!, 'base64') : Buffer.from(decodeURIComponent(m[3]!), 'utf8');
  if (data.length > maxBytes) throw new BackendError(`${http.provider} (backend "${http.backend}") returned an image over ${maxBytes} bytes`, { code: 'backend_error' });
  return { data, mediaType: sniffMediaType(data) ?? (m[1] || 'application/octet-stream') };
}
