/**
 * The HTTP API: Fastify with OpenAI-shaped errors everywhere, bearer-key auth on /v1, and one plugin
 * per route group.
 */
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import { DomainError } from '../core/errors.ts';
import { bodyFor, toHttp } from './http-errors.ts';
import { asDomainError } from './fastify-errors.ts';
import swagger from '@fastify/swagger';
import { swaggerOptions } from './openapi.ts';
import { checkDeclaredStatuses, emptyBody, serializerCompiler, validatorCompiler } from './schemas/compile.ts';
import type { ApiKey, JobStore, KeyStore } from '../store/job-store.ts';
import type { JobQueue } from '../queue/job-queue.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import type { BackendRegistry } from '../backends/registry.ts';
import type { JobEventBus } from '../events/job-events.ts';
import type { EaselConfig } from '../config/schema.ts';
import type { KeyAuthenticator } from '../auth/api-keys.ts';
import { JobViews } from './job-view.ts';
import { imageRoutes } from './routes/images.ts';
import { editRoutes } from './routes/edits.ts';
import { eventRoutes } from './routes/events.ts';
import { jobRoutes } from './routes/jobs.ts';
import { modelRoutes } from './routes/models.ts';
import { fileRoutes } from './routes/files.ts';
import { providerWebhookRoutes } from './routes/provider-webhooks.ts';
import { healthRoutes } from './routes/health.ts';
import { docsRoutes } from './routes/docs.ts';
import { consoleRoutes } from './routes/console.ts';
import { imageListRoutes } from './routes/images-list.ts';
import { keyRoutes } from './routes/keys.ts';
import { systemRoutes } from './routes/system.ts';
import { retryRoutes } from './routes/retry.ts';
import { registerCors } from './cors.ts';
import type { Readiness } from './routes/health.ts';
import { ulid } from '../core/ids.ts';
import type { PromptModerator } from '../moderation/prompt-moderator.ts';
import type { Submissions } from '../submissions/submissions.ts';
import type { JobSettler } from '../jobs/settle.ts';
import type { JobCosts } from '../jobs/job-costs.ts';
import type { BudgetGate } from '../budgets/gate.ts';
import type { CostMetrics } from '../observability/metrics.ts';
import type { Router } from '../routing/router.ts';
import { jobExtras } from './job-extras.ts';
import type { BatchStore } from '../batches/batch-store.ts';
import type { MetadataDb } from '../store/database.ts';
import { registerRateLimits, requireRateLimitGroups, tooManyFailedAttempts } from './rate-limits.ts';
import type { FailedAuthGuard } from './rate-limits.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { usageRoutes } from './routes/usage.ts';
import { batchRoutes } from './routes/batches.ts';
import { refineRoutes } from './routes/refine.ts';
import type { AutoPull } from '../models/auto-pull.ts';

export interface ApiDeps {
  config: EaselConfig;
  store: JobStore;
  keys: KeyStore;
  auth: KeyAuthenticator;
  queue: JobQueue;
  storage: ImageStorage;
  backends: BackendRegistry;
  events: JobEventBus;
  log: Logger;
  /** Base for absolute URLs; known only once the server listens when the port is 0. */
  publicUrl: () => string;
  readiness: () => Promise<Readiness>;
  /** Refuses prompts by the configured blocklist, patterns or moderation endpoint. */
  moderator: PromptModerator;
  /** Refuses webhook URLs easel must not call (private addresses); throws a DomainError naming `webhook_url`. */
  checkWebhookUrl?: (url: string) => Promise<void>;
  /** Webhook deliveries and their attempts for a job, shown on the job object. */
  webhookInfo?: (jobId: string) => Promise<unknown>;
  /** Verifies a signed local file URL (absent for S3, whose URLs point at the store). */
  verifyFileSignature?: (key: string, expires: string, signature: string) => boolean;
  /** The one admission pipeline every submission goes through (src/submissions). */
  submissions: Submissions;
  /** Where jobs end (cancels through the API). */
  settler: JobSettler;
  jobCosts: JobCosts;
  budgets: BudgetGate;
  router: Router;
  metrics: CostMetrics;
  /** Batches (src/batches) and the database usage reports read. */
  batches?: BatchStore;
  mdb?: MetadataDb;
  /** The default model's first-start download, while there is one (src/models/auto-pull.ts). */
  autoPull?: Pick<AutoPull, 'state' | 'loading'>;
}

declare module 'fastify' {
  interface FastifyRequest {
    apiKey: ApiKey;
  }
}

/** How much of an oversized body is read (and dropped) so its 413 reaches the client. */
const DRAIN_BOUND_FACTOR = 16;

