/** Config fields every hosted-provider backend shares (spread into each backend's zod object). */
import { z } from 'zod';

export const hostedCommonFields = {
  /** The name models and routes refer to this backend by. */
  name: z.string().min(1),
  /** The key itself; prefer the `apiKeyEnv` variable so it stays out of the file. */
  apiKey: z.string().min(1).optional(),
  /** Env var holding the key when `apiKey` is absent (each provider has a usual default). */
  apiKeyEnv: z.string().min(1).optional(),
  /** Limit for one HTTP attempt (body included). */
  timeoutSeconds: z.number().positive().max(3600).default(60),
  /** Retries of 429 / 5xx / connection failures, honouring retry-after. */
  maxRetries: z.number().int().min(0).max(10).default(3),
  /** Most images one job hands this backend at once; the backend fans out to as many provider jobs as it needs. */
  maxImagesPerCall: z.number().int().min(1).max(100).default(10),
};

export const pollingFields = {
  /** First poll interval while waiting on a provider job; it stretches by 1.5× up to `maxPollIntervalMs`. */
  pollIntervalMs: z.number().int().min(10).max(60_000).default(1000),
  maxPollIntervalMs: z.number().int().min(10).max(300_000).default(5000),
  /**
   * Where the provider should send its webhook: a full URL, or false for none. Unset, easel uses
   * `<server.publicUrl>/hooks/providers/<name>` when server.publicUrl is configured.
   */
  webhookUrl: z.union([z.url({ protocol: /^https?$/ }), z.literal(false)]).optional(),
};

/** The webhook URL a backend hands its provider, or undefined for none. */
export function webhookTarget(configured: string | false | undefined, publicUrl: string | undefined, name: string): string | undefined {
  if (configured === false) return undefined;
  if (configured) return configured;
  if (!publicUrl) return undefined;
  return `${publicUrl.replace(/\/+$/, '')}/hooks/providers/${encodeURIComponent(name)}`;
}
