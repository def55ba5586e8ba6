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
const DALLE3_WIDE = ['1792x1024', '1024x1792'];
const GPT_SQUARE = ['1024x1024'];
const GPT_WIDE = ['1536x1024', '1024x1536'];

function gptFamily(model: string, prices: { sq: [number, number, number]; wide: [number, number, number] }): PriceRule[] {
  const q = ['low', 'medium', 'high'] as const;
  return q.flatMap((quality, i) => [
    { backend: 'openai', model, sizes: GPT_SQUARE, qualities: [quality], usdPerImage: prices.sq[i] },
    { backend: 'openai', model, sizes: GPT_WIDE, qualities: [quality], usdPerImage: prices.wide[i] },
    // Any other size (gpt-image-2 takes free sizes): the square price per megapixel.
    { backend: 'openai', model, qualities: [quality], usdPerMegapixel: prices.sq[i] },
  ]);
}

export const DEFAULT_PRICES: readonly PriceRule[] = [
  // OpenAI
  { backend: 'openai', model: 'dall-e-3', sizes: GPT_SQUARE, qualities: ['standard'], usdPerImage: 0.04 },
  { backend: 'openai', model: 'dall-e-3', sizes: DALLE3_WIDE, qualities: ['standard'], usdPerImage: 0.08 },
  { backend: 'openai', model: 'dall-e-3', sizes: GPT_SQUARE, qualities: ['hd'], usdPerImage: 0.08 },
  { backend: 'openai', model: 'dall-e-3', sizes: DALLE3_WIDE, qualities: ['hd'], usdPerImage: 0.12 },
  { backend: 'openai', model: 'dall-e-2', sizes: ['256x256'], usdPerImage: 0.016 },
  { backend: 'openai', model: 'dall-e-2', sizes: ['512x512'], usdPerImage: 0.018 },
  { backend: 'openai', model: 'dall-e-2', sizes: ['1024x1024'], usdPerImage: 0.02 },
  ...gptFamily('gpt-image-1-mini*', { sq: [0.005, 0.011, 0.036], wide: [0.006, 0.015, 0.052] }),
  ...gptFamily('gpt-image-*', { sq: [0.011, 0.02, 0.04], wide: [0.016, 0.03, 0.06] }),
  ...gptFamily('chatgpt-image-*', { sq: [0.011, 0.02, 0.04], wide: [0.016, 0.03, 0.06] }),
  // Replicate (official models, per output image)
  { backend: 'replicate', model: 'stability-ai/sdxl', usdPerImage: 0.0023 },
  { backend: 'replicate', model: 'black-forest-labs/flux-schnell', usdPerImage: 0.003 },
  { backend: 'replicate', model: 'black-forest-labs/flux-dev', usdPerImage: 0.025 },
  { backend: 'replicate', model: 'black-forest-labs/flux-pro', usdPerImage: 0.05 },
  { backend: 'replicate', model: 'black-forest-labs/flux-1.1-pro', usdPerImage: 0.04 },
  { backend: 'replicate', model: 'black-forest-labs/flux-1.1-pro-ultra', usdPerImage: 0.06 },
  // fal (per megapixel)
  { backend: 'fal', model: 'fal-ai/flux/schnell', usdPerMegapixel: 0.003 },
  { backend: 'fal', model: 'fal-ai/flux/dev', usdPerMegapixel: 0.025 },
  { backend: 'fal', model: 'fal-ai/flux-pro*', usdPerMegapixel: 0.05 },
  { backend: 'fal', model: 'fal-ai/flux-pro/v1.1*', usdPerMegapixel: 0.04 },
  // Black Forest Labs (per image; BFL's own `cost` wins when it reports one)
  { backend: 'bfl', model: 'flux-pro-1.1', usdPerImage: 0.04 },
  { backend: 'bfl', model: 'flux-pro-1.1-ultra', usdPerImage: 0.06 },
  { backend: 'bfl', model: 'flux-pro', usdPerImage: 0.05 },
  { backend: 'bfl', model: 'flux-dev', usdPerImage: 0.025 },
  { backend: 'bfl', model: 'flux-kontext-pro', usdPerImage: 0.04 },
  { backend: 'bfl', model: 'flux-kontext-max', usdPerImage: 0.08 },
  // Stability AI
  { backend: 'stability', model: 'ultra', usdPerImage: 0.08 },
  { backend: 'stability', model: 'stable-image-ultra', usdPerImage: 0.08 },
  { backend: 'stability', model: 'core', usdPerImage: 0.03 },
  { backend: 'stability', model: 'stable-image-core', usdPerImage: 0.03 },
  { backend: 'stability', model: 'sd3.5-large', usdPerImage: 0.065 },
  { backend: 'stability', model: 'sd3.5-large-turbo', usdPerImage: 0.04 },
  { backend: 'stability', model: 'sd3.5-medium', usdPerImage: 0.035 },
  { backend: 'stability', model: 'sd3.5-flash', usdPerImage: 0.025 },
  // Google Imagen
  { backend: 'imagen', model: 'imagen-4.0-generate-*', usdPerImage: 0.04 },
  { backend: 'imagen', model: 'imagen-4.0-ultra-generate-*', usdPerImage: 0.06 },
  { backend: 'imagen', model: 'imagen-4.0-fast-generate-*', usdPerImage: 0.02 },
  { backend: 'imagen', model: 'imagen-3.0-generate-*', usdPerImage: 0.03 },
];

function sizeText(size: ImageSize | string | undefined): string {
  if (!size || size === 'auto') return '1024x1024';
  return typeof size === 'string' ? size : `${size.width}x${size.height}`;
}

function pixels(size: string): number {
  const m = /^(\d+)x(\d+)$/.exec(size);
  return m ? Number(m[1]) * Number(m[2]) : MP;
}

/** The quality a provider bills for, from whatever the request said (or did not). */
export function billedQuality(type: string, model: string, quality: string | undefined): string | undefined {
  const q = quality?.toLowerCase();
  if (type !== 'openai') return q;
  if (model === '' || model.startsWith('dall-e-2')) return 'standard';
  if (model.startsWith('dall-e-3')) return q === 'hd' || q === 'high' ? 'hd' : 'standard';
  if (model.startsWith('gpt-image') || model.startsWith('chatgpt-image')) {
    if (q === 'low' || q === 'medium' || q === 'high') return q;
    if (q === 'hd') return 'high';
    if (q === 'standard') return 'medium';
    // `auto` (and unset) lets OpenAI choose; priced as high so budgets never under-count.
    return 'high';
  }
  return q;
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
