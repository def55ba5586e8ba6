/** System: every backend and GPU host with health, busy time, loaded model and queue depth (live). */
import { useState } from 'preact/hooks';
import { api } from '../api.ts';
import type { BackendView, SystemView } from '../api.ts';
import { useSession } from '../app.tsx';
import { Empty, ErrorBox, Loading, bytes, duration, usePoll, ago } from '../ui.tsx';
import { ModelDownload, isLoading } from '../model-download.tsx';

export function System() {
  const { key } = useSession();
  const [sys, setSys] = useState<SystemView | null>(null);
  const [error, setError] = useState<unknown>(null);
  usePoll(async () => {
    try {
      setSys(await api<SystemView>('/v1/system'));
      setError(null);
    } catch (err) {
      setError(err);
    }
  }, 3000);

  return (
    <section class="system">
      <h1>System</h1>
      {error != null && <ErrorBox error={error} />}
      {!sys && error == null && <Loading label="Asking the backends…" />}
      {sys && (
        <>
          <div class="stats">
            {(['queued', 'running', 'succeeded', 'failed', 'canceled'] as const).map((s) => (
              <div class="stat" key={s}>
                <span class="stat-value">{sys.jobs[s] ?? 0}</span>
                <span class="stat-label">{s}</span>
              </div>
            ))}
          </div>
          <p class="small muted">
            Jobs of every key. Checked {ago(sys.checked_at)}; refreshes every 3 s.
          </p>
          {sys.model_download && sys.model_download.status !== 'ready' && <ModelDownload d={sys.model_download} />}
          {sys.backends.length === 0 ? (
            isLoading(sys.model_download) ? null : (
              <Empty>
                <p>No backend is configured: add one to easel.yaml (see the README), or pull a model for the built-in engine (npm run easel -- models pull sd-turbo).</p>
              </Empty>
            )
          ) : (
            <div class="backends">
              {sys.backends.map((b) => (
                <Backend key={b.name} b={b} admin={key.admin} isDefault={b.models.includes(sys.default_model ?? '')} />
              ))}
            </div>
          )}
        </>
      )}
    </section>
  );
}

function Backend(props: { b: BackendView; admin: boolean; isDefault: boolean }) {
  const { b } = props;
  const health = b.warming ? 'warming' : !b.ok ? 'down' : b.overloaded ? 'overloaded' : 'healthy';
  const caps = [b.capabilities.generate && 'generate', b.capabilities.edit && 'edit', b.capabilities.mask && 'mask', b.capabilities.variation && 'variations'].filter(Boolean);
  return (
    <article class={`card backend state-${health}`} aria-labelledby={`b-${b.name}`}>
      <header class="run-head">
        <h2 id={`b-${b.name}`}>
          {b.name} <span class="muted small">{b.type}</span>
        </h2>
        <span class={`badge h-${health}`}>{health}</span>
      </header>
      {b.message && <p class={b.ok ? 'small muted' : 'small err-text'}>{b.message}</p>}
      <dl class="params compact">
        <div>
          <dt>Models</dt>
          <dd>{b.models.length ? b.models.join(', ') : '—'}{props.isDefault ? ' (has the default)' : ''}</dd>
        </div>
        <div>
          <dt>Can</dt>
          <dd>{caps.join(', ') || '—'} · up to {b.capabilities.max_images_per_call} per call</dd>
        </div>
        <div>
          <dt>Queue</dt>
          <dd>
            {b.queue.queued} queued · {b.queue.running} running
            {b.queue.waiting_for_host !== null && ` · ${b.queue.waiting_for_host} waiting for a GPU host`}
          </dd>
        </div>
      </dl>
      {b.hosts.length > 0 && (
        <div class="table-wrap">
          <table class="hosts">
            <caption>GPU hosts</caption>
            <thead>
              <tr>
                <th scope="col">Host</th>
                <th scope="col">Health</th>
                <th scope="col">Loaded model</th>
                <th scope="col">Running</th>
                <th scope="col">Busy time</th>
                <th scope="col">Images</th>
                <th scope="col">Free VRAM</th>
              </tr>
            </thead>
            <tbody>
              {b.hosts.map((h) => (
                <tr key={h.name}>
                  <td data-label="Host">
                    <span>
                      {h.name}
                      {props.admin && h.url && <span class="small muted mono block">{h.url}</span>}
                    </span>
                  </td>
                  <td data-label="Health">
                    <span>
                      <span class={`badge h-${h.status === 'up' ? 'healthy' : h.status === 'down' ? 'down' : h.status === 'warming' ? 'warming' : 'unknown'}`}>{h.status}</span>
                      {h.last_error && <span class="small err-text block">{h.last_error}</span>}
                    </span>
                  </td>
                  <td data-label="Loaded model">{h.loaded_model ?? '—'}</td>
                  <td data-label="Running">{h.running ?? '—'}</td>
                  <td data-label="Busy time">{duration(h.busy_ms)}</td>
                  <td data-label="Images">{h.images ?? '—'}</td>
                  <td data-label="Free VRAM">{h.free_vram_bytes != null ? `${bytes(h.free_vram_bytes)}${h.total_vram_bytes ? ` of ${bytes(h.total_vram_bytes)}` : ''}` : '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </article>
  );
}
