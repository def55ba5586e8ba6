/**
 * What a job costs, before (admission estimates) and after (settlement):
 *
 * - Hosted backends: the price table (`PriceTable.priceFor`, defaults + `pricing.overrides`); a cost
 *   the provider reports wins at settlement. A model the table does not know is estimated at
 *   `budgets.unpricedImageUsd` per image.
 * - Self-hosted backends (models whose spec says `gpu-time`, types in `costModel.selfHostedTypes`, or
 *   backends named in `costModel.backends`; a price override naming the backend wins):
 *   $ per GPU-hour (per backend, or per host of a GPU pool) × measured GPU-seconds. Admission
 *   estimates use the 90th percentile of recently measured images of that backend and model (per
 *   megapixel) times `costModel.estimateMargin`, or `estimateGpuSecondsPerImage` before any was measured.
 */
import type { Kysely } from 'kysely';
import type { ImageSize } from '../core/image-request.ts';
import type { ImageBackend } from '../backends/image-backend.ts';
import type { PricingKind } from '../backends/model-spec.ts';
import type { PriceTable } from './price-table.ts';
import type { MetadataDb } from '../store/database.ts';
import type { Database } from '../store/schema.ts';
import type { CostModelConfig } from './cost-model-config.ts';

const MP = 1024 * 1024;
/** Megapixels of an image for GPU-time scaling; small images are not proportionally cheaper (fixed overheads). */
const megapixels = (size: ImageSize | undefined): number => (size ? Math.max(0.25, (size.width * size.height) / MP) : 1);

export interface Estimate {
  usd: number;
  /** How it was worked out: `price table`, `GPU time`, `unpriced`. */
  basis: 'price_table' | 'gpu_time' | 'unpriced';
  selfHosted: boolean;
}

/** A model as costing sees it: its backend, the backend's id for it and (when known) how its spec says it is priced. */
export interface CostedModel {
  backend: Pick<ImageBackend, 'name' | 'type'>;
  backendModel: string;
  spec?: { pricing: PricingKind };
}

/** What one call produced, for its cost. */
export interface CallCostInput {
  /** The provider's own figure for the call, when it reports one (it wins). */
  reportedUsd?: number;
  gpuSeconds: number;
  host?: string;
  images: number;
  size: ImageSize | undefined;
  quality: string | undefined;
}

interface Observed {
  /** Recent GPU-seconds per megapixel-image, newest last. */
  samples: number[];
  loadedAt: number;
}

export class CostModel {
  private readonly config: CostModelConfig;
  private readonly prices: Pick<PriceTable, 'priceFor'>;
  private readonly unpricedImageUsd: number;
  private readonly db: Kysely<Database> | undefined;
  private readonly observed = new Map<string, Observed>();

  constructor(opts: { config: CostModelConfig; prices: Pick<PriceTable, 'priceFor'>; unpricedImageUsd: number; mdb?: MetadataDb }) {
    this.config = opts.config;
    this.prices = opts.prices;
    this.unpricedImageUsd = opts.unpricedImageUsd;
    this.db = opts.mdb?.db;
  }

  isSelfHosted(model: Pick<CostedModel, 'backend' | 'spec'>): boolean {
    return Object.hasOwn(this.config.backends, model.backend.name) || this.config.selfHostedTypes.includes(model.backend.type) || model.spec?.pricing === 'gpu-time';
  }

  /**
   * A price override that names this backend (not its type): an operator pricing an endpoint on
   * purpose (a proxy in front of a paid API) wins over GPU time.
   */
  private namedPrice(model: CostedModel, size: ImageSize | undefined, quality: string | undefined, n: number): number | undefined {
    return this.prices.priceFor({ type: '', name: model.backend.name }, model.backendModel, size, quality, n);
  }

  /** The cost of one finished call: the provider's figure, else GPU time (self-hosted), else the price table. */
  callCost(model: CostedModel, c: CallCostInput): number | undefined {
    if (c.reportedUsd !== undefined) return c.reportedUsd;
    if (this.isSelfHosted(model)) return this.namedPrice(model, c.size, c.quality, c.images) ?? this.gpuCost(model.backend.name, c.gpuSeconds, c.host);
    return this.prices.priceFor({ type: model.backend.type, name: model.backend.name }, model.backendModel, c.size, c.quality, c.images);
  }

