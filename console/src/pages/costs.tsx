/**
 * Costs: spend per day and per model, and — where the server's cost report (GET /v1/usage) answers —
 * budget left, cache savings and break-even figures. Without that report the page shows only what the
 * jobs' own `cost_usd` adds up to, and says so: no figure here is ever made up.
 */
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError } from '../api.ts';
import type { JobView, KeyInfo, ListPage } from '../api.ts';
import { useSession } from '../app.tsx';
import { Empty, ErrorBox, Loading, money } from '../ui.tsx';

interface Series {
  label: string;
  usd: number;
  images?: number;
}

interface Report {
  source: 'usage' | 'jobs';
  days: Series[];
  models: Series[];
  backends: Series[];
  total: number;
  images: number;
  unpriced: number;
  jobsCounted: number;
  truncated: boolean;
  budgets: { label: string; limit: number | null; spent: number | null; remaining: number | null }[];
  /** Admins: the budgets of every key. */
  keyBudgets?: { label: string; limit: number | null; spent: number | null; remaining: number | null }[];
  cache: { label: string; value: string }[];
  breakEven: { label: string; value: string }[];
  raw?: unknown;
}

const DAYS = 30;
const MAX_PAGES = 10;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const numOf = (o: Record<string, unknown>, ...keys: string[]): number | null => {
  for (const k of keys) if (typeof o[k] === 'number' && Number.isFinite(o[k])) return o[k] as number;
  return null;
};
const strOf = (o: Record<string, unknown>, ...keys: string[]): string | null => {
  for (const k of keys) if (typeof o[k] === 'string') return o[k] as string;
  return null;
};

/** A list of rows (an array, or an object keyed by label) as label → USD series. */
function seriesOf(v: unknown, labelKeys: string[]): Series[] {
  const rows: [string, unknown][] = Array.isArray(v) ? v.map((r, i) => [isObj(r) ? (strOf(r, ...labelKeys) ?? String(i)) : String(i), r]) : isObj(v) ? Object.entries(v) : [];
  return rows
    .map(([label, r]) => {
      if (typeof r === 'number') return { label, usd: r };
      if (!isObj(r)) return null;
      const usd = numOf(r, 'cost_usd', 'spend_usd', 'spent_usd', 'usd', 'cost', 'total_usd');
      return usd === null ? null : { label, usd, images: numOf(r, 'images', 'image_count', 'count') ?? undefined };
    })
    .filter((x): x is Series => x !== null);
}

/** Budget rows as `/v1/usage` answers them (`[{budget, limit_usd, spent_usd, reserved_usd, remaining_usd}]`). */
function budgetsOf(b: unknown, prefix = ''): Report['budgets'] {
  const entries: [string, unknown][] = Array.isArray(b)
    ? b.map((x, i) => [isObj(x) ? (strOf(x, 'budget', 'label', 'name', 'period', 'scope') ?? String(i)) : String(i), x])
    : isObj(b)
      ? numOf(b, 'limit_usd', 'remaining_usd') !== null ? [['budget', b]] : Object.entries(b)
      : [];
  return entries.flatMap(([label, v]) => {
    if (!isObj(v)) return [];
    const spent = numOf(v, 'spent_usd', 'spend_usd', 'used_usd', 'spent');
    const reserved = numOf(v, 'reserved_usd') ?? 0;
    return [{ label: prefix + label, limit: numOf(v, 'limit_usd', 'limit'), spent: spent === null ? null : spent + reserved, remaining: numOf(v, 'remaining_usd', 'left_usd', 'remaining') }];
  });
}

/** The last DAYS days, each present (0 where nothing was spent), in order. */
function fillDays(days: Series[]): Series[] {
  if (days.length === 0 || !days.every((d) => /^\d{4}-\d{2}-\d{2}$/.test(d.label))) return days;
  const byLabel = new Map(days.map((d) => [d.label, d]));
  const out: Series[] = [];
  for (let i = DAYS - 1; i >= 0; i--) {
    const label = new Date(Date.now() - i * 86400_000).toISOString().slice(0, 10);
    out.push(byLabel.get(label) ?? { label, usd: 0, images: 0 });
  }
  for (const d of days) if (!out.some((x) => x.label === d.label)) out.push(d);
  return out.sort((a, b) => a.label.localeCompare(b.label));
}

