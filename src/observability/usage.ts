/**
 * Usage and cost reports from the metadata store: succeeded jobs (their recorded cost, model,
 * backend and images) joined with their cost records (cache hits, money saved, GPU time).
 *
 * - `usage()` answers `GET /v1/usage`: one key's (or, for an admin, every key's) spend by day,
 *   model and backend, images, and cache hits and savings.
 * - `costReport()` is `easel costs report`: cost per image by model, GPU utilization of self-hosted
 *   backends, and the monthly break-even volume of each self-hosted model against hosted ones, from
 *   measured GPU-seconds.
 */
import { sql } from 'kysely';
import type { EaselConfig } from '../config/schema.ts';
import type { MetadataDb } from '../store/database.ts';
import type { PriceTable } from '../pricing/price-table.ts';
import { CostModel } from '../pricing/cost-model.ts';

const DAY = 86_400_000;
const r6 = (x: number) => Math.round(x * 1e6) / 1e6;

/**
 * A row of the raw query below: its columns are aggregates, not a table's (counts and sums are numbers
 * on both databases, see store/database.ts; a sum over no values is null).
 */
interface Row {
  d: number;
  model: string;
  backend: string | null;
  cache_kind: string | null;
  jobs: number;
  images: number | null;
  cost: number | null;
  saved: number | null;
  gpu: number | null;
}

export interface UsageQuery {
  /** Undefined: every key (admins). */
  keyId?: string;
  from: Date;
  to: Date;
}

async function rows(mdb: MetadataDb, q: UsageQuery): Promise<Row[]> {
  const keyFilter = q.keyId === undefined ? sql`` : sql`and j.key_id = ${q.keyId}`;
  const result = await sql<Row>`
    select d, model, backend, cache_kind, count(*) as jobs, sum(n_images) as images, sum(cost) as cost, sum(saved) as saved, sum(gpu) as gpu
    from (
      select cast(j.finished_at / ${DAY} as bigint) as d, j.model as model, j.backend as backend, j.cost_usd as cost,
             (select count(*) from images i where i.job_id = j.id) as n_images,
             c.saved_usd as saved, c.cache_kind as cache_kind, c.gpu_seconds as gpu
      from jobs j left join job_costs c on c.job_id = j.id
      where j.status = 'succeeded' and j.finished_at >= ${q.from.getTime()} and j.finished_at < ${q.to.getTime()} ${keyFilter}
    ) t
    group by d, model, backend, cache_kind
    order by d`.execute(mdb.db);
  return result.rows;
}

interface Bucket {
  jobs: number;
  images: number;
  cost_usd: number;
  cache_hits: number;
  saved_usd: number;
}
const empty = (): Bucket => ({ jobs: 0, images: 0, cost_usd: 0, cache_hits: 0, saved_usd: 0 });
function add(b: Bucket, r: Row): void {
  b.jobs += r.jobs;
  b.images += r.images ?? 0;
  b.cost_usd = r6(b.cost_usd + (r.cost ?? 0));
  if (r.cache_kind) b.cache_hits += r.jobs;
  b.saved_usd = r6(b.saved_usd + (r.saved ?? 0));
}

export async function usage(mdb: MetadataDb, q: UsageQuery) {
  const data = await rows(mdb, q);
  const total = empty();
  const days = new Map<string, Bucket>();
  const models = new Map<string, Bucket>();
  const backends = new Map<string, Bucket>();
  const cache = { exact: 0, semantic: 0, saved_usd: 0 };
  for (const r of data) {
    add(total, r);
    const day = new Date(r.d * DAY).toISOString().slice(0, 10);
    for (const [map, k] of [[days, day], [models, r.model], [backends, r.backend ?? 'unknown']] as const) {
      let b = map.get(k);
      if (!b) map.set(k, (b = empty()));
      add(b, r);
    }
    if (r.cache_kind === 'exact' || r.cache_kind === 'semantic') cache[r.cache_kind] += r.jobs;
    cache.saved_usd = r6(cache.saved_usd + (r.saved ?? 0));
  }
  const list = (m: Map<string, Bucket>, name: string) => [...m].map(([k, b]) => ({ [name]: k, ...b })).sort((a, b) => b.cost_usd - a.cost_usd);
  return {
    object: 'usage',
    key_id: q.keyId ?? null,
    from: q.from.toISOString(),
    to: q.to.toISOString(),
    totals: total,
    by_day: [...days].map(([date, b]) => ({ date, ...b })),
    by_model: list(models, 'model'),
    by_backend: list(backends, 'backend'),
    cache: {
      hits: cache.exact + cache.semantic,
      exact_hits: cache.exact,
      semantic_hits: cache.semantic,
      hit_rate: total.jobs ? Math.round(((cache.exact + cache.semantic) / total.jobs) * 1e4) / 1e4 : 0,
      saved_usd: cache.saved_usd,
    },
  };
}

// ------------------------------------------------------------------ easel costs report