  /** $ per GPU-hour of a self-hosted backend (of one of its hosts when named). */
  ratePerGpuHour(backendName: string, host?: string): number {
    const b = Object.hasOwn(this.config.backends, backendName) ? this.config.backends[backendName] : undefined;
    if (host && b && Object.hasOwn(b.hosts, host)) return b.hosts[host]!;
    return b?.usdPerGpuHour ?? this.config.defaultUsdPerGpuHour;
  }

  /** USD of `gpuSeconds` on a self-hosted backend (host: the pool host that ran it). */
  gpuCost(backendName: string, gpuSeconds: number, host?: string): number {
    return Math.round(((gpuSeconds * this.ratePerGpuHour(backendName, host)) / 3600) * 1e6) / 1e6;
  }

  /** What `n` images are expected to cost on this backend and model. */
  async estimate(model: CostedModel, size: ImageSize | undefined, quality: string | undefined, n: number): Promise<Estimate> {
    const { backend, backendModel } = model;
    if (this.isSelfHosted(model)) {
      const named = this.namedPrice(model, size, quality, n);
      if (named !== undefined) return { usd: named, basis: 'price_table', selfHosted: true };
      const perMp = await this.secondsPerMegapixel(backend.name, backendModel);
      const seconds = perMp * megapixels(size) * n;
      return { usd: this.gpuCost(backend.name, seconds), basis: 'gpu_time', selfHosted: true };
    }
    const price = this.prices.priceFor({ type: backend.type, name: backend.name }, backendModel, size, quality, n);
    if (price !== undefined) return { usd: price, basis: 'price_table', selfHosted: false };
    return { usd: Math.round(this.unpricedImageUsd * n * 1e6) / 1e6, basis: 'unpriced', selfHosted: false };
  }

  /** Records a measured job so later estimates follow reality. */
  observe(backendName: string, backendModel: string, gpuSeconds: number, images: number, size: ImageSize | undefined): void {
    if (!(gpuSeconds > 0) || images <= 0) return;
    const key = `${backendName}\u0000${backendModel}`;
    const o = this.observed.get(key) ?? { samples: [], loadedAt: Date.now() };
    o.samples.push(gpuSeconds / images / megapixels(size));
    if (o.samples.length > 50) o.samples.splice(0, o.samples.length - 50);
    this.observed.set(key, o);
  }

  /** GPU-seconds per 1024² image used for estimates: the 90th percentile of recent ones × margin, or the configured guess. */
  async secondsPerMegapixel(backendName: string, backendModel: string): Promise<number> {
    const key = `${backendName}\u0000${backendModel}`;
    let o = this.observed.get(key);
    // Another process (a worker) measures jobs: re-read recent measurements now and then.
    if (this.db && (!o || Date.now() - o.loadedAt > 60_000)) {
      const samples = await this.loadSamples(backendName, backendModel).catch(() => undefined);
      o = { samples: samples && samples.length ? samples : (o?.samples ?? []), loadedAt: Date.now() };
      this.observed.set(key, o);
    }
    const configured = Object.hasOwn(this.config.backends, backendName) ? this.config.backends[backendName] : undefined;
    const fallback = configured?.estimateGpuSecondsPerImage ?? this.config.estimateGpuSecondsPerImage;
    if (!o || o.samples.length === 0) return fallback;
    // The 90th percentile of recent images, with a margin: budgets reserve enough, routing stays realistic.
    const sorted = [...o.samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.9))]! * this.config.estimateMargin;
  }

  private async loadSamples(backendName: string, backendModel: string): Promise<number[]> {
    const rows = await this.db!
      .selectFrom('job_costs')
      .select(['gpu_seconds', 'images', 'megapixels'])
      .where('backend', '=', backendName)
      .where('backend_model', '=', backendModel)
      .where('gpu_seconds', 'is not', null)
      .$narrowType<{ gpu_seconds: number }>()
      .orderBy('created_at', 'desc')
      .limit(50)
      .execute();
    return rows
      .map((r) => r.gpu_seconds / Math.max(1, r.images ?? 1) / ((r.megapixels ?? 1) || 1))
      .filter((x) => Number.isFinite(x) && x > 0)
      .reverse();
  }
}