function pick(o: Record<string, unknown>, ...keys: string[]): unknown {
  for (const k of keys) if (k in o) return o[k];
  return undefined;
}

/** Reads the cost report loosely: the fields it recognises, with the whole report shown raw below. */
function fromUsage(u: unknown): Report {
  const o = isObj(u) ? u : {};
  const days = fillDays(seriesOf(pick(o, 'by_day', 'daily', 'days', 'per_day'), ['date', 'day']));
  const models = seriesOf(pick(o, 'by_model', 'models', 'per_model'), ['model', 'name']);
  const backends = seriesOf(pick(o, 'by_backend', 'backends', 'per_backend'), ['backend', 'name']);
  const totals = isObj(o.totals) ? o.totals : o;
  const total = numOf(totals, 'cost_usd', 'total_usd', 'spend_usd', 'total') ?? days.reduce((s, d) => s + d.usd, 0);
  const budgets: Report['budgets'] = [];
  const b = pick(o, 'budgets', 'budget');
  budgets.push(...budgetsOf(b));
  const flat = (v: unknown): { label: string; value: string }[] =>
    isObj(v)
      ? Object.entries(v).map(([k, x]) => ({ label: k.replace(/_usd$/, '').replace(/_/g, ' '), value: typeof x === 'number' ? (/usd|cost|sav/i.test(k) ? money(x) : /rate$/.test(k) ? `${Math.round(x * 1000) / 10}%` : String(x)) : typeof x === 'string' ? x : JSON.stringify(x) }))
      : Array.isArray(v)
        ? v.map((x, i) => ({ label: isObj(x) ? (strOf(x, 'model', 'name', 'label') ?? String(i)) : String(i), value: isObj(x) ? Object.entries(x).filter(([k]) => !['model', 'name', 'label'].includes(k)).map(([k, y]) => `${k.replace(/_/g, ' ')}: ${typeof y === 'number' && /usd|cost/i.test(k) ? money(y) : String(y)}`).join(' · ') : String(x) }))
        : [];
  return {
    source: 'usage',
    days,
    models,
    backends,
    total,
    images: numOf(totals, 'images', 'image_count') ?? models.reduce((s, m) => s + (m.images ?? 0), 0),
    unpriced: 0,
    jobsCounted: 0,
    truncated: false,
    budgets,
    cache: flat(pick(o, 'cache', 'cache_savings', 'caching')),
    breakEven: flat(pick(o, 'break_even', 'breakeven', 'break_even_images_per_month')),
    raw: u,
  };
}

async function fromJobs(): Promise<Report> {
  const since = Date.now() / 1000 - DAYS * 86400;
  const jobs: JobView[] = [];
  let after: string | undefined;
  let truncated = false;
  for (let page = 0; page < MAX_PAGES; page++) {
    const q = new URLSearchParams({ limit: '100', status: 'succeeded' });
    if (after) q.set('after', after);
    const res = await api<ListPage<JobView>>(`/v1/images/jobs?${q}`);
    jobs.push(...res.data.filter((j) => j.created_at >= since));
    const oldest = res.data.at(-1);
    if (!res.has_more || !oldest || oldest.created_at < since) break;
    after = oldest.id;
    if (page === MAX_PAGES - 1) truncated = true;
  }
  const byDay = new Map<string, Series>();
  for (let i = DAYS - 1; i >= 0; i--) {
    const d = new Date(Date.now() - i * 86400_000).toLocaleDateString('en-CA');
    byDay.set(d, { label: d, usd: 0, images: 0 });
  }
  const byModel = new Map<string, Series>();
  const byBackend = new Map<string, Series>();
  let unpriced = 0;
  let images = 0;
  for (const j of jobs) {
    const n = j.result?.data.length ?? j.request.n;
    images += n;
    if (j.cost_usd == null) unpriced++;
    const usd = j.cost_usd ?? 0;
    const day = byDay.get(new Date(j.created_at * 1000).toLocaleDateString('en-CA'));
    if (day) {
      day.usd += usd;
      day.images! += n;
    }
    for (const [map, label] of [[byModel, j.model], [byBackend, j.backend ?? '—']] as const) {
      const s = map.get(label) ?? { label, usd: 0, images: 0 };
      s.usd += usd;
      s.images! += n;
      map.set(label, s);
    }
  }
  const sorted = (m: Map<string, Series>) => [...m.values()].sort((a, b) => b.usd - a.usd || (b.images ?? 0) - (a.images ?? 0));
  return {
    source: 'jobs',
    days: [...byDay.values()],
    models: sorted(byModel),
    backends: sorted(byBackend),
    total: jobs.reduce((s, j) => s + (j.cost_usd ?? 0), 0),
    images,
    unpriced,
    jobsCounted: jobs.length,
    truncated,
    budgets: [],
    cache: [],
    breakEven: [],
  };
}

