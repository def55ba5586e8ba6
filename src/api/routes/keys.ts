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
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { DomainError } from '../../core/errors.ts';
import { KEY_ID, errorResponses, json, listOf } from '../schemas/common.ts';
import { emptyBody, idParam, noQuery } from '../schemas/compile.ts';
import { createApiKey } from '../../auth/api-keys.ts';
import type { ApiKey } from '../../store/job-store.ts';
import type { ApiDeps } from '../server.ts';

const unix = (d: Date | null): number | null => (d ? Math.floor(d.getTime() / 1000) : null);

export function keyView(k: ApiKey) {
  return { id: k.id, object: 'api_key' as const, name: k.name, prefix: k.prefix, admin: k.admin, created_at: unix(k.createdAt), revoked_at: unix(k.revokedAt) };
}

/** Before the request is validated: a key that may not manage keys learns nothing more than that. */
async function requireAdmin(req: FastifyRequest): Promise<void> {
  if (!req.apiKey.admin) throw new DomainError('forbidden', 'Only admin keys can manage API keys.', { code: 'admin_required' });
}

const keySchema = z
  .object({
    id: z.string(),
    object: z.literal('api_key'),
    name: z.string(),
    prefix: z.string().describe('The first characters of the secret, to recognise it'),
    admin: z.boolean(),
    created_at: z.int().nullable(),
    revoked_at: z.int().nullable(),
  })
  .meta({ id: 'ApiKey', description: 'An API key (never its secret)' });

const createKeyBody = z
  .object({
    name: z
      .string()
      .trim()
      .min(1, 'expected 1 to 64 characters')
      .max(64, 'expected 1 to 64 characters')
      .refine((n) => !KEY_ID.test(n), 'it must not look like a key id')
      .describe('A name for the key (unique, 1 to 64 characters)'),
    admin: z.boolean().optional().describe('Admin keys manage keys and see other keys\' usage (default false)'),
  })
  .strict();

const keyParams = z.object({ id: idParam('API key', KEY_ID, 'key_not_found', 'The key id (`key_…`)') });

export async function keyRoutes(app: FastifyInstance, deps: ApiDeps) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get('/keys/current', {
    schema: { summary: 'The calling key', operationId: 'getCurrentKey', tags: ['keys'], querystring: noQuery, response: { 200: json('The key', keySchema), ...errorResponses } },
  }, async (req) => keyView(req.apiKey));

  r.get('/keys', {
    preValidation: requireAdmin,
    schema: { summary: 'All keys, revoked ones included (admin keys only)', operationId: 'listKeys', tags: ['keys'], querystring: noQuery, response: { 200: json('Keys', listOf(keySchema, 'none')), ...errorResponses } },
  }, async (req) => {
    const keys = await deps.keys.listKeys();
    return { object: 'list' as const, data: keys.map(keyView) };
  });

  r.post('/keys', {
    preValidation: requireAdmin,
    config: { limitGroup: 'reads' },
    schema: {
      summary: 'Create a key; its secret is in this answer only (admin keys only)',
      operationId: 'createKey',
      tags: ['keys'],
      querystring: noQuery,
      body: createKeyBody,
      response: { 201: json('The new key and its secret', keySchema.extend({ key: z.string().describe('The secret: shown this once') })), ...errorResponses },
    },
  }, async (req, reply) => {
    const { name, admin } = req.body;
    const { key, secret } = await createApiKey(deps.keys, { name, admin: admin ?? false });
    req.log.info({ keyId: key.id, by: req.apiKey.id, admin: key.admin }, 'api key created');
    return reply.status(201).send({ ...keyView(key), key: secret });
  });

  r.post('/keys/:id/revoke', {
    preValidation: requireAdmin,
    config: { limitGroup: 'reads' },
    schema: {
      summary: 'Revoke a key at once (admin keys only; not the calling key)',
      operationId: 'revokeKey',
      tags: ['keys'],
      params: keyParams,
      querystring: noQuery,
      body: emptyBody,
      response: { 200: json('The revoked key', keySchema), ...errorResponses },
    },
  }, async (req) => {
    const id = req.params.id;
    const key = (await deps.keys.listKeys()).find((k) => k.id === id);
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
