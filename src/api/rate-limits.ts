/**
 * Rate limits per API key and per client address, per endpoint group (`generations`, `batches`,
 * `reads`), counted by @fastify/rate-limit in memory, or in Redis (shared by every API instance)
 * when `redis.url` is set. Runs after authentication, so the key is known.
 *
 * Every limited answer carries the IETF `RateLimit-Policy` (each policy: quota and window) and
 * `RateLimit` (the policy closest to its limit: remaining and seconds to reset) headers, plus
 * OpenAI's `x-ratelimit-*-requests` headers. A request over a limit is refused with 429
 * `rate_limit_exceeded` and `Retry-After`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import rateLimit, { normalizeIP } from '@fastify/rate-limit';
import type { Redis } from 'ioredis';
import { loadOptional } from '../core/optional-module.ts';
import type { Logger } from 'pino';
import { DomainError } from '../core/errors.ts';
import { RATE_LIMIT_ENDPOINTS } from './rate-limit-config.ts';
import type { RateLimitEndpoint, RateLimitsConfig } from './rate-limit-config.ts';
import type { CostMetrics } from '../observability/metrics.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /**
     * The rate-limit group of a /v1 route (not `rateLimit`: @fastify/rate-limit reads that): `generations` (anything that submits work), `batches`,
     * or `reads`. Every POST route must declare one (registration fails otherwise), so no route
     * that submits work can be limited as a read by omission.
     */
    limitGroup?: RateLimitEndpoint;
  }
}

export function endpointOf(req: FastifyRequest): RateLimitEndpoint {
  return req.routeOptions?.config?.limitGroup ?? 'reads';
}

/** Refuses, at registration, a POST route under /v1 that does not say which limit it counts against. */
export function requireRateLimitGroups(v1: FastifyInstance): void {
  v1.addHook('onRoute', (route) => {
    const methods = [route.method].flat();
    const group = (route.config as { limitGroup?: string } | undefined)?.limitGroup;
    if (methods.includes('POST') && !group) throw new Error(`route POST ${route.url} must declare config.limitGroup (generations, batches or reads)`);
    if (group && !(RATE_LIMIT_ENDPOINTS as readonly string[]).includes(group)) throw new Error(`route ${route.url}: unknown rate-limit group "${group}"`);
  });
}

interface Outcome {
  name: 'per-key' | 'per-address';
  max: number;
  windowSeconds: number;
  remaining: number;
  ttlSeconds: number;
  exceeded: boolean;
}

type Limiter = (req: FastifyRequest) => Promise<{ isAllowed: boolean; max?: number; remaining?: number; ttlInSeconds?: number; isExceeded?: boolean }>;

/**
 * Registers the limits inside the /v1 scope (after its auth hook). Returns nothing to close: the
 * Redis connection (when used) closes with the server.
 */
