/** The `pricing` config section: overrides of the default price table. */
import { z } from 'zod';
import type { PriceRule } from './price-table.ts';

const oneOrMany = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

export const priceOverrideSchema = z
  .object({
    /** A backend type (`openai`, `replicate`, …) or one backend's config name. */
    backend: z.string().min(1),
    /** The backend's model id; `*` matches anything. */
    model: z.string().min(1).default('*'),
    /** `WxH` (or a list) the price is for; absent means any size. */
    size: oneOrMany.optional(),
    /** Quality (or a list) the price is for; absent means any quality. */
    quality: oneOrMany.optional(),
    usdPerImage: z.number().nonnegative().optional(),
    usdPerMegapixel: z.number().nonnegative().optional(),
  })
  .strict()
  .refine((o) => (o.usdPerImage === undefined) !== (o.usdPerMegapixel === undefined), {
    message: 'set exactly one of usdPerImage and usdPerMegapixel',
  });

export const pricingConfigSchema = z
  .object({
    /** Prices that replace the defaults where they match (a backend name beats a backend type). */
    overrides: z.array(priceOverrideSchema).default([]),
  })
  .strict();

export type PricingConfig = z.infer<typeof pricingConfigSchema>;

export function priceRules(config: PricingConfig | undefined): PriceRule[] {
  const list = (v: string | string[] | undefined) => (v === undefined ? undefined : [v].flat());
  return (config?.overrides ?? []).map((o) => ({
    backend: o.backend,
    model: o.model,
    sizes: list(o.size),
    qualities: list(o.quality),
    usdPerImage: o.usdPerImage,
    usdPerMegapixel: o.usdPerMegapixel,
  }));
}
