/**
 * What an image costs: a price table per provider (backend type), model, size and quality, with
 * defaults from the providers' public prices and overrides from config. The worker records the
 * table's price on each job when the backend reports no cost of its own; a provider-reported cost
 * (Replicate's predict time × hardware price, BFL's credits, …) always wins over the table.
 *
 * `priceFor()` is the one function budgets and estimates should call.
 *
 * The defaults are list prices at the time of writing, rounded; they drift, which is what
 * `pricing.overrides` is for. Per-megapixel prices count 1024×1024 as one megapixel.
 */
import type { ImageSize } from '../core/image-request.ts';
import { DEFINITION_PRICES, backendDefinition } from '../backends/definitions.ts';

export interface PriceRule {
  /** A backend type (`openai`, `replicate`, `fal`, `bfl`, `stability`, `imagen`, `ai-sdk`, …) or one backend's config name. */
  backend: string;
  /** The backend's model id; `*` matches anything (`imagen-4.0-fast-*`). Replicate versions are ignored. */
  model: string;
  /** `WxH` sizes the price is for; absent means any size. */
  sizes?: readonly string[];
  /** Qualities the price is for; absent means any quality. */
  qualities?: readonly string[];
  /** Flat price per image. */
  usdPerImage?: number;
  /** Price per megapixel (1024×1024 = 1) per image. */
  usdPerMegapixel?: number;
}

export interface BackendRef {
  type: string;
  name?: string;
}

const MP = 1024 * 1024;

/** The providers' list prices, each from its backend's definition (`src/backends/<type>/definition.ts`). */
export const DEFAULT_PRICES: readonly PriceRule[] = DEFINITION_PRICES;

function sizeText(size: ImageSize | string | undefined): string {
  if (!size || size === 'auto') return '1024x1024';
  return typeof size === 'string' ? size : `${size.width}x${size.height}`;
}

function pixels(size: string): number {
  const m = /^(\d+)x(\d+)$/.exec(size);
  return m ? Number(m[1]) * Number(m[2]) : MP;
}

/** The quality a provider bills for, from whatever the request said (or did not): its definition's rule, else the word. */
export function billedQuality(type: string, model: string, quality: string | undefined): string | undefined {
  const rule = backendDefinition(type)?.billedQuality;
  return rule ? rule(model, quality) : quality?.toLowerCase();
}

function normalModel(model: string): string {
  return model.replace(/:[0-9a-f]{64}$/i, '').replace(/^deployments\//, '').toLowerCase();
}

// Every job is priced against every rule: compile each glob once, not once per rule per job.
const globs = new Map<string, RegExp>();

function globScore(pattern: string, model: string): number | undefined {
  const p = pattern.toLowerCase();
  if (!p.includes('*')) return p === model ? 5_000 : undefined;
  let re = globs.get(p);
  if (!re) {
    re = new RegExp(`^${p.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
    globs.set(p, re);
  }
  return re.test(model) ? p.replace(/\*/g, '').length * 10 : undefined;
}

function ruleScore(rule: PriceRule, ref: BackendRef, model: string, size: string, quality: string | undefined): number | undefined {
  let score: number;
  if (ref.name !== undefined && rule.backend === ref.name) score = 100_000;
  else if (rule.backend === ref.type) score = 0;
  else return undefined;
  const m = globScore(rule.model, model);
  if (m === undefined) return undefined;
  score += m;
  if (rule.sizes) {
    if (!rule.sizes.includes(size)) return undefined;
    score += 2;
  }
  if (rule.qualities) {
    if (!quality || !rule.qualities.map((q) => q.toLowerCase()).includes(quality)) return undefined;
    score += 1;
  }
  return score;
}

export class PriceTable {
  private readonly overrides: readonly PriceRule[];
  private readonly defaults: readonly PriceRule[];
  /** Answers of ruleFor (the rules never change): it runs a few times per job and scores every rule. */
  private readonly picked = new Map<string, PriceRule | undefined>();

  constructor(overrides: readonly PriceRule[] = [], defaults: readonly PriceRule[] = DEFAULT_PRICES) {
    this.overrides = overrides;
    this.defaults = defaults;
  }

  /** The best rule for one image; config overrides beat defaults whatever their specificity. */
  ruleFor(backend: BackendRef | string, model: string, size?: ImageSize | string, quality?: string): PriceRule | undefined {
    const ref = typeof backend === 'string' ? { type: backend } : backend;
    const m = normalModel(model);
    const s = sizeText(size);
    const q = billedQuality(ref.type, m, quality);
    const key = `${ref.type}\u0000${ref.name ?? ''}\u0000${m}\u0000${s}\u0000${q ?? ''}`;
    if (this.picked.has(key)) return this.picked.get(key);
    const rule = this.pick(ref, m, s, q);
    if (this.picked.size >= 1000) this.picked.clear();
    this.picked.set(key, rule);
    return rule;
  }

  private pick(ref: BackendRef, m: string, s: string, q: string | undefined): PriceRule | undefined {
    for (const list of [this.overrides, this.defaults]) {
      let best: PriceRule | undefined;
      let bestScore = -1;
      for (const rule of list) {
        const score = ruleScore(rule, ref, m, s, q);
        if (score !== undefined && score > bestScore) {
          best = rule;
          bestScore = score;
        }
      }
      if (best) return best;
    }
    return undefined;
  }

  /** USD for `n` images, or undefined when the table has no price for them. */
  priceFor(backend: BackendRef | string, model: string, size?: ImageSize | string, quality?: string, n = 1): number | undefined {
    const rule = this.ruleFor(backend, model, size, quality);
    if (!rule) return undefined;
    const each =
      rule.usdPerImage !== undefined
        ? rule.usdPerImage
        : rule.usdPerMegapixel !== undefined
          ? rule.usdPerMegapixel * (pixels(sizeText(size)) / MP)
          : undefined;
    if (each === undefined) return undefined;
    return Math.round(each * Math.max(0, n) * 1e6) / 1e6;
  }
}

const defaultTable = new PriceTable();

/**
 * List price in USD of `n` images of `model` on a backend of type `backendType` at `size` and
 * `quality`, from the default table; undefined when unknown. Runtimes with config overrides use
 * their own `PriceTable`.
 */
export function priceFor(backendType: string, model: string, size?: ImageSize | string, quality?: string, n = 1): number | undefined {
  return defaultTable.priceFor(backendType, model, size, quality, n);
}