export function buildServer(deps: ApiDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    // Per-request access logs would dominate at thousands of requests a second; jobs log their own lines.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.config.server.bodyLimitBytes,
    trustProxy: deps.config.server.trustProxy,
    genReqId: (req) => (typeof req.headers['x-request-id'] === 'string' && req.headers['x-request-id'].length <= 128 ? req.headers['x-request-id'] : `req_${ulid()}`),
    // Ids longer than Fastify's default (100) still reach their route, whose schema answers 404.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 1000 },
    // A URL Fastify cannot route (bad percent-encoding, a path segment over the limit) is answered in
    // OpenAI's shape too; it is refused before any key is checked, as nothing was asked of the API.
    frameworkErrors: (err, req, reply) => {
      const http = toHttp(asDomainError(err, req, deps.config.server.bodyLimitBytes));
      return (reply as FastifyReply).status(http.status).headers(http.headers).header('x-request-id', req.id).send(http.body);
    },
  });
  // Every route declares zod schemas: they validate requests (OpenAI-shaped 400s) and make the
  // OpenAPI document; answers are sent without re-checking them unless a test asks (schemas/compile.ts).
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler(deps.config.server.validateResponses));
  if (deps.config.server.validateResponses) checkDeclaredStatuses(app);
  app.register(swagger, swaggerOptions());
  const views = new JobViews(deps.storage, deps.config.storage.urlTtlSeconds, jobExtras(deps.jobCosts, deps.budgets.ledger));

  app.decorateRequest('apiKey', null as unknown as ApiKey);
  // JSON only (multipart joins for uploads); anything else is a clear 415.
  app.removeContentTypeParser('text/plain');
  // An action without a body (`/cancel`, `/retry`, `/revoke`) sent as `application/json` with nothing
  // in it reads as `{}`, as OpenAI's own action endpoints take it; elsewhere an empty body is bad JSON.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '' && req.routeOptions.schema?.body === emptyBody) return done(null, {});
    return parseJson(req, body as string, done);
  });
  app.addHook('onSend', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });
  // A body declared larger than the limit (multipart included) is refused before it is read. The
  // rest of it is read and dropped, up to a bound, so the client (still sending) gets the 413
  // instead of a reset connection; past the bound the connection is closed.
  const limit = deps.config.server.bodyLimitBytes;
  app.addHook('onRequest', async (req, reply) => {
    const declared = Number(req.headers['content-length']);
    if (!(declared > limit)) return;
    reply.header('connection', 'close');
    let drained = 0;
    req.raw.on('data', (chunk: Buffer) => {
      drained += chunk.length;
      if (drained > DRAIN_BOUND_FACTOR * limit) req.raw.destroy();
    });
    req.raw.resume();
    throw new DomainError('too_large', `Request body is larger than this server accepts (${limit} bytes).`, { code: 'request_too_large' });
  });

  const location = (jobId: string) => `${deps.publicUrl()}/v1/images/jobs/${jobId}`;
  app.setErrorHandler((err: FastifyError | DomainError, req, reply) => {
    const http = toHttp(asDomainError(err, req, deps.config.server.bodyLimitBytes), location);
    if (http.status >= 500 && !(err instanceof DomainError)) req.log.error({ err }, 'unhandled error');
    return reply.status(http.status).headers(http.headers).send(http.body);
  });

  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send(bodyFor('not_found', `Unknown route: ${req.method} ${req.url.split('?')[0]}`, 'unknown_route'));
  });

  registerCors(app, deps.config.cors.origins);
  app.register(healthRoutes, { readiness: deps.readiness, log: deps.log });
  app.register(docsRoutes, deps);
  app.register(fileRoutes, deps);
  if (deps.config.metrics.enabled) app.register(metricsRoutes, { metrics: deps.metrics, bearerToken: deps.config.metrics.bearerToken });
  // Provider webhooks (Replicate, fal) carry the provider's signature, not an easel key.
  app.register(providerWebhookRoutes, { backends: deps.backends, log: deps.log, events: deps.events });
  app.register(async (v1) => {
    let guard: FailedAuthGuard | undefined;
    v1.addHook('onRequest', async (req) => {
      const wait = guard?.blocked(req);
      if (wait) throw tooManyFailedAttempts(wait);
      const header = req.headers.authorization;
      const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
      const key = m ? await deps.auth.authenticate(m[1]!) : undefined;
      if (key) {
        req.apiKey = key;
        return;
      }
      if (await guard?.failed(req)) throw tooManyFailedAttempts(guard!.blocked(req) ?? deps.config.rateLimits.failedAuth.windowSeconds);
      if (!m) throw new DomainError('unauthenticated', "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.", { code: 'missing_api_key' });
      throw new DomainError('unauthenticated', 'Incorrect API key provided, or the key was revoked.', { code: 'invalid_api_key' });
    });
    // Per key and per address, per endpoint; after auth (the key is known), before the body is read.
    requireRateLimitGroups(v1);
    guard = await registerRateLimits(v1, { config: deps.config.rateLimits, redisUrl: deps.config.redis.url, redisPrefix: deps.config.redis.prefix, metrics: deps.metrics, log: deps.log });
    v1.register(modelRoutes, deps);
    v1.register(imageRoutes, { ...deps, views });
    v1.register(editRoutes, { ...deps, views });
    v1.register(eventRoutes, deps);
    v1.register(jobRoutes, { ...deps, views });
    // Cost control: usage reports, batches, draft → refine.
    if (deps.mdb) v1.register(usageRoutes, { ...deps, mdb: deps.mdb });
    if (deps.batches) v1.register(batchRoutes, { ...deps, views, batches: deps.batches });
    v1.register(refineRoutes, { ...deps, views });
    // The web console's needs, public API like the rest: image listing, retry, keys, system status.
    v1.register(imageListRoutes, deps);
    v1.register(retryRoutes, { ...deps, views });
    v1.register(keyRoutes, deps);
    v1.register(systemRoutes, deps);
  }, { prefix: '/v1' });
  // The web console at / (static files and page fallback; it calls /v1 with the user's key).
  app.register(consoleRoutes);

  return app;
}
