/**
 * API keys over the API (what the console's Keys page uses; the CLI's `easel keys` does the same on
 * the database directly):
 *
 *   GET  /v1/keys/current      any key: who am I (id, name, prefix, admin)
 *   GET  /v1/keys              admin: every key, revoked ones included
 *   POST /v1/keys              admin: {name, admin?} → the key with its secret, shown this once
 *   POST /v1/keys/{id}/revoke  admin: revokes at once, in every API process (through the event bus)
 *
 * Non-admin keys get 403 on the admin routes. A key cannot revoke itself (sign in with another
 * admin key first), so the console cannot lock its user out by accident.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { DomainError, invalidParam } from '../../core/errors.ts';
import { createApiKey } from '../../auth/api-keys.ts';
import type { ApiKey } from '../../store/job-store.ts';
import type { ApiDeps } from '../server.ts';

const unix = (d: Date | null): number | null => (d ? Math.floor(d.getTime() / 1000) : null);
const KEY_ID = /^key_[0-9A-Z]{26}$/;

export function keyView(k: ApiKey) {
  return { id: k.id, object: 'api_key', name: k.name, prefix: k.prefix, admin: k.admin, created_at: unix(k.createdAt), revoked_at: unix(k.revokedAt) };
}

function requireAdmin(req: FastifyRequest): void {
  if (!req.apiKey.admin) throw new DomainError('forbidden', 'Only admin keys can manage API keys.', { code: 'admin_required' });
}

export async function keyRoutes(app: FastifyInstance, deps: ApiDeps) {
  app.get('/keys/current', async (req) => keyView(req.apiKey));

  app.get('/keys', async (req) => {
    requireAdmin(req);
    const keys = await deps.keys.listKeys();
    return { object: 'list', data: keys.map(keyView) };
  });

  app.post<{ Body: unknown }>('/keys', { config: { limitGroup: 'reads' } }, async (req, reply) => {
    requireAdmin(req);
    const body = req.body;
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new DomainError('invalid', 'Send a JSON object: {"name": "...", "admin": false}.', { code: 'invalid_request' });
    const { name, admin, ...rest } = body as Record<string, unknown>;
    const unknown = Object.keys(rest)[0];
    if (unknown) throw invalidParam(unknown, `Unrecognized request argument supplied: ${unknown}`, 'unknown_parameter');
    if (typeof name !== 'string' || !name.trim() || name.trim().length > 64) throw invalidParam('name', "Invalid value for 'name': expected 1 to 64 characters.");
    if (KEY_ID.test(name.trim())) throw invalidParam('name', "Invalid value for 'name': it must not look like a key id.");
    if (admin !== undefined && typeof admin !== 'boolean') throw invalidParam('admin', "Invalid value for 'admin': expected a boolean.");
    const { key, secret } = await createApiKey(deps.keys, { name: name.trim(), admin: admin ?? false });
    req.log.info({ keyId: key.id, by: req.apiKey.id, admin: key.admin }, 'api key created');
    return reply.status(201).send({ ...keyView(key), key: secret });
  });

  app.post<{ Params: { id: string } }>('/keys/:id/revoke', { config: { limitGroup: 'reads' } }, async (req) => {
    requireAdmin(req);
    const id = req.params.id;
    const key = KEY_ID.test(id) ? (await deps.keys.listKeys()).find((k) => k.id === id) : undefined;
    if (!key) throw new DomainError('not_found', `No API key with id '${id}'.`, { param: 'id', code: 'key_not_found' });
    if (key.id === req.apiKey.id) {
      throw new DomainError('conflict', 'A key cannot revoke itself: sign in with another admin key to revoke this one.', { code: 'cannot_revoke_own_key' });
    }
    if (key.revokedAt) throw new DomainError('conflict', `API key '${key.name}' is already revoked.`, { code: 'key_already_revoked' });
    await deps.keys.revokeKey(key.id);
    // Every API process (this one included) drops its cached authentication now.
    deps.auth.invalidate();
    deps.events.publish({ type: 'key_revoked', jobId: 'keys', keyId: key.id, at: Date.now() });
    req.log.info({ keyId: key.id, by: req.apiKey.id }, 'api key revoked');
    const after = (await deps.keys.listKeys()).find((k) => k.id === id) ?? key;
    return keyView(after);
  });
}
