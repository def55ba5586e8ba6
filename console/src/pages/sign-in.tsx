import { useState } from 'preact/hooks';
import { api, ApiError, session } from '../api.ts';
import type { KeyInfo } from '../api.ts';
import { ErrorBox } from '../ui.tsx';

export function SignIn(props: { notice: string | null; onSignedIn(key: KeyInfo): void }) {
  const [value, setValue] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const submit = async (e: Event) => {
    e.preventDefault();
    const key = value.trim();
    if (!key) return;
    setBusy(true);
    setError(null);
    try {
      const info = await api<KeyInfo>('/v1/keys/current', { key });
      session.set(key);
      setValue('');
      props.onSignedIn(info);
    } catch (err) {
      setError(err instanceof ApiError && err.status === 401 ? new ApiError(401, 'easel does not know this key, or it was revoked. Check it and try again.') : err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <main class="signin" id="main">
      <h1>
        <img src="/favicon.svg" alt="" width={32} height={32} /> easel console
      </h1>
      {props.notice && (
        <p class="notice" role="status">
          {props.notice}
        </p>
      )}
      <form onSubmit={submit} class="card">
        <label for="api-key">API key</label>
        <input
          id="api-key"
          name="api-key"
          type="password"
          autocomplete="off"
          spellcheck={false}
          placeholder="easel_sk_…"
          required
          value={value}
          onInput={(e) => setValue(e.currentTarget.value)}
          autoFocus
        />
        <button type="submit" class="primary" disabled={busy || !value.trim()}>
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        <p class="hint">
          The admin key is printed when easel first starts; <code>easel keys create</code> makes more. The key stays in this tab only (session
          storage) and is sent to this server's API, nothing else.
        </p>
      </form>
      {error != null && <ErrorBox error={error} />}
    </main>
  );
}
