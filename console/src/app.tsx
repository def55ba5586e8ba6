/** The shell: sign-in, navigation, offline banner, and the page for the current path. */
import { createContext } from 'preact';
import { useContext, useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, onApiEvent, session } from './api.ts';
import type { KeyInfo } from './api.ts';
import { Link, Loading, ErrorBox, navigate, useLocation } from './ui.tsx';
import { SignIn } from './pages/sign-in.tsx';
import { Playground } from './pages/playground.tsx';
import { Gallery } from './pages/gallery.tsx';
import { Jobs } from './pages/jobs.tsx';
import { Costs } from './pages/costs.tsx';
import { System } from './pages/system.tsx';
import { Keys } from './pages/keys.tsx';

export interface Session {
  key: KeyInfo;
  signOut(message?: string): void;
}

export const SessionContext = createContext<Session | null>(null);
export const useSession = (): Session => useContext(SessionContext)!;

const PAGES = [
  { path: '/', label: 'Playground', title: 'Playground' },
  { path: '/gallery', label: 'Gallery', title: 'Gallery' },
  { path: '/jobs', label: 'Jobs', title: 'Jobs' },
  { path: '/costs', label: 'Costs', title: 'Costs' },
  { path: '/system', label: 'System', title: 'System' },
  { path: '/keys', label: 'Keys', title: 'API keys', admin: true },
] as const;

function useOnline(): boolean {
  const [online, setOnline] = useState(navigator.onLine);
  const [reachable, setReachable] = useState(true);
  useEffect(() => {
    const on = () => setOnline(true);
    const off = () => setOnline(false);
    addEventListener('online', on);
    addEventListener('offline', off);
    const un = onApiEvent((e) => {
      if (e.kind === 'network') setReachable(e.ok);
    });
    return () => {
      removeEventListener('online', on);
      removeEventListener('offline', off);
      un();
    };
  }, []);
  return online && reachable;
}

export function App() {
  const [key, setKey] = useState<KeyInfo | null>(null);
  const [checking, setChecking] = useState(Boolean(session.key));
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const online = useOnline();
  const { path } = useLocation();

  const signOut = (message?: string) => {
    session.clear();
    setKey(null);
    setNotice(message ?? null);
  };

  const check = async () => {
    if (!session.key) return setChecking(false);
    setChecking(true);
    setError(null);
    try {
      setKey(await api<KeyInfo>('/v1/keys/current'));
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) signOut('That key is no longer valid (revoked or mistyped). Sign in again.');
      else setError(err);
    } finally {
      setChecking(false);
    }
  };

  useEffect(() => {
    void check();
    return onApiEvent((e) => {
      if (e.kind === 'unauthorized') signOut(`Signed out: ${e.message}`);
    });
  }, []);

  const page = PAGES.find((p) => p.path === path) ?? null;
  useEffect(() => {
    document.title = `${page?.title ?? 'Not found'} · easel`;
  }, [page, key]);

  const main = useRef<HTMLElement>(null);
  // Moves focus to the page on navigation, so keyboard and screen-reader users land on it.
  useEffect(() => {
    if (key) main.current?.focus({ preventScroll: true });
  }, [path]);

  if (checking) return <Loading label="Checking your key…" />;
  if (!key) {
    return (
      <>
        {!online && <OfflineBanner />}
        {error ? (
          <main class="signin">
            <ErrorBox error={error} onRetry={check} />
          </main>
        ) : (
          <SignIn notice={notice} onSignedIn={(k) => { setNotice(null); setKey(k); }} />
        )}
      </>
    );
  }

  return (
    <SessionContext.Provider value={{ key, signOut }}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <Link href="/" class="brand">
          <img src="/favicon.svg" alt="" width={24} height={24} /> easel
        </Link>
        <nav aria-label="Console">
          <ul>
            {PAGES.filter((p) => !('admin' in p) || key.admin).map((p) => (
              <li key={p.path}>
                <Link href={p.path} current={p.path === path}>
                  {p.label}
                </Link>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who">
          <span title={`${key.prefix}… (${key.id})`}>
            {key.name}
            {key.admin && <span class="tag">admin</span>}
          </span>
          <button type="button" class="link" onClick={() => signOut()}>
            Sign out
          </button>
        </div>
      </header>
      {!online && <OfflineBanner />}
      <main id="main" ref={main} tabIndex={-1}>
        {path === '/' && <Playground />}
        {path === '/gallery' && <Gallery />}
        {path === '/jobs' && <Jobs />}
        {path === '/costs' && <Costs />}
        {path === '/system' && <System />}
        {path === '/keys' && <Keys />}
        {!page && (
          <section>
            <h1>Page not found</h1>
            <p>
              There is no console page at <code>{path}</code>.{' '}
              <button type="button" class="link" onClick={() => navigate('/')}>
                Go to the playground
              </button>
            </p>
          </section>
        )}
      </main>
    </SessionContext.Provider>
  );
}

function OfflineBanner() {
  return (
    <div class="offline" role="status">
      Offline — the easel server cannot be reached. What is on screen may be out of date; the console reconnects on its own.
    </div>
  );
}
