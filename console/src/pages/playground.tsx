/**
 * Playground: a generation form, then each run's live progress from its event stream, its images as
 * they arrive (partial images first where the backend streams them) and what it cost.
 */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError } from '../api.ts';
import type { JobView } from '../api.ts';
import { followJob } from '../sse.ts';
import { forgetModels, useCapabilities, useModels } from '../data.ts';
import { ModelDownload, isLoading, useModelDownload } from '../model-download.tsx';
import { ErrorBox, Link, ProgressBar, StatusBadge, money, shortId } from '../ui.tsx';

const SIZES = ['auto', '256x256', '512x512', '768x768', '1024x1024', '1536x1024', '1024x1536', '1792x1024', '1024x1792'];

interface FormState {
  prompt: string;
  negative: string;
  model: string;
  size: string;
  n: number;
  seed: string;
  steps: string;
}

interface Source {
  url: string;
  prompt: string;
  model: string;
  jobId: string;
  index: number;
}

interface Run {
  localId: number;
  kind: 'generation' | 'edit' | 'variation';
  form: FormState;
  source?: Source;
  job?: JobView;
  progress: number;
  partials: Record<number, string>;
  error?: unknown;
  reconnecting?: boolean;
  startedAt: number;
}

let nextLocal = 1;
const EMPTY: FormState = { prompt: '', negative: '', model: '', size: 'auto', n: 1, seed: '', steps: '' };

