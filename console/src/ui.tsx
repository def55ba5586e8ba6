/** Small shared pieces: routing, formatting, state boxes, polling. */
import type { ComponentChildren } from 'preact';
import { useEffect, useRef, useState } from 'preact/hooks';
import { describeError } from './api.ts';

// ---- Routing (History API; easel answers every console path with index.html) ----

const routeListeners = new Set<() => void>();
export function navigate(to: string): void {
  if (to === location.pathname + location.search) return;
  history.pushState(null, '', to);
  for (const fn of routeListeners) fn();
  window.scrollTo(0, 0);
}
addEventListener('popstate', () => {
  for (const fn of routeListeners) fn();
});

export function useLocation(): { path: string; query: URLSearchParams } {
  const [, setTick] = useState(0);
  useEffect(() => {
    const fn = () => setTick((t) => t + 1);
    routeListeners.add(fn);
    return () => void routeListeners.delete(fn);
  }, []);
  return { path: location.pathname, query: new URLSearchParams(location.search) };
}

export function Link(props: { href: string; children: ComponentChildren; class?: string; current?: boolean; title?: string }) {
  const { href, children, current } = props;
  return (
    <a
      class={props.class}
      title={props.title}
      href={href}
      aria-current={current ? 'page' : undefined}
      onClick={(e) => {
        if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
        e.preventDefault();
        navigate(href);
      }}
    >
      {children}
    </a>
  );
}

// ---- Formatting ----

export function money(usd: number | null | undefined): string {
  if (usd == null) return '—';
  if (usd === 0) return '$0';
  const digits = Math.abs(usd) >= 1 ? 2 : 4;
  return `$${usd.toFixed(digits)}`;
}

export function duration(ms: number | null | undefined): string {
  if (ms == null || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const h = Math.floor(m / 60);
  return `${h} h ${m % 60} min`;
}

export function dateTime(unix: number | null | undefined): string {
  if (unix == null) return '—';
  return new Date(unix * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

export function ago(unix: number | null | undefined, now = Date.now()): string {
  if (unix == null) return '—';
  const s = Math.round(now / 1000 - unix);
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return dateTime(unix);
}

export function bytes(n: number | null | undefined): string {
  if (n == null) return '—';
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(1)} GiB`;
}

// ---- States ----

export function ErrorBox(props: { error: unknown; onRetry?: () => void }) {
  const { title, detail } = describeError(props.error);
  return (
    <div class="notice error" role="alert">
      <strong>{title}</strong>
      <p>{detail}</p>
      {props.onRetry && (
        <button type="button" onClick={props.onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

export function Loading(props: { label?: string }) {
  return (
    <p class="loading" role="status" aria-live="polite">
      <span class="spinner" aria-hidden="true" /> {props.label ?? 'Loading…'}
    </p>
  );
}

export function Empty(props: { children: ComponentChildren }) {
  return <div class="empty">{props.children}</div>;
}

export function ProgressBar(props: { value: number; label: string }) {
  const pct = Math.round(Math.max(0, Math.min(1, props.value)) * 100);
  return (
    <div class="progress" role="progressbar" aria-label={props.label} aria-valuemin={0} aria-valuemax={100} aria-valuenow={pct}>
      <div class="bar" style={{ width: `${pct}%` }} />
      <span class="pct">{pct}%</span>
    </div>
  );
}

export function StatusBadge(props: { status: string; title?: string }) {
  return (
    <span class={`badge s-${props.status}`} title={props.title}>
      {props.status}
    </span>
  );
}

/** Calls `fn` now and every `ms` while the tab is visible; `fn` returns false to stop. */
export function usePoll(fn: () => Promise<unknown> | unknown, ms: number, deps: unknown[] = []): void {
  const saved = useRef(fn);
  saved.current = fn;
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      if (stopped) return;
      if (document.visibilityState === 'visible') {
        try {
          await saved.current();
        } catch {
          /* the caller shows its own errors */
        }
      }
      if (!stopped) timer = setTimeout(tick, ms);
    };
    const onVisible = () => {
      if (document.visibilityState === 'visible' && !stopped) {
        clearTimeout(timer);
        void tick();
      }
    };
    void tick();
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      stopped = true;
      clearTimeout(timer);
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [ms, ...deps]);
}

/** Copies text; where the clipboard is refused, selects it in the given element instead. */
export async function copyText(text: string, fallback?: HTMLElement | null): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    if (fallback) {
      const range = document.createRange();
      range.selectNodeContents(fallback);
      const sel = getSelection();
      sel?.removeAllRanges();
      sel?.addRange(range);
    }
    return false;
  }
}

export const shortId = (id: string): string => (id.length > 14 ? `${id.slice(0, 4)}…${id.slice(-6)}` : id);
