/**
 * One backend type, described in one place: its config schema, how to build it, and whether its
 * images are costed by GPU time. `src/backends/definitions.ts` lists them all; the config schema's
 * union and the registry are derived from that list, so adding a backend is adding a folder and a
 * line there.
 */
import type { z } from 'zod';
import type { Logger } from 'pino';
import type { ImageBackend } from './image-backend.ts';
import type { PriceRule } from '../pricing/price-table.ts';

/** What the runtime hands every factory besides the backend's own config. */
export interface BackendFactoryDeps {
  log?: Logger;
  /** The service's public base URL (provider webhooks point back at it). */
  publicUrl?: string;
}

export interface BackendDefinition<Schema extends z.ZodType<{ type: string; name: string }> = z.ZodType<{ type: string; name: string }>> {
  /** The `type` of a `backends:` entry. */
  type: string;
  /** One line for listings and docs. */
  description: string;
  /** The config entry's schema (strict; `type` is its literal). */
  configSchema: Schema;
  create(config: z.infer<Schema>, deps: BackendFactoryDeps): ImageBackend;
  /** Runs on GPUs the operator owns: costed by measured GPU time (`costModel`), not list prices. */
  selfHosted: boolean;
  /** Public list prices of the provider's models (the price table's defaults). */
  prices?: readonly PriceRule[];
  /**
   * The quality the provider bills for, from whatever a request said (or did not), where its prices
   * depend on quality words of its own (OpenAI's); absent, the request's word, lower-cased.
   */
  billedQuality?: (model: string, quality: string | undefined) => string | undefined;
}
