/** Keys (admin keys only): create (the secret is shown once), list and revoke API keys. */
import { useEffect, useRef, useState } from 'preact/hooks';
import { api } from '../api.ts';
import type { KeyInfo } from '../api.ts';
import { useSession } from '../app.tsx';
import { ErrorBox, Loading, copyText, dateTime } from '../ui.tsx';

export function Keys() {
  const { key: me } = useSession();
  const [keys, setKeys] = useState<KeyInfo[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [name, setName] = useState('');
  const [admin, setAdmin] = useState(false);
  const [created, setCreated] = useState<(KeyInfo & { key: string }) | null>(null);
  const [createError, setCreateError] = useState<unknown>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [status, setStatus] = useState<{ text: string; error?: unknown } | null>(null);
  const secretRef = useRef<HTMLElement>(null);
  const [copied, setCopied] = useState<string | null>(null);

  const load = async () => {
    setError(null);
    try {
      setKeys((await api<{ data: KeyInfo[] }>('/v1/keys')).data);
    } catch (err) {
      setError(err);
    }
  };
  useEffect(() => {
    if (me.admin) void load();
  }, []);

  if (!me.admin) {
    return (
      <section>
        <h1>API keys</h1>
        <p class="notice">Only admin keys can manage API keys. Ask an admin, or use <code>easel keys</code> on the server.</p>
      </section>
    );
  }

  const create = async (e: Event) => {
    e.preventDefault();
    setCreateError(null);
    setCreated(null);
    setCopied(null);
    try {
      const k = await api<KeyInfo & { key: string }>('/v1/keys', { json: { name: name.trim(), admin } });
      setCreated(k);
      setName('');
      setAdmin(false);
      await load();
    } catch (err) {
      setCreateError(err);
    }
  };

  const revoke = async (k: KeyInfo) => {
    setConfirming(null);
    setStatus(null);
    try {
      await api<KeyInfo>(`/v1/keys/${k.id}/revoke`, { method: 'POST' });
      setStatus({ text: `Revoked “${k.name}”: it stops working at once.` });
      await load();
    } catch (err) {
      setStatus({ text: `Could not revoke “${k.name}”.`, error: err });
    }
  };

  return (
    <section class="keys">
      <h1>API keys</h1>
      <form class="card inline-form" onSubmit={create}>
        <h2>Create a key</h2>
        <div class="row">
          <div class="grow">
            <label for="key-name">Name</label>
            <input id="key-name" required maxLength={64} placeholder="ci-bot" value={name} onInput={(e) => setName(e.currentTarget.value)} />
          </div>
          <label class="check">
            <input type="checkbox" checked={admin} onChange={(e) => setAdmin(e.currentTarget.checked)} /> Admin
          </label>
          <button type="submit" class="primary" disabled={!name.trim()}>
            Create key
          </button>
        </div>
        {createError != null && <ErrorBox error={createError} />}
        {created && (
          <div class="notice ok secret" role="status">
            <p>
              Key “{created.name}” created. Copy it now: <strong>it is not shown again.</strong>
            </p>
            <code ref={secretRef} class="mono" data-testid="new-key-secret">
              {created.key}
            </code>
            <div class="actions">
              <button type="button" onClick={async () => setCopied((await copyText(created.key, secretRef.current)) ? 'Copied.' : 'Selected: press Ctrl+C to copy.')}>
                Copy key
              </button>
              <span class="small" aria-live="polite">
                {copied}
              </span>
            </div>
          </div>
        )}
      </form>

      {status && <div role="status">{status.error ? <ErrorBox error={status.error} /> : <p class="notice ok">{status.text}</p>}</div>}
      {error != null && <ErrorBox error={error} onRetry={load} />}
      {!keys && error == null && <Loading label="Loading keys…" />}
      {keys && (
        <div class="table-wrap">
          <table class="keys-table">
            <caption class="sr-only">API keys</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Key</th>
                <th scope="col">Role</th>
                <th scope="col">Created</th>
                <th scope="col">State</th>
                <th scope="col">
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {keys.map((k) => (
                <tr key={k.id} data-key-name={k.name} class={k.revoked_at ? 'revoked' : undefined}>
                  <td data-label="Name">
                    <span>
                      {k.name}
                      {k.id === me.id && <span class="tag">this key</span>}
                    </span>
                  </td>
                  <td data-label="Key" class="mono">
                    {k.prefix}…
                  </td>
                  <td data-label="Role">{k.admin ? 'admin' : 'user'}</td>
                  <td data-label="Created">{dateTime(k.created_at)}</td>
                  <td data-label="State">{k.revoked_at ? `revoked ${dateTime(k.revoked_at)}` : 'active'}</td>
                  <td data-label="Actions">
                    {!k.revoked_at && k.id !== me.id && (confirming === k.id ? (
                      <span class="confirm">
                        <button type="button" class="danger" onClick={() => revoke(k)} autoFocus>
                          Confirm revoke
                        </button>
                        <button type="button" onClick={() => setConfirming(null)}>
                          Keep
                        </button>
                      </span>
                    ) : (
                      <button type="button" onClick={() => setConfirming(k.id)} aria-label={`Revoke key ${k.name}`}>
                        Revoke
                      </button>
                    ))}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