export async function registerRateLimits(
  v1: FastifyInstance,
  opts: { config: RateLimitsConfig; redisUrl?: string; redisPrefix: string; metrics?: CostMetrics; log: Logger },
): Promise<FailedAuthGuard | undefined> {
  const cfg = opts.config;
  if (!cfg.enabled) return undefined;
  let redis: Redis | undefined;
  if (opts.redisUrl) {
    // Fail fast: a Redis outage lets requests through (skipOnError) rather than stalling the API.
    // ioredis is loaded only by deployments with Redis.
    const { Redis: RedisClient } = loadOptional<typeof import('ioredis')>('ioredis', import.meta.url);
    redis = new RedisClient(opts.redisUrl, { connectTimeout: 1000, maxRetriesPerRequest: 1, enableAutoPipelining: true });
    redis.on('error', (err) => opts.log.warn({ err: err.message }, 'rate-limit Redis error; requests are not limited meanwhile'));
    v1.addHook('onClose', async () => {
      await redis!.quit().catch(() => redis!.disconnect());
    });
  }
  await v1.register(rateLimit, {
    global: false,
    skipOnError: true,
    ...(redis ? { redis, nameSpace: `${opts.redisPrefix}:ratelimit:` } : {}),
  });
  const create = (v1 as unknown as { createRateLimit(o: object): Limiter }).createRateLimit.bind(v1);

  const own = (k: string) => (Object.hasOwn(cfg.keys, k) ? cfg.keys[k] : undefined);
  const keyOverride = (req: FastifyRequest, endpoint: RateLimitEndpoint): number | undefined => (own(req.apiKey.id) ?? own(req.apiKey.name))?.[endpoint];

  const limiters = {} as Record<RateLimitEndpoint, { key: Limiter; address: Limiter }>;
  for (const endpoint of ['generations', 'batches', 'reads'] as const) {
    const lim = cfg[endpoint];
    const timeWindow = lim.windowSeconds * 1000;
    limiters[endpoint] = {
      key: create({ timeWindow, max: (req: FastifyRequest) => keyOverride(req, endpoint) ?? lim.perKey, keyGenerator: (req: FastifyRequest) => `${endpoint}:key:${req.apiKey.id}` }),
      address: create({ timeWindow, max: lim.perAddress, keyGenerator: (req: FastifyRequest) => `${endpoint}:addr:${normalizeIP(req.ip)}` }),
    };
  }

  v1.addHook('onRequest', async (req: FastifyRequest, reply: FastifyReply) => {
    if (!req.apiKey || (cfg.exemptAdmin && req.apiKey.admin)) return;
    const endpoint = endpointOf(req);
    const lim = cfg[endpoint];
    const perKey = keyOverride(req, endpoint) ?? lim.perKey;
    const outcomes: Outcome[] = [];
    const check = async (name: Outcome['name'], limiter: Limiter, max: number) => {
      if (max <= 0) return; // 0 = no limit of this kind
      const r = await limiter(req);
      if (r.isAllowed || r.max === undefined) return;
      outcomes.push({ name, max, windowSeconds: lim.windowSeconds, remaining: r.remaining ?? 0, ttlSeconds: r.ttlInSeconds ?? lim.windowSeconds, exceeded: !!r.isExceeded });
    };
    await check('per-key', limiters[endpoint].key, perKey);
    // A request its key's limit refuses does not also use up its address's quota.
    if (!outcomes.some((o) => o.exceeded)) await check('per-address', limiters[endpoint].address, lim.perAddress);
    if (outcomes.length === 0) return;

    reply.header('ratelimit-policy', outcomes.map((o) => `"${o.name}";q=${o.max};w=${o.windowSeconds}`).join(', '));
    const exceeded = outcomes.filter((o) => o.exceeded).sort((a, b) => b.ttlSeconds - a.ttlSeconds);
    const tightest = exceeded[0] ?? [...outcomes].sort((a, b) => a.remaining - b.remaining || b.ttlSeconds - a.ttlSeconds)[0]!;
    reply.header('ratelimit', `"${tightest.name}";r=${exceeded.length ? 0 : tightest.remaining};t=${tightest.ttlSeconds}`);
    reply.header('x-ratelimit-limit-requests', String(tightest.max));
    reply.header('x-ratelimit-remaining-requests', String(exceeded.length ? 0 : tightest.remaining));
    reply.header('x-ratelimit-reset-requests', `${tightest.ttlSeconds}s`);
    if (exceeded.length) {
      opts.metrics?.rateLimited.inc({ endpoint, scope: tightest.name });
      const who = tightest.name === 'per-key' ? 'this API key' : 'your address';
      throw new DomainError('rate_limited', `Rate limit reached for ${endpoint}: ${tightest.max} requests per ${tightest.windowSeconds}s for ${who}. Retry in ${tightest.ttlSeconds}s.`, {
        code: 'rate_limit_exceeded',
        retryAfterSeconds: Math.max(1, tightest.ttlSeconds),
      });
    }
  });

  return failedAuthGuard(create, cfg.failedAuth, opts.metrics);
}

/** What the authentication hook asks about failed attempts from an address. */
export interface FailedAuthGuard {
  /** Seconds an address must wait before it may try again (undefined: it may now). */
  blocked(req: FastifyRequest): number | undefined;
  /** Counts a failed attempt; true when it took the address past its limit. */
  failed(req: FastifyRequest): Promise<boolean>;
}

/**
 * Failed authentication per client address: counted (in Redis when configured, so across API
 * processes) on every missing or wrong key; an address past its limit is refused at once, before
 * any key is hashed, until its window ends. Addresses that behave are never slowed.
 */
function failedAuthGuard(create: (o: object) => Limiter, cfg: RateLimitsConfig['failedAuth'], metrics?: CostMetrics): FailedAuthGuard | undefined {
  if (cfg.perAddress <= 0) return undefined;
  const limiter = create({ timeWindow: cfg.windowSeconds * 1000, max: cfg.perAddress, keyGenerator: (req: FastifyRequest) => `auth:addr:${normalizeIP(req.ip)}` });
  const until = new Map<string, number>();
  return {
    blocked(req) {
      if (until.size === 0) return undefined;
      const ip = normalizeIP(req.ip);
      const t = until.get(ip);
      if (t === undefined) return undefined;
      const left = Math.ceil((t - Date.now()) / 1000);
      if (left > 0) return left;
      until.delete(ip);
      return undefined;
    },
    async failed(req) {
      const r = await limiter(req);
      if (r.isAllowed || !r.isExceeded) return false;
      if (until.size > 10_000) until.clear();
      until.set(normalizeIP(req.ip), Date.now() + (r.ttlInSeconds ?? cfg.windowSeconds) * 1000);
      metrics?.rateLimited.inc({ endpoint: 'auth', scope: 'per-address' });
      return true;
    },
  };
}

export function tooManyFailedAttempts(seconds: number): DomainError {
  return new DomainError('rate_limited', `Too many requests with a missing or wrong API key from your address. Retry in ${seconds}s.`, { code: 'rate_limit_exceeded', retryAfterSeconds: seconds });
}
