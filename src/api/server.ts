/**
 * The HTTP API: Fastify with OpenAI-shaped errors everywhere, bearer-key auth on /v1, and one plugin
 * per route group.
 */
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyError, FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { ApiError } from '../core/errors.ts';
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
import { healthRoutes } from './routes/health.ts';
import { docsRoutes } from './routes/docs.ts';
import { registerCors } from './cors.ts';
import type { Readiness } from './routes/health.ts';
import { ulid } from '../core/ids.ts';
import type { PromptModerator } from '../moderation/prompt-moderator.ts';

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
  moderator?: PromptModerator;
  /** Refuses webhook URLs easel must not call (private addresses); throws an ApiError naming `webhook_url`. */
  checkWebhookUrl?: (url: string) => Promise<void>;
  /** Webhook deliveries and their attempts for a job, shown on the job object. */
  webhookInfo?: (jobId: string) => Promise<unknown>;
  /** Verifies a signed local file URL (absent for S3, whose URLs point at the store). */
  verifyFileSignature?: (key: string, expires: string, signature: string) => boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    apiKey: ApiKey;
  }
}

export function buildServer(deps: ApiDeps): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    // Per-request access logs would dominate at thousands of requests a second; jobs log their own lines.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: deps.config.server.bodyLimitBytes,
    trustProxy: deps.config.server.trustProxy,
    genReqId: (req) => (typeof req.headers['x-request-id'] === 'string' && req.headers['x-request-id'].length <= 128 ? req.headers['x-request-id'] : `req_${ulid()}`),
    routerOptions: { ignoreTrailingSlash: true },
  });
  const views = new JobViews(deps.storage, deps.config.storage.urlTtlSeconds);

  app.decorateRequest('apiKey', null as unknown as ApiKey);
  // JSON only (multipart joins for uploads); anything else is a clear 415.
  app.removeContentTypeParser('text/plain');
  app.addHook('onSend', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });

  app.setErrorHandler((err: FastifyError | ApiError, req, reply) => {
    if (err instanceof ApiError) {
      for (const [k, v] of Object.entries(err.headers)) reply.header(k, v);
      return reply.status(err.status).send(err.toBody());
    }
    const status = err.statusCode ?? 500;
    if (status === 413 || err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.status(413).send(new ApiError(413, `Request body is larger than this server accepts (${deps.config.server.bodyLimitBytes} bytes).`, { code: 'request_too_large' }).toBody());
    }
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.status(415).send(new ApiError(415, `Unsupported Content-Type "${req.headers['content-type'] ?? ''}"; send application/json.`, { code: 'unsupported_media_type' }).toBody());
    }
    if (status >= 400 && status < 500) {
      const invalidJson = err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY';
      const message = invalidJson ? `We could not parse the JSON body of your request: ${err.message}` : err.message;
      return reply.status(status).send(new ApiError(status, message, { code: invalidJson ? 'invalid_json' : 'invalid_request' }).toBody());
    }
    req.log.error({ err }, 'unhandled error');
    return reply.status(500).send(new ApiError(500, 'The server had an error while processing your request.', { code: 'internal_error' }).toBody());
  });

  app.setNotFoundHandler((req, reply) => {
    reply.status(404).send(new ApiError(404, `Unknown route: ${req.method} ${req.url.split('?')[0]}`, { code: 'unknown_route' }).toBody());
  });

  registerCors(app, deps.config.cors.origins);
  app.register(healthRoutes, { readiness: deps.readiness });
  app.register(docsRoutes, deps);
  app.register(fileRoutes, deps);
  app.register(async (v1) => {
    v1.addHook('onRequest', async (req) => {
      const header = req.headers.authorization;
      const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
      if (!m) {
        throw new ApiError(401, "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.", { code: 'missing_api_key' });
      }
      const key = await deps.auth.authenticate(m[1]!);
      if (!key) throw new ApiError(401, 'Incorrect API key provided, or the key was revoked.', { code: 'invalid_api_key' });
      req.apiKey = key;
    });
    v1.register(modelRoutes, deps);
    v1.register(imageRoutes, { ...deps, views });
    v1.register(editRoutes, { ...deps, views });
    v1.register(eventRoutes, deps);
    v1.register(jobRoutes, { ...deps, views });
  }, { prefix: '/v1' });

  return app;
}
