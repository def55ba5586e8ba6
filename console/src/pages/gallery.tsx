/**
 * Gallery: the key's images newest first as WebP thumbnails, with infinite scroll (and a "Load more"
 * button for keyboards), filters by prompt text, model and date, and a detail view with the full
 * parameters, the job, backend and cost, and the request as curl / openai SDK code.
 */
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api.ts';
import type { ImageItem, ListPage } from '../api.ts';
import { useModels } from '../data.ts';
import { Empty, ErrorBox, Link, Loading, bytes, copyText, dateTime, money, useLocation } from '../ui.tsx';

interface Filters {
  prompt: string;
  model: string;
  from: string;
  to: string;
}

const PAGE = 30;

function queryOf(f: Filters, after?: string): string {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (after) q.set('after', after);
  if (f.prompt.trim()) q.set('prompt', f.prompt.trim());
  if (f.model) q.set('model', f.model);
  // Dates are the viewer's local days: from the start of `from` to the end of `to`.
  if (f.from) q.set('created_after', String(Math.floor(new Date(`${f.from}T00:00:00`).getTime() / 1000)));
  if (f.to) q.set('created_before', String(Math.floor(new Date(`${f.to}T00:00:00`).getTime() / 1000) + 86400));
  return q.toString();
}

export function Gallery() {
  const { query } = useLocation();
  const { models } = useModels();
  const [filters, setFilters] = useState<Filters>({ prompt: query.get('prompt') ?? '', model: query.get('model') ?? '', from: '', to: '' });
  const [applied, setApplied] = useState<Filters>(filters);
  const [items, setItems] = useState<ImageItem[]>([]);
  const [more, setMore] = useState(true);
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [open, setOpen] = useState<ImageItem | null>(null);
  const sentinel = useRef<HTMLDivElement>(null);
  const generation = useRef(0);

  // Prompt text is applied as you type (debounced); the other filters at once.
  useEffect(() => {
    const t = setTimeout(() => setApplied(filters), filters.prompt === applied.prompt ? 0 : 300);
    return () => clearTimeout(t);
  }, [filters]);

  const load = async (reset: boolean) => {
    const gen = reset ? ++generation.current : generation.current;
    setLoading(true);
    setError(null);
    try {
      const after = reset ? undefined : items.at(-1)?.id;
      const page = await api<ListPage<ImageItem>>(`/v1/images?${queryOf(applied, after)}`);
      if (gen !== generation.current) return;
      setItems((prev) => (reset ? page.data : [...prev, ...page.data]));
      setMore(page.has_more);
    } catch (err) {
      if (gen === generation.current) setError(err);
    } finally {
      if (gen === generation.current) setLoading(false);
    }
  };

  useEffect(() => {
    setItems([]);
    setMore(true);
    void load(true);
  }, [applied]);

  // Infinite scroll: the sentinel below the grid loads the next page when it comes into view.
  useEffect(() => {
    const el = sentinel.current;
    if (!el || !more || loading || error) return;
    const io = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) void load(false);
    }, { rootMargin: '600px' });
    io.observe(el);
    return () => io.disconnect();
  }, [items, more, loading, error]);

  const filtered = Boolean(applied.prompt || applied.model || applied.from || applied.to);
  return (
    <section class="gallery">
      <h1>Gallery</h1>
      <form class="filters" role="search" onSubmit={(e) => { e.preventDefault(); setApplied(filters); }}>
        <div>
          <label for="f-prompt">Prompt contains</label>
          <input id="f-prompt" type="search" value={filters.prompt} placeholder="lighthouse" onInput={(e) => setFilters({ ...filters, prompt: e.currentTarget.value })} />
        </div>
        <div>
          <label for="f-model">Model</label>
          <select id="f-model" value={filters.model} onChange={(e) => setFilters({ ...filters, model: e.currentTarget.value })}>
            <option value="">All models</option>
            {models?.map((m) => (
              <option key={m.id} value={m.id}>
                {m.id}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label for="f-from">From</label>
          <input id="f-from" type="date" value={filters.from} onInput={(e) => setFilters({ ...filters, from: e.currentTarget.value })} />
        </div>
        <div>
          <label for="f-to">To</label>
          <input id="f-to" type="date" value={filters.to} onInput={(e) => setFilters({ ...filters, to: e.currentTarget.value })} />
        </div>
        {filtered && (
          <button type="button" onClick={() => setFilters({ prompt: '', model: '', from: '', to: '' })}>
            Clear filters
          </button>
        )}
      </form>

      {items.length > 0 && (
        <ul class="thumbs" aria-label="Images, newest first">
          {items.map((img) => (
            <li key={img.id}>
              <button type="button" class="thumb" onClick={() => setOpen(img)} aria-label={`Open image: ${img.prompt}`}>
                <img src={img.thumbnail_url} alt="" loading="lazy" width={img.width} height={img.height} />
              </button>
            </li>
          ))}
        </ul>
      )}
      {!loading && !error && items.length === 0 && (
        <Empty>
          {filtered ? (
            <p>No images match these filters.</p>
          ) : (
            <p>
              No images yet. Make some in the <Link href="/">Playground</Link>.
            </p>
          )}
        </Empty>
      )}
      {error != null && <ErrorBox error={error} onRetry={() => load(items.length === 0)} />}
      {loading && <Loading label="Loading images…" />}
      <div ref={sentinel} class="sentinel" />
      {more && !loading && !error && items.length > 0 && (
        <p class="center">
          <button type="button" onClick={() => load(false)}>
            Load more
          </button>
        </p>
      )}
      {!more && items.length > 0 && <p class="center muted small">That is every image{filtered ? ' matching the filters' : ''}.</p>}
      {open && <Detail image={open} onClose={() => setOpen(null)} />}
    </section>
  );
}

/** `style ×0.8, hero ×1`: the LoRAs a job applied, in stacking order. */
export function loraText(loras: ReadonlyArray<{ name: string; weight: number }>): string {
  return loras.map((l) => `${l.name} ×${l.weight}`).join(', ');
}

function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The image's request as API parameters (generation body, or the text fields of an upload). */
function requestBody(img: ImageItem): Record<string, unknown> {
  const r = img.request;
  const body: Record<string, unknown> = { model: img.model };
  if (img.kind !== 'variation') body.prompt = r.prompt;
  body.n = r.n;
  if (r.size && r.size !== 'auto') body.size = r.size;
  for (const k of ['quality', 'style', 'negative_prompt', 'seed', 'steps', 'guidance_scale'] as const) {
    if (r[k] !== undefined) body[k] = r[k];
  }
  if (r.loras?.length) body.loras = r.loras;
  if (r.output_format && r.output_format !== 'png') body.output_format = r.output_format;
  return body;
}

export function curlFor(img: ImageItem, origin: string): string {
  const body = requestBody(img);
  const auth = `  -H "Authorization: Bearer $EASEL_API_KEY"`;
  if (img.kind === 'generation') {
    return [`curl ${origin}/v1/images/generations \\`, `${auth} \\`, `  -H "Content-Type: application/json" \\`, `  -d ${shellQuote(JSON.stringify(body))}`].join('\n');
  }
  const path = img.kind === 'edit' ? 'edits' : 'variations';
  // Arrays go as JSON text (`loras=[…]`), which easel's multipart reader takes.
  const fields = Object.entries(body).map(([k, v]) => `  -F ${shellQuote(`${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)} \\`);
  return [`curl ${origin}/v1/images/${path} \\`, `${auth} \\`, `  -F image=@input.png \\`, ...fields].join('\n').replace(/ \\$/, '');
}

export function sdkFor(img: ImageItem, origin: string): string {
  const body = requestBody(img);
  const easel = ['negative_prompt', 'seed', 'steps', 'guidance_scale', 'loras'].filter((k) => k in body);
  const lines = JSON.stringify(body, null, 2).split('\n');
  const call = img.kind === 'generation' ? 'generate' : img.kind === 'edit' ? 'edit' : 'createVariation';
  const args = img.kind === 'generation' ? lines.join('\n') : lines.join('\n').replace(/^\{/, `{\n  image: fs.createReadStream('input.png'),`);
  return [
    `import OpenAI from 'openai';`,
    ...(img.kind === 'generation' ? [] : [`import fs from 'node:fs';`]),
    ``,
    `const client = new OpenAI({ baseURL: '${origin}/v1', apiKey: process.env.EASEL_API_KEY });`,
    ...(easel.length ? [`// ${easel.join(', ')}: easel's extensions to the OpenAI request, passed through by the SDK.`] : []),
    `const result = await client.images.${call}(${args});`,
    `console.log(result.data[0].url);`,
  ].join('\n');
}

function Detail(props: { image: ImageItem; onClose(): void }) {
  const img = props.image;
  const dialog = useRef<HTMLDialogElement>(null);
  const curlRef = useRef<HTMLPreElement>(null);
  const sdkRef = useRef<HTMLPreElement>(null);
  const [copied, setCopied] = useState<string | null>(null);
  useEffect(() => {
    dialog.current?.showModal();
  }, []);
  const origin = location.origin;
  const curl = curlFor(img, origin);
  const sdk = sdkFor(img, origin);
  const copy = async (what: string, text: string, el: HTMLElement | null) => {
    setCopied((await copyText(text, el)) ? `${what} copied to the clipboard.` : `The clipboard is not available here: the ${what} is selected, copy it with Ctrl+C.`);
  };
  const r = img.request;
  const rows: [string, ComponentChildren][] = [
    ['Prompt', img.kind === 'variation' ? <em>variation (no prompt)</em> : r.prompt],
    ...(img.revised_prompt ? [['Revised prompt', img.revised_prompt] as [string, string]] : []),
    ...(r.negative_prompt ? [['Negative prompt', r.negative_prompt] as [string, string]] : []),
    ['Model', img.model],
    ['Backend', img.backend ?? '—'],
    ['Kind', img.kind],
    ['Size', `${img.width}×${img.height}${r.size && r.size !== 'auto' ? ` (asked ${r.size})` : ''}`],
    ['Seed', r.seed ?? '—'],
    ['Steps', r.steps ?? '—'],
    ...(r.guidance_scale !== undefined ? [['Guidance', r.guidance_scale] as [string, number]] : []),
    ...(r.quality ? [['Quality', r.quality] as [string, string]] : []),
    ...(r.loras?.length ? [['LoRAs', loraText(r.loras)] as [string, string]] : []),
    ['Images in job', r.n],
    ['Created', dateTime(img.created_at)],
    ['Job', <Link href={`/jobs?job=${img.job_id}`} class="mono">{img.job_id}</Link>],
    ['Cost', img.cost_usd == null ? 'not reported' : `${money(img.cost_usd)} (job ${money(img.job_cost_usd)})`],
    ['File', `${img.media_type}, ${bytes(img.bytes)}`],
  ];
  return (
    <dialog ref={dialog} class="detail" aria-labelledby="detail-title" onClose={props.onClose} onClick={(e) => e.target === dialog.current && dialog.current?.close()}>
      <div class="detail-body">
        <div class="detail-head">
          <h2 id="detail-title">Image details</h2>
          <button type="button" class="close" onClick={() => dialog.current?.close()} aria-label="Close">
            ×
          </button>
        </div>
        <div class="detail-grid">
          <a href={img.url} target="_blank" rel="noreferrer" class="detail-img">
            <img src={img.url} alt={img.prompt} width={img.width} height={img.height} />
          </a>
          <div>
            <dl class="params">
              {rows.map(([k, v]) => (
                <div key={k}>
                  <dt>{k}</dt>
                  <dd>{v}</dd>
                </div>
              ))}
            </dl>
            <div class="actions wrap">
              <a class="button" href={img.url} download={`${img.job_id}-${img.index}`}>
                Download
              </a>
              <button type="button" onClick={() => copy('curl command', curl, curlRef.current)}>
                Copy as curl
              </button>
              <button type="button" onClick={() => copy('openai SDK code', sdk, sdkRef.current)}>
                Copy as openai SDK
              </button>
            </div>
            <p class="small" role="status" aria-live="polite">
              {copied}
            </p>
          </div>
        </div>
        <details>
          <summary>Request as curl</summary>
          <pre ref={curlRef} class="code">{curl}</pre>
        </details>
        <details>
          <summary>Request as openai SDK (JavaScript)</summary>
          <pre ref={sdkRef} class="code">{sdk}</pre>
        </details>
      </div>
    </dialog>
  );
}