export function Playground() {
  // While the default model downloads on first start, a banner says how far it is; once it is in,
  // the model list is asked again and the form can be used (no reload).
  const [modelsVersion, setModelsVersion] = useState(0);
  const download = useModelDownload(() => {
    forgetModels();
    setModelsVersion((v) => v + 1);
  });
  const { models, error: modelsError } = useModels(modelsVersion);
  const caps = useCapabilities(modelsVersion);
  const [form, setForm] = useState<FormState>(EMPTY);
  const [refine, setRefine] = useState<Source | null>(null);
  const [runs, setRuns] = useState<Run[]>([]);
  const [formError, setFormError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const aborts = useRef(new Map<number, AbortController>());
  const promptRef = useRef<HTMLTextAreaElement>(null);

  useEffect(() => () => aborts.current.forEach((a) => a.abort()), []);
  useEffect(() => {
    if (models && models.length && !form.model) setForm((f) => ({ ...f, model: (models.find((m) => m.default) ?? models[0]!).id }));
  }, [models]);

  const update = (localId: number, fn: (r: Run) => Run) => setRuns((rs) => rs.map((r) => (r.localId === localId ? fn(r) : r)));
  const set = <K extends keyof FormState>(k: K, v: FormState[K]) => setForm((f) => ({ ...f, [k]: v }));

  /** Submits a job (async), then follows its events until it ends. */
  const start = async (kind: Run['kind'], f: FormState, source?: Source) => {
    const localId = nextLocal++;
    setRuns((rs) => [{ localId, kind, form: f, source, progress: 0, partials: {}, startedAt: Date.now() }, ...rs].slice(0, 12));
    setFormError(null);
    let job: JobView;
    try {
      job = await submit(kind, f, source);
    } catch (err) {
      // Refused at submission (validation, budget, rate limit): said at the form for what the form
      // sent; a variation asked for from a run's image says so on its own card.
      if (kind === 'variation') update(localId, (r) => ({ ...r, error: err }));
      else {
        setRuns((rs) => rs.filter((r) => r.localId !== localId));
        setFormError(err);
      }
      return;
    }
    update(localId, (r) => ({ ...r, job }));
    const ctl = new AbortController();
    aborts.current.set(localId, ctl);
    try {
      await followJob(
        job.id,
        {
          onEvent(event, data) {
            const d = data as Record<string, unknown>;
            if (event === 'status') update(localId, (r) => ({ ...r, reconnecting: false, job: { ...(r.job ?? {}), ...(d as unknown as JobView) }, progress: Math.max(r.progress, Number(d.progress ?? 0)) }));
            else if (event === 'progress') update(localId, (r) => ({ ...r, reconnecting: false, progress: Math.max(r.progress, Number(d.progress ?? 0)) }));
            else if (event === 'partial_image') {
              const url = `data:${String(d.media_type ?? 'image/png')};base64,${String(d.b64_json ?? '')}`;
              update(localId, (r) => ({ ...r, partials: { ...r.partials, [Number(d.index ?? 0)]: url } }));
            }
          },
          onReconnecting: () => update(localId, (r) => ({ ...r, reconnecting: true })),
        },
        ctl.signal,
      );
      // The terminal status event carries the job; fetch it once more in case the stream ended early.
      const final = await api<JobView>(`/v1/images/jobs/${job.id}`);
      update(localId, (r) => ({ ...r, job: final, reconnecting: false }));
    } catch (err) {
      if (!ctl.signal.aborted) update(localId, (r) => ({ ...r, error: err, reconnecting: false }));
    } finally {
      aborts.current.delete(localId);
    }
  };

  const onSubmit = async (e: Event) => {
    e.preventDefault();
    if (!form.prompt.trim()) {
      promptRef.current?.focus();
      return;
    }
    setBusy(true);
    try {
      await Promise.race([start(refine ? 'edit' : 'generation', { ...form }, refine ?? undefined), new Promise((r) => setTimeout(r, 400))]);
    } finally {
      setBusy(false);
    }
  };

  const cancel = async (run: Run) => {
    if (!run.job) return;
    try {
      const job = await api<JobView>(`/v1/images/jobs/${run.job.id}/cancel`, { method: 'POST' });
      update(run.localId, (r) => ({ ...r, job: { ...r.job!, ...job } }));
    } catch (err) {
      if (!(err instanceof ApiError && err.code === 'job_already_finished')) update(run.localId, (r) => ({ ...r, error: err }));
    }
  };

  const modelCaps = caps[form.model];
  return (
    <section class="playground">
      <h1>Playground</h1>
      {download && (isLoading(download) || (download.status === 'failed' && !models?.length)) && <ModelDownload d={download} compact />}
      <form class="card gen-form" onSubmit={onSubmit} aria-describedby={formError ? 'form-error' : undefined}>
        {refine && (
          <div class="refine-source">
            <img src={refine.url} alt="The image being refined" width={64} height={64} />
            <p>
              Refining image {refine.index + 1} of job <code>{shortId(refine.jobId)}</code> with the prompt and model below.
            </p>
            <button type="button" onClick={() => setRefine(null)}>
              Stop refining
            </button>
          </div>
        )}
        <label for="prompt">Prompt</label>
        <textarea
          id="prompt"
          ref={promptRef}
          rows={3}
          required
          placeholder="a lighthouse at dawn, watercolor"
          value={form.prompt}
          onInput={(e) => set('prompt', e.currentTarget.value)}
          onKeyDown={(e) => {
            if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
              e.preventDefault();
              e.currentTarget.form?.requestSubmit();
            }
          }}
        />
        <label for="negative">Negative prompt</label>
        <textarea id="negative" rows={2} placeholder="what to keep out (where the backend supports it)" value={form.negative} onInput={(e) => set('negative', e.currentTarget.value)} />
        <div class="grid-fields">
          <div>
            <label for="model">Model or tier</label>
            <select id="model" value={form.model} onChange={(e) => set('model', e.currentTarget.value)} disabled={!models?.length}>
              {!models && <option>Loading…</option>}
              {models?.length === 0 && <option value="">No models configured</option>}
              {models?.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.id}
                  {m.default ? ' (default)' : ''}
                  {caps[m.id] && !caps[m.id]!.ok ? ' — backend down' : ''}
                </option>
              ))}
            </select>
          </div>
          <div>
            <label for="size">Size</label>
            <select id="size" value={form.size} onChange={(e) => set('size', e.currentTarget.value)}>
              {SIZES.map((s) => (
                <option key={s} value={s}>
                  {s}
                </option>
              ))}
            </select>
          </div>
          <div>
            <label for="n">Count</label>
            <input id="n" type="number" min={1} max={10} value={form.n} onInput={(e) => set('n', Math.max(1, Math.min(10, Number(e.currentTarget.value) || 1)))} />
          </div>
          <div>
            <label for="seed">Seed</label>
            <input id="seed" type="number" min={0} step={1} inputMode="numeric" placeholder="random" value={form.seed} onInput={(e) => set('seed', e.currentTarget.value)} />
          </div>
          <div>
            <label for="steps">Steps</label>
            <input id="steps" type="number" min={1} max={200} inputMode="numeric" placeholder="default" value={form.steps} onInput={(e) => set('steps', e.currentTarget.value)} />
          </div>
        </div>
        {modelsError != null && <ErrorBox error={modelsError} />}
        {modelCaps && !modelCaps.ok && (
          <p class="notice warn" role="status">
            The backend for {form.model} ({modelCaps.backend}) reports it is down: jobs will wait or fail. See <Link href="/system">System</Link>.
          </p>
        )}
        <div class="actions">
          <button type="submit" class="primary" disabled={busy || !models?.length}>
            {busy ? 'Submitting…' : refine ? 'Refine' : 'Generate'}
          </button>
          <span class="hint">Ctrl+Enter in the prompt submits.</span>
        </div>
        {formError != null && (
          <div id="form-error">
            <ErrorBox error={formError} />
          </div>
        )}
      </form>

      {runs.length === 0 ? (
        <p class="empty">Nothing generated in this tab yet. Earlier images are in the <Link href="/gallery">Gallery</Link>.</p>
      ) : (
        <ol class="runs" aria-label="Runs in this tab, newest first">
          {runs.map((run) => (
            <RunCard
              key={run.localId}
              run={run}
              caps={caps[run.job?.model ?? run.form.model]}
              onCancel={() => cancel(run)}
              onSameSeed={() => {
                const seed = run.job?.request.seed;
                if (seed === undefined) return;
                void start('generation', { ...run.form, seed: String(seed) });
              }}
              onVariation={(url, index) => void start('variation', { ...run.form, n: 1 }, { url, index, prompt: run.form.prompt, model: run.job?.model ?? run.form.model, jobId: run.job?.id ?? '' })}
              onRefine={(url, index) => {
                setRefine({ url, index, prompt: run.form.prompt, model: run.job?.model ?? run.form.model, jobId: run.job?.id ?? '' });
                setForm({ ...run.form, n: 1 });
                window.scrollTo({ top: 0, behavior: 'smooth' });
                promptRef.current?.focus();
              }}
            />
          ))}
        </ol>
      )}
    </section>
  );
}

