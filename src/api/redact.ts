/**
 * What a caller who is not an admin may see of failures: no internal addresses, host names or raw
 * connection errors of the backends easel drives. Admin keys see the full text, and every detail is
 * in the logs under the job's id (and the request's id).
 */
import type { JobError } from '../core/job.ts';

/** Failures whose text is about easel's own infrastructure, not the request: replaced whole. */
const INFRASTRUCTURE: Record<string, string> = {
  backend_unavailable: 'The backend that runs this model is unavailable right now.',
  backend_error: 'The backend that runs this model failed the request.',
  backend_auth: 'The backend that runs this model refused this server’s credentials.',
  backend_timeout: 'The backend that runs this model did not answer in time.',
  timeout: 'The job ran longer than this server allows.',
  worker_lost: 'The job was interrupted too many times and was given up.',
  internal_error: 'The server had an error while running the job.',
  queue_unavailable: 'The job queue was unreachable when the job was submitted.',
  input_missing: 'An input image of the job is no longer stored.',
  rate_limited: 'The backend that runs this model is rate-limiting this server.',
};

const URL_RE = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>)]+/gi;
const IPV4_RE = /\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b/g;
const IPV6_RE = /\[?\b(?:[0-9a-f]{1,4}:){2,7}[0-9a-f]{0,4}\b\]?(?::\d+)?/gi;
const ERRNO_RE = /\b(?:ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|UND_ERR_[A-Z_]+)\b/g;

/** A message with addresses, URLs and socket error codes taken out. */
export function redactAddresses(message: string): string {
  return message.replace(URL_RE, '(an internal address)').replace(IPV6_RE, '(an internal address)').replace(IPV4_RE, '(an internal address)').replace(ERRNO_RE, '').replace(/\s{2,}/g, ' ').trim();
}

/** A job's error as its key sees it: admins the stored text, others a plain sentence for infrastructure failures. */
export function visibleJobError(error: JobError, jobId: string, admin: boolean): JobError {
  if (admin) return error;
  const plain = Object.hasOwn(INFRASTRUCTURE, error.code) ? INFRASTRUCTURE[error.code]! : undefined;
  if (plain) return { code: error.code, message: `${plain} The details are in the server's logs under ${jobId}.` };
  return { code: error.code, message: redactAddresses(error.message) };
}
