/**
 * Jobs: a live table of the key's jobs (refreshed every second or two while any is active) with
 * status, progress, backend, wait and run time and cost; cancel a queued or running job; retry a
 * failed or canceled one (a new job with the same request).
 */
import { useState } from 'preact/hooks';
import { api } from '../api.ts';
import type { JobView, ListPage } from '../api.ts';
import { loraText } from './gallery.tsx';
import { Empty, ErrorBox, Loading, ProgressBar, StatusBadge, duration, money, shortId, ago, usePoll, useLocation } from '../ui.tsx';

const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;

/** Job timestamps are whole seconds: durations below one say so rather than "0 ms". */
const coarse = (ms: number): string => (ms < 1000 ? '< 1 s' : duration(ms));

export function Jobs() {
  const { query } = useLocation();
  const highlight = query.get('job');
  const [status, setStatus] = useState('');
  const [jobs, setJobs] = useState<JobView[] | null>(null);
  const [older, setOlder] = useState<JobView[]>([]);
  const [hasMore, setHasMore] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<{ text: string; error?: unknown } | null>(null);
  const [acting, setActing] = useState<string | null>(null);
  const [now, setNow] = useState(Date.now());

  const refresh = async () => {
    try {
      const q = new URLSearchParams({ limit: '50' });
      if (status) q.set('status', status);
      const page = await api<ListPage<JobView>>(`/v1/images/jobs?${q}`);
      setJobs(page.data);
      if (older.length === 0) setHasMore(page.has_more);
      setError(null);
    } catch (err) {
      setError(err);
    }
    setNow(Date.now());
  };
  const anyActive = (jobs ?? []).some((j) => j.status === 'queued' || j.status === 'running');
  usePoll(refresh, anyActive ? 1000 : 4000, [status, anyActive]);

  const loadOlder = async () => {
    const last = (older.at(-1) ?? jobs?.at(-1))?.id;
    if (!last) return;
    try {
      const q = new URLSearchParams({ limit: '50', after: last });
      if (status) q.set('status', status);
      const page = await api<ListPage<JobView>>(`/v1/images/jobs?${q}`);
      setOlder((o) => [...o, ...page.data]);
      setHasMore(page.has_more);
    } catch (err) {
      setNotice({ text: 'Could not load older jobs.', error: err });
    }
  };

  const act = async (job: JobView, action: 'cancel' | 'retry') => {
    setActing(job.id);
    setNotice(null);
    try {
      const res = await api<JobView>(`/v1/images/jobs/${job.id}/${action}`, { method: 'POST' });
      setNotice({ text: action === 'cancel' ? `Job ${shortId(job.id)}: ${res.status === 'canceled' ? 'canceled' : 'cancel requested'}.` : `Retried ${shortId(job.id)} as a new job ${res.id}.` });
      await refresh();
    } catch (err) {
      setNotice({ text: `Could not ${action} job ${shortId(job.id)}.`, error: err });
    } finally {
      setActing(null);
    }
  };

  const rows = [...(jobs ?? []), ...older.filter((o) => !(jobs ?? []).some((j) => j.id === o.id))];
  return (
    <section>
      <h1>Jobs</h1>
      <div class="toolbar">
        <label for="job-status">Status</label>
        <select id="job-status" value={status} onChange={(e) => { setStatus(e.currentTarget.value); setOlder([]); setJobs(null); }}>
          <option value="">All</option>
          {STATUSES.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
        <span class="small muted" aria-live="off">
          {anyActive ? 'Live: updating every second' : 'Updating every few seconds'}
        </span>
      </div>
      {notice && (
        <div role="status">
          {notice.error ? <ErrorBox error={notice.error} /> : <p class="notice ok">{notice.text}</p>}
        </div>
      )}
      {error != null && <ErrorBox error={error} onRetry={refresh} />}
      {jobs === null && error == null && <Loading label="Loading jobs…" />}
      {jobs !== null && rows.length === 0 && (
        <Empty>
          <p>{status ? `No ${status} jobs.` : 'No jobs yet: submit one in the Playground or through the API.'}</p>
        </Empty>
      )}
      {rows.length > 0 && (
        <div class="table-wrap">
          <table class="jobs">
            <caption class="sr-only">Jobs, newest first</caption>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Status</th>
                <th scope="col">Progress</th>
                <th scope="col">Model / backend</th>
                <th scope="col">Wait</th>
                <th scope="col">Run</th>
                <th scope="col">Cost</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {rows.map((j) => {
                const active = j.status === 'queued' || j.status === 'running';
                const created = j.created_at * 1000;
                const started = j.started_at ? j.started_at * 1000 : null;
                const finished = j.finished_at ? j.finished_at * 1000 : null;
                const wait = (started ?? finished ?? now) - created;
                const run = started ? (finished ?? now) - started : null;
                return (
                  <tr key={j.id} id={`job-${j.id}`} class={j.id === highlight ? 'highlight' : undefined} data-status={j.status}>
                    <td data-label="Job">
                      <div>
                        <span class="mono" title={j.id}>
                          {shortId(j.id)}
                        </span>
                        <div class="small muted" title={j.request.prompt}>
                          {j.kind !== 'generation' ? `${j.kind} · ` : ''}
                          {j.request.prompt.length > 60 ? `${j.request.prompt.slice(0, 60)}…` : j.request.prompt}
                        </div>
                        {j.request.loras?.length ? <div class="small muted">LoRAs: {loraText(j.request.loras)}</div> : null}
                        <div class="small muted">{ago(j.created_at, now)}</div>
                      </div>
                    </td>
                    <td data-label="Status">
                      <div>
                        <StatusBadge status={j.cancel_requested && active ? 'canceling' : j.status} />
                        {j.error && (
                          <div class="small err-text" title={j.error.message}>
                            {j.error.code}: {j.error.message.length > 120 ? `${j.error.message.slice(0, 120)}…` : j.error.message}
                          </div>
                        )}
                      </div>
                    </td>
                    <td data-label="Progress">{active ? <ProgressBar value={j.progress} label={`Progress of job ${j.id}`} /> : j.status === 'succeeded' ? '100%' : '—'}</td>
                    <td data-label="Model / backend">
                      <div>
                        {j.model}
                        <div class="small muted">{j.backend ?? 'not started'}</div>
                      </div>
                    </td>
                    <td data-label="Wait">{coarse(wait)}</td>
                    <td data-label="Run">{run === null ? '—' : coarse(run)}</td>
                    <td data-label="Cost">{money(j.cost_usd)}</td>
                    <td data-label="Actions">
                      {active && (
                        <button type="button" onClick={() => act(j, 'cancel')} disabled={acting === j.id || j.cancel_requested} aria-label={`Cancel job ${j.id}`}>
                          Cancel
                        </button>
                      )}
                      {(j.status === 'failed' || j.status === 'canceled') && (
                        <button type="button" onClick={() => act(j, 'retry')} disabled={acting === j.id} aria-label={`Retry job ${j.id}`}>
                          Retry
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {hasMore && (
        <p class="center">
          <button type="button" onClick={loadOlder}>
            Load older jobs
          </button>
        </p>
      )}
    </section>
  );
}
