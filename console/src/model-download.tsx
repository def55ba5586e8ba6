/**
 * The first start's download of the default model, as the System page and the Playground show it:
 * status, a progress bar, bytes, speed and time left, or why it failed and what to do.
 */
import { useRef, useState } from 'preact/hooks';
import { api } from './api.ts';
import type { ModelDownloadView, SystemView } from './api.ts';
import { ProgressBar, bytes, usePoll } from './ui.tsx';

const LOADING = new Set(['starting', 'waiting', 'downloading', 'converting']);

export const isLoading = (d: ModelDownloadView | null | undefined): boolean => !!d && LOADING.has(d.status);

function eta(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m} min ${seconds % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** "420 MB of 2.5 GB · 12 MB/s · about 3 min left", as far as it is known. */
export function downloadFacts(d: ModelDownloadView): string {
  const parts = [d.total_bytes != null ? `${bytes(d.received_bytes)} of ${bytes(d.total_bytes)}` : bytes(d.received_bytes)];
  if (d.bytes_per_second != null) parts.push(`${bytes(d.bytes_per_second)}/s`);
  if (d.eta_seconds != null) parts.push(`about ${eta(d.eta_seconds)} left`);
  return parts.join(' · ');
}

function headline(d: ModelDownloadView): string {
  const what = d.models.join(' + ');
  switch (d.status) {
    case 'waiting':
      return `Another easel process is downloading the default model (${what})`;
    case 'converting':
      return `Converting the default model (${what}) for the CPU`;
    case 'failed':
      return `The default model (${what}) could not be downloaded`;
    case 'ready':
      return `The default model (${what}) is installed`;
    default:
      return `Downloading the default model (${what})`;
  }
}

export function ModelDownload(props: { d: ModelDownloadView; compact?: boolean }) {
  const { d } = props;
  const failed = d.status === 'failed';
  return (
    <div class={`notice model-download ${failed ? 'error' : d.status === 'ready' ? 'ok' : 'warn'}`} role="status" aria-live="polite">
      <p>
        <strong>{headline(d)}</strong>
        {isLoading(d) && ' — generations start as soon as it is ready; nothing to restart.'}
      </p>
      {isLoading(d) && d.percent != null && <ProgressBar value={d.percent / 100} label="Model download" />}
      {isLoading(d) && <p class="small">{downloadFacts(d)}{d.owner ? ` · by ${d.owner}` : ''}{!props.compact ? ` · from ${d.endpoint}` : ''}</p>}
      {failed && d.error && <p class="small">{d.error}</p>}
    </div>
  );
}

/**
 * Polls `/v1/system` while the default model is on its way (every 3 s; once a minute otherwise, so a
 * download started by another process shows up) and reports when it has become ready.
 */
export function useModelDownload(onReady: () => void): ModelDownloadView | null {
  const [d, setD] = useState<ModelDownloadView | null>(null);
  const [every, setEvery] = useState(3000);
  const last = useRef<ModelDownloadView | null>(null);
  usePoll(async () => {
    const s = await api<SystemView>('/v1/system');
    const next = s.model_download ?? null;
    const was = last.current;
    last.current = next;
    setD(next);
    setEvery(isLoading(next) ? 3000 : 60_000);
    if (isLoading(was) && next?.status === 'ready') onReady();
  }, every);
  return d;
}