/** Hosted references for break-even when no hosted model is configured (list prices, 1024×1024). */
const REFERENCE_HOSTED = [
  { label: 'openai dall-e-3 (standard)', type: 'openai', model: 'dall-e-3', quality: 'standard' },
  { label: 'openai gpt-image-1 (medium)', type: 'openai', model: 'gpt-image-1', quality: 'medium' },
  { label: 'openai gpt-image-1-mini (low)', type: 'openai', model: 'gpt-image-1-mini', quality: 'low' },
  { label: 'replicate flux-schnell', type: 'replicate', model: 'black-forest-labs/flux-schnell', quality: undefined },
  { label: 'replicate flux-dev', type: 'replicate', model: 'black-forest-labs/flux-dev', quality: undefined },
];

const HOURS_PER_MONTH = 730;

export interface CostReport {
  from: string;
  to: string;
  models: { model: string; backend: string; self_hosted: boolean; jobs: number; images: number; cost_usd: number; cost_per_image_usd: number | null; gpu_seconds_per_image: number | null; cache_hits: number; saved_usd: number }[];
  gpu: { backend: string; gpus: number; usd_per_gpu_hour: number; gpu_seconds: number; window_seconds: number; utilization: number }[];
  break_even: {
    model: string;
    backend: string;
    gpu_seconds_per_image: number;
    self_hosted_usd_per_image: number;
    gpu_usd_per_month: number;
    capacity_images_per_month: number;
    images_per_month_now: number;
    against: { hosted: string; usd_per_image: number; break_even_images_per_month: number | null; verdict: string }[];
  }[];
}

export async function costReport(mdb: MetadataDb, config: EaselConfig, prices: Pick<PriceTable, 'priceFor'>, opts: { days: number; now?: Date }): Promise<CostReport> {
  const to = opts.now ?? new Date();
  const from = new Date(to.getTime() - opts.days * DAY);
  const data = await rows(mdb, { from, to });
  const costs = new CostModel({ config: config.costModel, prices, unpricedImageUsd: config.budgets.unpricedImageUsd });
  const typeOf = new Map(config.backends.map((b) => [b.name, b.type]));
  const isSelf = (backend: string) => costs.isSelfHosted({ backend: { name: backend, type: typeOf.get(backend) ?? '' } });

  const byModel = new Map<string, CostReport['models'][number] & { gpuTotal: number; gpuImages: number }>();
  for (const r of data) {
    if (r.backend === 'cache') continue;
    const k = `${r.model}\u0000${r.backend}`;
    let m = byModel.get(k);
    if (!m) {
      m = { model: r.model, backend: r.backend ?? 'unknown', self_hosted: isSelf(r.backend ?? ''), jobs: 0, images: 0, cost_usd: 0, cost_per_image_usd: null, gpu_seconds_per_image: null, cache_hits: 0, saved_usd: 0, gpuTotal: 0, gpuImages: 0 };
      byModel.set(k, m);
    }
    m.jobs += r.jobs;
    m.images += r.images ?? 0;
    m.cost_usd = r6(m.cost_usd + (r.cost ?? 0));
    if (r.gpu != null) {
      m.gpuTotal += r.gpu;
      m.gpuImages += r.images ?? 0;
    }
  }
  // Cache hits are attributed to the model they answered for.
  for (const r of data.filter((x) => x.cache_kind)) {
    for (const m of byModel.values()) if (m.model === r.model) {
      m.cache_hits += r.jobs;
      m.saved_usd = r6(m.saved_usd + (r.saved ?? 0));
      break;
    }
  }
  const models = [...byModel.values()].map(({ gpuTotal, gpuImages, ...m }) => ({
    ...m,
    cost_per_image_usd: m.images ? r6(m.cost_usd / m.images) : null,
    gpu_seconds_per_image: gpuImages ? Math.round((gpuTotal / gpuImages) * 1000) / 1000 : null,
  }));

  // GPU utilization: measured GPU time over the part of the window the backend was in use.
  const firstUse = (await sql<{ backend: string; first: number; gpu: number }>`
    select backend, min(created_at) as first, sum(gpu_seconds) as gpu from job_costs
    where gpu_seconds is not null and created_at >= ${from.getTime()} and created_at < ${to.getTime()} group by backend`.execute(mdb.db)).rows;
  const gpu = firstUse.map((u) => {
    const cfg = config.costModel.backends[u.backend];
    const hosts = (config.backends.find((b) => b.name === u.backend) as { hosts?: unknown[] } | undefined)?.hosts;
    const gpus = cfg?.gpus ?? (Array.isArray(hosts) && hosts.length ? hosts.length : 1);
    const windowSeconds = Math.max(1, (to.getTime() - Math.max(from.getTime(), u.first)) / 1000);
    return {
      backend: u.backend,
      gpus,
      usd_per_gpu_hour: costs.ratePerGpuHour(u.backend),
      gpu_seconds: Math.round(u.gpu * 10) / 10,
      window_seconds: Math.round(windowSeconds),
      // Measured GPU time cannot exceed the wall time of the GPUs; a backend reporting more (or clocks apart) reads as full.
      utilization: Math.min(1, Math.round((u.gpu / (windowSeconds * gpus)) * 1e4) / 1e4),
    };
  });

  // Hosted alternatives: the configured hosted models, else well-known references.
  const hosted = config.models
    .filter((m) => !isSelf(m.backend))
    .map((m) => {
      const type = typeOf.get(m.backend) ?? '';
      return { label: `${m.name} (${type})`, usd: prices.priceFor({ type, name: m.backend }, m.model ?? m.name, '1024x1024', undefined, 1) };
    })
    .filter((h): h is { label: string; usd: number } => h.usd !== undefined && h.usd > 0);
  const alternatives = hosted.length
    ? hosted
    : REFERENCE_HOSTED.map((r) => ({ label: r.label, usd: prices.priceFor(r.type, r.model, '1024x1024', r.quality, 1) })).filter((h): h is { label: string; usd: number } => h.usd !== undefined);

  const span = Math.max(1, opts.days) * DAY;
  const breakEven = models
    .filter((m) => m.self_hosted && m.gpu_seconds_per_image)
    .map((m) => {
      const s = m.gpu_seconds_per_image!;
      const rate = costs.ratePerGpuHour(m.backend);
      const perImage = r6((s * rate) / 3600);
      const monthly = Math.round(rate * HOURS_PER_MONTH * 100) / 100;
      const capacity = Math.floor((HOURS_PER_MONTH * 3600) / s);
      return {
        model: m.model,
        backend: m.backend,
        gpu_seconds_per_image: s,
        self_hosted_usd_per_image: perImage,
        gpu_usd_per_month: monthly,
        capacity_images_per_month: capacity,
        images_per_month_now: Math.round((m.images * 30 * DAY) / span),
        against: alternatives.map((h) => {
          const be = Math.ceil(monthly / h.usd);
          const reachable = be <= capacity;
          return {
            hosted: h.label,
            usd_per_image: h.usd,
            break_even_images_per_month: reachable ? be : null,
            verdict: reachable
              ? `a dedicated GPU pays off above ${be.toLocaleString('en-US')} images/month (it can make ${capacity.toLocaleString('en-US')})`
              : `hosted is cheaper even with the GPU fully busy (${capacity.toLocaleString('en-US')} images/month would cost $${monthly} vs $${r6(capacity * h.usd)})`,
          };
        }),
      };
    });

  return { from: from.toISOString(), to: to.toISOString(), models, gpu, break_even: breakEven };
}

