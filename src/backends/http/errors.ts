/**
 * Turns a provider's HTTP failure into easel's BackendError codes, the same way for every hosted
 * provider: credentials → `backend_auth`, moderation → `content_policy_violation` naming the provider,
 * out of credits → `backend_quota_exceeded`, throttling and 5xx → retryable `backend_unavailable`, a
 * bad body → `invalid_request`. The provider's own words are kept in the message.
 */
import { BackendError } from '../image-backend.ts';

/**
 * The human part of an error body, whatever shape the provider uses: OpenAI/Google
 * `{error:{message}}`, FastAPI `{detail: str | [{loc,msg}]}`, problem details `{title,detail}`,
 * Stability `{name, errors:[…]}`, or a bare `{message}`.
 */
export function providerMessage(body: unknown, fallback: string): string {
  if (typeof body === 'string') return body.trim().slice(0, 500) || fallback;
  if (!body || typeof body !== 'object') return fallback;
  const b = body as Record<string, unknown>;
  const err = b.error;
  if (err && typeof err === 'object' && typeof (err as { message?: unknown }).message === 'string') {
    return (err as { message: string }).message;
  }
  if (typeof err === 'string' && err) return err;
  if (Array.isArray(b.errors) && b.errors.length) return b.errors.map(String).join('; ');
  const detail = b.detail;
  if (typeof detail === 'string' && detail.trim()) {
    const title = typeof b.title === 'string' && b.title && !detail.startsWith(b.title) ? `${b.title}: ` : '';
    return `${title}${detail.trim()}`;
  }
  if (Array.isArray(detail) && detail.length) {
    return detail
      .map((d) => {
        if (!d || typeof d !== 'object') return String(d);
        const item = d as { loc?: unknown; msg?: unknown };
        const loc = Array.isArray(item.loc) ? item.loc.join('.') : '';
        return loc ? `${loc}: ${String(item.msg ?? '')}` : String(item.msg ?? '');
      })
      .join('; ');
  }
  if (typeof b.title === 'string' && b.title) return b.title;
  if (typeof b.message === 'string' && b.message) return b.message;
  return fallback;
}

export interface HttpFailure {
  /** Display name of the provider (`Replicate`, `fal`, `Black Forest Labs`, …). */
  provider: string;
  /** The easel backend's config name. */
  backend: string;
  status: number;
  body: unknown;
  /** The provider flagged the request or its output under its content policy. */
  moderation?: boolean;
  /** Out of credits or quota (beyond the generic 402). */
  quota?: boolean;
}

/** The BackendError for a provider's non-2xx answer (after our own retries were spent). */
export function httpFailureError(f: HttpFailure): BackendError {
  const message = providerMessage(f.body, `HTTP ${f.status}`);
  const opts = { status: f.status };
  if (f.moderation) return moderationError(f.provider, f.backend, message, f.status);
  if (f.status === 401 || f.status === 403) {
    return new BackendError(`${f.provider} refused the credentials of backend "${f.backend}" (${f.status}): ${message}`, {
      ...opts,
      code: 'backend_auth',
    });
  }
  if (f.status === 402 || f.quota) {
    return new BackendError(`${f.provider} says backend "${f.backend}" is out of credits (${f.status}): ${message}`, {
      ...opts,
      code: 'backend_quota_exceeded',
    });
  }
  if (f.status === 404) {
    if (/model|version|deployment|endpoint|application|app /i.test(message)) {
      return new BackendError(`${f.provider} (backend "${f.backend}") does not know the model: ${message}`, {
        ...opts,
        code: 'model_not_found',
      });
    }
    return new BackendError(`${f.provider} (backend "${f.backend}") answered 404: ${message}`, { ...opts, code: 'backend_error' });
  }
  if (f.status === 408 || f.status === 409 || f.status === 425 || f.status === 429 || f.status >= 500) {
    return new BackendError(`${f.provider} (backend "${f.backend}") is unavailable (${f.status}): ${message}`, {
      ...opts,
      code: 'backend_unavailable',
      retryable: true,
    });
  }
  if (f.status === 400 || f.status === 413 || f.status === 422) {
    return new BackendError(`${f.provider} (backend "${f.backend}") rejected the request (${f.status}): ${message}`, {
      ...opts,
      code: 'invalid_request',
    });
  }
  return new BackendError(`${f.provider} (backend "${f.backend}") failed (${f.status}): ${message}`, { ...opts, code: 'backend_error' });
}

/** A moderation outcome, always naming the provider so users know whose policy refused them. */
export function moderationError(provider: string, backend: string, message: string, status?: number): BackendError {
  return new BackendError(`${provider} refused the request under its content policy (backend "${backend}"): ${message}`, {
    code: 'content_policy_violation',
    status,
  });
}

/** Words providers use when a failure is their safety system, not a bug. */
export const MODERATION_WORDS = /\b(nsfw|safety|moderat\w*|content[ _-]?(policy|filter\w*)|flagged|inappropriate|sensitive)\b/i;
