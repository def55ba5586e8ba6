/**
 * What a generation is answered while the default model is still being downloaded on first start
 * (src/models/auto-pull.ts), instead of `no_backend`: 503 `model_loading` in OpenAI's error shape,
 * the progress in the message and a `Retry-After` (OpenAI's SDKs retry a 503 after that long), or,
 * when the download failed, `no_backend` with the reason and what to do.
 */
import { DomainError } from '../core/errors.ts';
import type { AutoPull } from '../models/auto-pull.ts';
import { describeProgress } from '../models/pull-progress.ts';

export function modelLoadingError(pull: Pick<AutoPull, 'state' | 'loading'> | undefined): DomainError | undefined {
  if (!pull) return undefined;
  const s = pull.state();
  if (pull.loading) {
    const what = s.status === 'waiting' ? `being downloaded by ${s.owner}` : s.status === 'converting' ? 'being converted for the CPU' : s.status === 'starting' ? 'about to be downloaded' : 'downloading';
    const progress = s.receivedBytes > 0 || s.percent !== null ? `: ${describeProgress(s)}` : '';
    // Soon enough to see it finish, not so often that clients spin: the time left, within 5–60 s.
    const retryAfter = Math.min(60, Math.max(5, s.etaSeconds ?? 10));
    return new DomainError('unavailable', `The default model (${s.models.join(' + ')}) is ${what}${progress}. Generations start as soon as it is ready; retry in ${retryAfter} s.`, {
      code: 'model_loading',
      retryAfterSeconds: retryAfter,
    });
  }
  if (s.status === 'failed') {
    return new DomainError('unavailable', `No image model is installed: the download of the default model failed (${s.error}).`, { code: 'no_backend', retryable: false });
  }
  return undefined;
}