const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const money = (x: number | null) => (x === null ? '—' : `$${x < 0.01 && x > 0 ? x.toFixed(5) : x.toFixed(4)}`);

export function formatCostReport(r: CostReport): string {
  const out: string[] = [];
  out.push(`easel cost report ${r.from.slice(0, 10)} → ${r.to.slice(0, 10)}`, '');
  out.push('Cost per image by model');
  if (r.models.length === 0) out.push('  (no finished jobs in this window)');
  else {
    out.push(`  ${pad('model', 22)}${pad('backend', 16)}${pad('images', 9)}${pad('spent', 12)}${pad('per image', 12)}${pad('GPU s/img', 11)}cache hits (saved)`);
    for (const m of r.models) {
      out.push(`  ${pad(m.model, 22)}${pad(m.backend + (m.self_hosted ? '*' : ''), 16)}${pad(String(m.images), 9)}${pad(money(m.cost_usd), 12)}${pad(money(m.cost_per_image_usd), 12)}${pad(m.gpu_seconds_per_image === null ? '—' : String(m.gpu_seconds_per_image), 11)}${m.cache_hits} (${money(m.saved_usd)})`);
    }
    out.push('  * self-hosted: cost = $/GPU-hour × measured GPU-seconds');
  }
  out.push('', 'GPU utilization');
  if (r.gpu.length === 0) out.push('  (no self-hosted jobs measured in this window)');
  for (const g of r.gpu) {
    out.push(`  ${pad(g.backend, 20)}${(g.utilization * 100).toFixed(1)}% of ${g.gpus} GPU(s) busy (${g.gpu_seconds}s of GPU time over ${(g.window_seconds / 3600).toFixed(1)}h, $${g.usd_per_gpu_hour}/GPU-hour)`);
  }
  out.push('', 'Break-even: self-hosted vs hosted, per month, one dedicated GPU');
  if (r.break_even.length === 0) out.push('  (needs measured self-hosted jobs)');
  for (const b of r.break_even) {
    out.push(`  ${b.model} on ${b.backend}: ${b.gpu_seconds_per_image}s GPU/image → ${money(b.self_hosted_usd_per_image)}/image; the GPU costs $${b.gpu_usd_per_month}/month and can make ${b.capacity_images_per_month.toLocaleString('en-US')} images; you make ~${b.images_per_month_now.toLocaleString('en-US')}/month now`);
    for (const a of b.against) out.push(`    vs ${pad(a.hosted, 34)} ${money(a.usd_per_image)}/image: ${a.verdict}`);
  }
  return out.join('\n') + '\n';
}