async function submit(kind: Run['kind'], f: FormState, source?: Source): Promise<JobView> {
  const body: Record<string, unknown> = { prompt: f.prompt.trim(), model: f.model || undefined, n: f.n, response_format: 'url' };
  if (f.size !== 'auto') body.size = f.size;
  if (f.negative.trim()) body.negative_prompt = f.negative.trim();
  if (f.seed.trim() !== '') body.seed = Number(f.seed);
  if (f.steps.trim() !== '') body.steps = Number(f.steps);
  const headers = { prefer: 'respond-async' };
  if (kind === 'generation') return api<JobView>('/v1/images/generations', { json: body, headers });
  if (kind === 'edit') {
    // Draft → refine where the server has it: the draft is the starting point where the model can
    // take an input image, else the prompt carries over; the jobs are linked either way.
    try {
      return await api<JobView>('/v1/images/refine', { json: { ...body, job_id: source!.jobId, index: source!.index }, headers });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404 && err.code === 'unknown_route')) throw err;
    }
  }

  // Edits and variations upload the source image, fetched from its (signed) URL.
  const blob = await fetch(source!.url).then((r) => {
    if (!r.ok) throw new ApiError(r.status, 'The source image could not be downloaded again; reload the page for a fresh link.');
    return r.blob();
  });
  const form = new FormData();
  form.append('image', blob, `source.${blob.type.split('/')[1] ?? 'png'}`);
  for (const [k, v] of Object.entries(body)) {
    if (v === undefined) continue;
    if (kind === 'variation' && (k === 'prompt' || k === 'negative_prompt' || k === 'steps')) continue;
    form.append(k, String(v));
  }
  return api<JobView>(kind === 'edit' ? '/v1/images/edits' : '/v1/images/variations', { form, headers });
}