/** Admins: every live key's budgets (one usage call per key, the first 25 keys). */
async function budgetsPerKey(): Promise<Report['budgets']> {
  const keys = (await api<{ data: KeyInfo[] }>('/v1/keys')).data.filter((k) => !k.revoked_at).slice(0, 25);
  const each = await Promise.all(
    keys.map(async (k) => {
      const u = await api<{ budgets?: unknown }>(`/v1/usage?key_id=${encodeURIComponent(k.id)}`).catch(() => ({ budgets: [] }));
      return budgetsOf(u.budgets, `${k.name}: `);
    }),
  );
  return each.flat();
}

export function Costs() {
  const { key } = useSession();
  const [report, setReport] = useState<Report | null>(null);
  const [error, setError] = useState<unknown>(null);
  const load = async () => {
    setError(null);
    try {
      let usage: unknown;
      try {
        usage = await api<unknown>('/v1/usage');
      } catch (err) {
        // No cost report on this server (yet): fall back to the jobs' own costs.
        if (!(err instanceof ApiError && (err.status === 404 || err.status === 501))) throw err;
      }
      const r = usage !== undefined ? fromUsage(usage) : await fromJobs();
      if (usage !== undefined && key.admin) r.keyBudgets = await budgetsPerKey();
      setReport(r);
    } catch (err) {
      setError(err);
    }
  };
  useEffect(() => void load(), []);

  if (error != null) {
    return (
      <section>
        <h1>Costs</h1>
        <ErrorBox error={error} onRetry={load} />
      </section>
    );
  }
  if (!report) {
    return (
      <section>
        <h1>Costs</h1>
        <Loading label="Adding up costs…" />
      </section>
    );
  }
  const r = report;
  return (
    <section class="costs">
      <h1>Costs</h1>
      {r.source === 'jobs' && (
        <p class="notice" role="note">
          This server has no cost report (<code>GET /v1/usage</code>), so these figures are the sum of your succeeded jobs' reported costs over the last {DAYS} days
          {r.truncated ? ` (the most recent ${r.jobsCounted} jobs)` : ''}. Budgets, cache savings and break-even figures appear here when the server reports them.
        </p>
      )}
      <div class="stats">
        <div class="stat">
          <span class="stat-value">{money(r.total)}</span>
          <span class="stat-label">spent{r.source === 'jobs' ? ` in ${DAYS} days` : ''}</span>
        </div>
        <div class="stat">
          <span class="stat-value">{r.images}</span>
          <span class="stat-label">images</span>
        </div>
        {r.images > 0 && (
          <div class="stat">
            <span class="stat-value">{money(r.total / r.images)}</span>
            <span class="stat-label">per image</span>
          </div>
        )}
        {r.unpriced > 0 && (
          <div class="stat">
            <span class="stat-value">{r.unpriced}</span>
            <span class="stat-label">jobs with no reported cost</span>
          </div>
        )}
      </div>

      {(r.keyBudgets ?? r.budgets).length > 0 && (
        <>
          <h2>{r.keyBudgets ? 'Budget left per key' : 'Budget left'}</h2>
          <ul class="budgets">
            {(r.keyBudgets ?? r.budgets).map((b) => {
              const used = b.limit && b.spent !== null ? Math.min(1, b.spent / b.limit) : b.limit && b.remaining !== null ? Math.min(1, 1 - b.remaining / b.limit) : null;
              return (
                <li key={b.label}>
                  <strong>{b.label}</strong>: {b.remaining !== null ? `${money(b.remaining)} left` : '—'}
                  {b.limit !== null && ` of ${money(b.limit)}`}
                  {used !== null && (
                    <div class={`meter${used >= 0.9 ? ' hot' : ''}`} role="meter" aria-valuemin={0} aria-valuemax={100} aria-valuenow={Math.round(used * 100)} aria-label={`${b.label} budget used`}>
                      <div style={{ width: `${Math.round(used * 100)}%` }} />
                    </div>
                  )}
                </li>
              );
            })}
          </ul>
        </>
      )}

      {r.source === 'usage' && (r.keyBudgets ?? r.budgets).length === 0 && (
        <p class="small muted">No budget limits apply to {r.keyBudgets ? 'any key' : 'this key'}.</p>
      )}

      <h2>Spend per day</h2>
      {r.days.length === 0 || r.days.every((d) => d.usd === 0 && !d.images) ? <Empty><p>Nothing spent in this period.</p></Empty> : <DayChart days={r.days} />}

      <h2>Per model</h2>
      {r.models.length === 0 ? <Empty><p>No images yet.</p></Empty> : <Bars rows={r.models} caption="Spend per model" />}
      {r.backends.length > 0 && (
        <>
          <h2>Per backend</h2>
          <Bars rows={r.backends} caption="Spend per backend" />
        </>
      )}

      {r.cache.length > 0 && (
        <>
          <h2>Cache savings</h2>
          <dl class="params">
            {r.cache.map((c) => (
              <div key={c.label}>
                <dt>{c.label}</dt>
                <dd>{c.value}</dd>
              </div>
            ))}
          </dl>
        </>
      )}
      {r.breakEven.length > 0 && (
        <>
          <h2>Break-even</h2>
          <dl class="params">
            {r.breakEven.map((c) => (
              <div key={c.label}>
                <dt>{c.label}</dt>
                <dd>{c.value}</dd>
              </div>
            ))}
          </dl>
        </>
      )}
      {r.raw !== undefined && (
        <details>
          <summary>The full cost report</summary>
          <pre class="code">{JSON.stringify(r.raw, null, 2)}</pre>
        </details>
      )}
    </section>
  );
}

