/**
 * The `fairness` config section: how keys share the workers (src/fairness).
 *
 * Limits are per key and per group of keys: `maxRunning` (jobs of the key running at once) and
 * `maxQueued` (jobs of the key waiting; a submission past it is a 429). `null` is no limit. `weight`
 * is the key's share of turns when several keys wait at one priority (weight 2 gets twice the turns
 * of weight 1). Keys are looked up by id, then by name, like budgets and rate limits.
 */
import { z } from 'zod';

const limit = z.number().int().positive().nullable();

/** A key's own settings; what it leaves out comes from `defaults`. */
export const keyFairnessSchema = z
  .object({
    weight: z.number().positive().max(1000).optional(),
    maxRunning: limit.optional(),
    maxQueued: limit.optional(),
  })
  .strict();
export type KeyFairness = z.infer<typeof keyFairnessSchema>;

export const fairnessConfigSchema = z
  .object({
    /** false: first come, first served within a priority, and no limits (easel before fair sharing). */
    enabled: z.boolean().default(true),
    defaults: z
      .object({
        weight: z.number().positive().max(1000).default(1),
        maxRunning: limit.default(null),
        maxQueued: limit.default(null),
      })
      .strict()
      .prefault({}),
    /** Per key, by key id or name. */
    keys: z.record(z.string().min(1), keyFairnessSchema).default({}),
    /** Keys (by id or name) sharing limits on top of their own. A key belongs to at most one group. */
    groups: z
      .record(
        z.string().min(1),
        z
          .object({
            keys: z.array(z.string().min(1)).min(1),
            maxRunning: limit.default(null),
            maxQueued: limit.default(null),
          })
          .strict(),
      )
      .default({}),
    /** Keys named in the per-key metrics; the rest are summed under `key="other"`. */
    metricsMaxKeys: z.number().int().min(1).max(1000).default(20),
  })
  .strict()
  .superRefine((cfg, ctx) => {
    const seen = new Map<string, string>();
    for (const [group, g] of Object.entries(cfg.groups)) {
      g.keys.forEach((k, i) => {
        const other = seen.get(k);
        if (other !== undefined) ctx.addIssue({ code: 'custom', path: ['groups', group, 'keys', i], message: `key "${k}" is already in group "${other}"; a key belongs to at most one group` });
        seen.set(k, group);
      });
    }
  });
export type FairnessConfig = z.infer<typeof fairnessConfigSchema>;