function RunCard(props: {
  run: Run;
  caps?: { edit: boolean; variation: boolean; ok: boolean };
  onCancel(): void;
  onSameSeed(): void;
  onVariation(url: string, index: number): void;
  onRefine(url: string, index: number): void;
}) {
  const { run, caps } = props;
  const job = run.job;
  const status = job?.status ?? (run.error ? 'failed' : 'queued');
  const active = status === 'queued' || status === 'running';
  const images = job?.status === 'succeeded' ? (job.result?.data ?? []) : [];
  const partials = Object.entries(run.partials);
  const what = run.kind === 'generation' ? 'Generation' : run.kind === 'edit' ? 'Refine' : 'Variation';
  return (
    <li class="card run" aria-busy={active}>
      <div class="run-head">
        <div>
          <strong>{what}</strong> <StatusBadge status={status} />
          {job && (
            <>
              {' '}
              <Link href={`/jobs?job=${job.id}`} class="mono small">
                {shortId(job.id)}
              </Link>
            </>
          )}
        </div>
        {job && active && (
          <button type="button" onClick={props.onCancel} disabled={job.cancel_requested}>
            {job.cancel_requested ? 'Canceling…' : 'Cancel'}
          </button>
        )}
      </div>
      <p class="run-prompt">{run.kind === 'variation' ? 'Variation of an earlier image' : run.form.prompt}</p>
      {active && (
        <>
          <ProgressBar value={status === 'queued' ? 0 : run.progress} label={`Progress of ${what.toLowerCase()}`} />
          <p class="small muted" aria-live="polite">
            {run.reconnecting ? 'Connection lost — reconnecting to the event stream…' : status === 'queued' ? 'Waiting in the queue…' : `Running on ${job?.backend ?? 'a backend'}…`}
          </p>
        </>
      )}
      {run.error != null && <ErrorBox error={run.error} />}
      {job?.status === 'failed' && job.error && (
        <div class="notice error" role="alert">
          <strong>{job.error.code === 'insufficient_quota' ? 'Budget exceeded' : 'The job failed'}</strong>
          <p>{job.error.message}</p>
          <p class="small muted">code: {job.error.code}</p>
        </div>
      )}
      {job?.status === 'canceled' && <p class="notice">Canceled.</p>}
      {active && partials.length > 0 && (
        <div class="images">
          {partials.map(([i, src]) => (
            <figure key={i}>
              <img src={src} alt={`Partial image ${Number(i) + 1}, still rendering`} class="partial" />
            </figure>
          ))}
        </div>
      )}
      {images.length > 0 && (
        <div class="images">
          {images.map((img, i) => (
            <figure key={i}>
              <a href={img.url} target="_blank" rel="noreferrer">
                <img src={img.url} alt={`Image ${i + 1} for: ${run.form.prompt}`} loading="lazy" />
              </a>
              <figcaption class="img-actions">
                <a class="button" href={img.url} download={`${job!.id}-${i}.${job!.request.output_format ?? 'png'}`}>
                  Download
                </a>
                {job!.request.seed !== undefined && (
                  <button type="button" onClick={props.onSameSeed} title={`Same parameters, seed ${job!.request.seed}`}>
                    Same seed again
                  </button>
                )}
                {caps?.variation && (
                  <button type="button" onClick={() => props.onVariation(img.url!, i)}>
                    Variations
                  </button>
                )}
                <button type="button" onClick={() => props.onRefine(img.url!, i)} title="Refine this image with the prompt (and model) you choose">
                  Refine
                </button>
              </figcaption>
            </figure>
          ))}
        </div>
      )}
      {job?.status === 'succeeded' && (
        <p class="small cost">
          {images.length} image{images.length === 1 ? '' : 's'} on {job.backend ?? '—'} · cost{' '}
          {job.cost_usd == null ? <span class="muted">not reported by the backend</span> : <strong>{money(job.cost_usd)}</strong>}
          {job.cache?.hit && (
            <span>
              {' '}· answered from the cache ({job.cache.kind}){job.cost?.saved_usd != null ? `, saved ${money(job.cost.saved_usd)}` : ''}
            </span>
          )}
          {job.routing?.reason && !job.cache?.hit && <span class="muted"> · {job.routing.reason}</span>}
          {job.warnings.length > 0 && <span class="muted"> · {job.warnings.join('; ')}</span>}
        </p>
      )}
    </li>
  );
}