function DayChart(props: { days: Series[] }) {
  const days = props.days;
  const max = Math.max(...days.map((d) => d.usd), 1e-9);
  const w = 100 / days.length;
  return (
    <figure class="chart">
      <svg viewBox="0 0 100 40" preserveAspectRatio="none" role="img" aria-label={`Spend per day over ${days.length} days, at most ${money(max)} a day`}>
        {days.map((d, i) => {
          const h = (d.usd / max) * 38;
          return (
            <rect key={d.label} x={i * w + w * 0.15} y={40 - h} width={w * 0.7} height={h} class="bar">
              <title>{`${d.label}: ${money(d.usd)}${d.images !== undefined ? `, ${d.images} images` : ''}`}</title>
            </rect>
          );
        })}
      </svg>
      <figcaption class="chart-axis small muted">
        <span>{days[0]?.label}</span>
        <span>max {money(max)}/day</span>
        <span>{days.at(-1)?.label}</span>
      </figcaption>
      <details>
        <summary>As a table</summary>
        <Bars rows={days.filter((d) => d.usd > 0 || d.images)} caption="Spend per day" />
      </details>
    </figure>
  );
}

function Bars(props: { rows: Series[]; caption: string }) {
  const max = Math.max(...props.rows.map((r) => r.usd), 1e-9);
  return (
    <table class="bars">
      <caption class="sr-only">{props.caption}</caption>
      <thead>
        <tr>
          <th scope="col">Name</th>
          <th scope="col">Spend</th>
          <th scope="col">Images</th>
        </tr>
      </thead>
      <tbody>
        {props.rows.map((r) => (
          <tr key={r.label}>
            <th scope="row">{r.label}</th>
            <td>
              <div class="hbar" aria-hidden="true">
                <div style={{ width: `${Math.round((r.usd / max) * 100)}%` }} />
              </div>
              {money(r.usd)}
            </td>
            <td>{r.images ?? '—'}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
