/**
 * A failed pull, said so a person can act on it: the real cause (`getaddrinfo ENOTFOUND
 * huggingface.co`, not `fetch failed`), how to use a mirror when the hub cannot be reached, and whether
 * running again resumes.
 */
import { DownloadError } from './downloader.ts';
import { formatBytes } from './pull-progress.ts';

function downloadError(err: unknown): DownloadError | undefined {
  for (let e = err as { cause?: unknown } | undefined, d = 0; e && d < 8; e = e.cause as typeof e, d++) {
    if (e instanceof DownloadError) return e;
  }
  return undefined;
}

/** Whether the pull failed because the hub (or its CDN) could not be reached or stopped answering. */
export function isUnreachable(err: unknown): boolean {
  return downloadError(err)?.code === 'network';
}

export function explainPullFailure(
  err: unknown,
  ctx: { endpoint: string; interrupted?: boolean; partialBytes?: number; command: string; mirrorHint?: string },
): string {
  const resume = ctx.partialBytes ? `; ${formatBytes(ctx.partialBytes)} is on disk, and ${ctx.command} resumes from there` : '';
  if (ctx.interrupted) return `interrupted${resume || `; ${ctx.command} starts it again`}`;
  const message = (err as Error).message ?? String(err);
  if (isUnreachable(err)) {
    const mirror = ctx.mirrorHint ?? 'point easel at a mirror of the Hub with --endpoint URL or HF_ENDPOINT=URL';
    return `${message}. ${ctx.endpoint} could not be reached or stopped answering: check the network or proxy, or ${mirror}${resume}`;
  }
  return `${message}${resume}`;
}
