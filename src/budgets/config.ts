/**
 * The `budgets` config section: daily and monthly USD limits per key, per group and by default.
 */
import { z } from 'zod';

const usd = z.number().nonnegative();
const positive = (def: number) => z.number().positive().default(def);

/** A daily and/or monthly limit in USD. */
export const budgetLimitSchema = z
  .object({
    dailyUsd: usd.optional(),
    monthlyUsd: usd.optional(),
  })
  .strict();
export type BudgetLimit = z.infer<typeof budgetLimitSchema>;

export const budgetsConfigSchema = z
  .object({
    /** Limits for every key that has no entry of its own in `keys`. */
    default: budgetLimitSchema.optional(),
    /** Per key, by key name or id. */
    keys: z.record(z.string().min(1), budgetLimitSchema).default({}),
    /** Groups of keys (by name or id) sharing one limit, on top of each key's own. */
    groups: z
      .record(
        z.string().min(1),
        budgetLimitSchema.extend({ keys: z.array(z.string().min(1)).min(1) }).strict(),
      )
      .default({}),
    /** Reserved (and, if the real cost stays unknown, charged) per image of a model the price table does not know. */
    unpricedImageUsd: usd.default(0.1),
    /** How often held reservations of jobs that ended without a worker settling them are swept. */
    sweepIntervalSeconds: positive(30),
  })
  .strict();
export type BudgetsConfig = z.infer<typeof budgetsConfigSchema>;
