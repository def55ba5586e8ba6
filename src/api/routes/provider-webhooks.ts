/**
 * POST /hooks/providers/:backend — where hosted providers (Replicate, fal) report that a job of
 * theirs finished. Outside the bearer-key scope: the provider cannot hold an easel key; instead the
 * backend verifies the provider's signature over the raw body bytes (re-serialised JSON would break
 * it) and, when it verifies, wakes the generate() call waiting on that provider job. Polling stays
 * the fallback, so a lost or refused webhook only costs latency.
 */
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { BackendRegistry } from '../../backends/registry.ts';
import { isWebhookReceiver } from '../../backends/http/webhooks.ts';
import type { JobEventBus } from '../../events/job-events.ts';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses, json } from '../schemas/common.ts';
import { documentedOnly } from '../schemas/compile.ts';

/** The headers a provider signs with (Standard Webhooks; fal's own). */
const RELAYED_HEADERS = /^(webhook-|x-fal-|content-type$)/;

const MAX_WEBHOOK_BYTES = 5 * 1024 * 1024;

export async function providerWebhookRoutes(app: FastifyInstance, deps: { backends: BackendRegistry; log: Logger; events?: JobEventBus }) {
  // This plugin's scope only: every body arrives as the raw bytes the provider signed.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: MAX_WEBHOOK_BYTES }, (_req, body, done) => done(null, body));

  app.withTypeProvider<ZodTypeProvider>().post('/hooks/providers/:backend', {
    schema: {
      summary: "A hosted provider's signed webhook (Replicate, fal); verified over the raw bytes before it is used",
      operationId: 'providerWebhook',
      tags: ['webhooks'],
      security: [],
      params: z.object({ backend: z.string().describe('The easel backend the provider job belongs to') }),
      // The one route that ignores query parameters rather than refusing them: the operator may give
      // the provider a URL of their own (backends[].webhookUrl) with parameters easel does not know,
      // and a refused webhook would only cost latency. The signature is what is checked.
      querystring: z.looseObject({}).describe('Ignored'),
      // The raw bytes the provider signed: read as a buffer, verified by the backend.
      body: documentedOnly(z.unknown().describe("The provider's payload, signed (Standard Webhooks, or fal's own headers)")),
      response: { 200: json('Accepted', z.object({ ok: z.literal(true) })), ...errorResponses },
    },
  }, async (req, reply) => {
    const name = req.params.backend;
    const backend = deps.backends.listBackends().find((b) => b.name === name);
    if (!backend || !isWebhookReceiver(backend)) {
      return reply.status(404).send({ error: { message: `no backend "${name}" takes provider webhooks`, type: 'not_found_error', param: null, code: 'unknown_backend' } });
    }
    const rawBody = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const outcome = await backend.handleWebhook({ headers: req.headers, rawBody });
    if (outcome.status >= 400) {
      deps.log.warn({ backend: name, status: outcome.status, reason: outcome.message }, 'provider webhook refused');
      return reply.status(outcome.status).send({ error: { message: outcome.message, type: 'invalid_request_error', param: null, code: 'webhook_refused' } });
    }
    deps.log.debug({ backend: name, providerId: outcome.providerId }, 'provider webhook accepted');
    // The call waiting on this provider job may be in a worker process elsewhere: relay it there.
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && RELAYED_HEADERS.test(k)) headers[k] = v;
    deps.events?.publish({ type: 'provider_webhook', jobId: `provider:${name}`, backend: name, headers, body: rawBody.toString('base64'), at: Date.now() });
    return reply.status(200).send({ ok: true });
  });
}
