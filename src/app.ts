/**
 * The composition root: builds every component from the config, wires API and/or worker, and owns
 * start and graceful stop. `easel serve` runs both roles in one process; `easel api` and
 * `easel worker` run one each against shared Postgres/Redis/S3.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import type { Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import type { EaselConfig } from './config/schema.ts';
import { openDatabase, migrate, pingDatabase } from './store/database.ts';
import type { MetadataDb } from './store/database.ts';
import { SqlJobStore } from './store/sql-job-store.ts';
import { SqlKeyStore } from './store/sql-key-store.ts';
import type { JobStore, KeyStore } from './store/job-store.ts';
import { EmbeddedQueue } from './queue/embedded-queue.ts';
import { loadOptional } from './core/optional-module.ts';
import type { JobQueue } from './queue/job-queue.ts';
import { LocalStorage, verifyFileSignature } from './storage/local-storage.ts';
import type { ImageStorage } from './storage/image-storage.ts';
import { BackendRegistry } from './backends/registry.ts';
import { withEmbeddedDefault } from './backends/onnx/embedded-default.ts';
import type { BackendFactory } from './backends/registry.ts';
import { LocalEventBus, RecordingEventBus, RedisEventBus } from './events/job-events.ts';
import { SqlJobEventLog } from './events/job-event-log.ts';
import type { JobEventBus } from './events/job-events.ts';
import { KeyAuthenticator, ensureAdminKey } from './auth/api-keys.ts';
import { Worker } from './worker/worker.ts';
import { buildServer } from './api/server.ts';
import { isWebhookReceiver } from './backends/http/webhooks.ts';
import { PromptModerator } from './moderation/prompt-moderator.ts';
import { WebhookService } from './webhooks/service.ts';
import type { Readiness } from './api/routes/health.ts';
import { RetentionScheduler } from './retention/scheduler.ts';
import { PriceTable } from './pricing/price-table.ts';
import { priceRules } from './pricing/schema.ts';
import { BatchStore } from './batches/batch-store.ts';
import { BatchPump } from './batches/pump.ts';
import { startMetricsServer } from './observability/metrics-server.ts';
import { CostMetrics } from './observability/metrics.ts';
import { jobMetricsListener } from './observability/job-metrics.ts';
import { CostModel } from './pricing/cost-model.ts';
import { CircuitBreakers } from './routing/circuit.ts';
import { Router } from './routing/router.ts';
import { AttemptRouting } from './routing/fallback.ts';
import { ImageCache } from './cache/image-cache.ts';
import { createEmbedder } from './cache/embedders.ts';
import type { Embedder } from './cache/embedders.ts';
import { BudgetGate } from './budgets/gate.ts';
import { BudgetLedger } from './budgets/ledger.ts';
import { JobCosts } from './jobs/job-costs.ts';
import { JobSettler } from './jobs/settle.ts';
import { Submissions } from './submissions/submissions.ts';
import { FairShare } from './fairness/fair-share.ts';
import { AutoPull } from './models/auto-pull.ts';
import { modelLoadingError } from './models/model-loading.ts';
import { DEFAULT_HF_ENDPOINT } from './models/model-store.ts';
import { describeProgress, formatBytes } from './models/pull-progress.ts';
import { CATALOG } from './models/catalog.ts';

export interface Roles {
  api: boolean;
  worker: boolean;
}

export interface RuntimeOptions {
  log?: Logger;
  /** Extra backend types (tests and plugins). */
  backendFactories?: Record<string, BackendFactory>;
}

export function createLogger(config: EaselConfig, role: string): Logger {
  return pino({ level: config.logging.level, base: { service: 'easel', role, pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}

/** A per-install secret for signing local image URLs, kept in the data folder. */
function fileSigningSecret(dataDir: string): Buffer {
  const path = join(dataDir, 'secrets', 'file-signing.key');
  if (existsSync(path)) return Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
  mkdirSync(join(dataDir, 'secrets'), { recursive: true, mode: 0o700 });
  const secret = randomBytes(32);
  writeFileSync(path, secret.toString('base64'), { mode: 0o600, flag: 'wx' });
  return Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
}

export class Runtime {
  readonly config: EaselConfig;
  readonly roles: Roles;
  readonly log: Logger;
  readonly mdb: MetadataDb;
  readonly store: JobStore;
  readonly keys: KeyStore;
  readonly queue: JobQueue;
  readonly storage: ImageStorage;
  readonly backends: BackendRegistry;
  /** The price table (defaults + `pricing.overrides`) jobs are costed with. */
  readonly prices: PriceTable;
  readonly events: JobEventBus;
  readonly auth: KeyAuthenticator;
  readonly worker: Worker | undefined;
  readonly server: FastifyInstance | undefined;
  readonly webhooks: WebhookService;
  /** Worker role: deletes expired jobs on the `retention` schedule, one worker at a time. */
  readonly retention: RetentionScheduler | undefined;
  /** Set when nothing can generate yet: the one line saying so (the download under way, or the command that fetches a model). */
  readonly setupHint: string | undefined;
  /** Routing: aliases, candidates, fallback chains, circuit breakers (src/routing). */
  readonly router: Router;
  /** Budgets: reservations at admission, settlement at the end (src/budgets). */
  readonly budgets: BudgetGate;
  /** The image cache (src/cache). */
  readonly cache: ImageCache;
  /** What jobs cost: price table, self-hosted GPU time, estimates (src/pricing). */
  readonly costs: CostModel;
  readonly metrics: CostMetrics;
  readonly jobCosts: JobCosts;
  /** Where every job ends. */
  readonly settler: JobSettler;
  /** The one way in. */
  readonly submissions: Submissions;
  /** Fair sharing between keys: turns by weight, running and queued limits (src/fairness). */
  readonly fairShare: FairShare;
  /** No backend and no model: the default model's download (src/models/auto-pull.ts), unless turned off. */
  readonly autoPull: AutoPull | undefined;
  readonly batches: BatchStore;
  private readonly embedder: Embedder | undefined;
  private cacheTimer: NodeJS.Timeout | undefined;
  /** Worker role: moves batch requests onto the queue under their caps. */
  readonly batchPump: BatchPump | undefined;
  private metricsServer: { close(): Promise<void> } | undefined;
  /** The admin key created on this start (first start of an empty database), to print once. */
  createdAdminKey: string | undefined;
  private listeningUrl: string | undefined;
  private stopping = false;
  private unsubscribeRelay: (() => void) | undefined;
  private unsubscribeKeys: (() => void) | undefined;

  constructor(config: EaselConfig, roles: Roles, opts: RuntimeOptions = {}) {
    this.config = config;
    this.roles = roles;
    const role = roles.api && roles.worker ? 'serve' : roles.api ? 'api' : 'worker';
    this.log = opts.log ?? createLogger(config, role);
    const dataDir = resolve(config.dataDir);
    mkdirSync(dataDir, { recursive: true });

    this.mdb = openDatabase(config.database.url ?? join(dataDir, 'easel.db'));
    this.store = new SqlJobStore(this.mdb);
    this.keys = new SqlKeyStore(this.mdb);
    this.auth = new KeyAuthenticator(this.keys, config.auth.keyCacheSeconds * 1000);

    // Both queues take jobs in the fair order (keys take turns by weight, running limits hold).
    this.fairShare = new FairShare({ config: config.fairness, mdb: this.mdb, keys: this.keys });
    const fairness = this.fairShare.policy;
    if (config.redis.url) {
      const { BullmqQueue } = loadOptional<typeof import('./queue/bullmq-queue.ts')>('./queue/bullmq-queue.ts', import.meta.url);
      this.queue = new BullmqQueue({ url: config.redis.url, prefix: config.redis.prefix, visibilityTimeoutMs: config.queue.visibilityTimeoutSeconds * 1000, fairness });
    } else {
      this.queue = new EmbeddedQueue({ db: this.mdb, visibilityTimeoutMs: config.queue.visibilityTimeoutSeconds * 1000, pollIntervalMs: config.queue.pollIntervalMs, fairness });
    }
    // Partial images are recorded in job_events so event streams can replay them; nothing else is written.
    this.events = new RecordingEventBus(
      config.redis.url ? new RedisEventBus(config.redis.url, config.redis.prefix) : new LocalEventBus(),
      new SqlJobEventLog(this.mdb),
      (err) => this.log.warn({ err }, 'could not record a job event'),
    );

    let verify: ((key: string, expires: string, signature: string) => boolean) | undefined;
    if (config.storage.type === 's3') {
      const s3 = config.storage.s3!;
      const { S3Storage } = loadOptional<typeof import('./storage/s3-storage.ts')>('./storage/s3-storage.ts', import.meta.url);
      this.storage = new S3Storage({ ...s3, cacheControl: `public, max-age=${config.storage.cacheMaxAgeSeconds}, immutable` });
    } else {
      const secret = fileSigningSecret(dataDir);
      // The public base is only known after listen() (port 0), so the storage asks for it per URL.
      this.storage = new LocalStorage({ dir: resolve(config.storage.dir ?? join(dataDir, 'images')), publicBaseUrl: () => this.publicUrl(), signingSecret: secret });
      verify = (key, expires, signature) => verifyFileSignature(secret, key, expires, signature);
    }

    // No backend configured: models pulled into <dataDir>/models run on the built-in engine; with
    // none pulled, the default model is downloaded in the background and served once it is in.
    const embedded = withEmbeddedDefault(config.backends, config.models, dataDir);
    const backendDeps = { log: this.log.child({ component: 'backend' }), publicUrl: config.server.publicUrl };
    this.backends = BackendRegistry.fromConfig(embedded.backends, embedded.models, opts.backendFactories, backendDeps);
    if (embedded.needsModel && config.modelStore.autoPull) {
      const endpoint = config.modelStore.endpoint ?? DEFAULT_HF_ENDPOINT;
      const modelsDir = join(dataDir, 'models');
      const wanted = config.modelStore.autoPullModels;
      const approx = CATALOG.filter((e) => wanted.includes(e.name)).reduce((n, e) => n + e.approxBytes, 0);
      this.autoPull = new AutoPull({
        modelsDir,
        models: wanted,
        endpoint,
        token: process.env.HF_TOKEN || undefined,
        idleTimeoutMs: config.modelStore.idleTimeoutSeconds * 1000,
        retries: config.modelStore.retries,
        log: this.log.child({ component: 'auto-pull' }),
        command: `easel ${role}`,
        onReady: () => {
          const ready = withEmbeddedDefault([], [], dataDir);
          const built = BackendRegistry.fromConfig(ready.backends, ready.models, opts.backendFactories, backendDeps);
          this.backends.add(built.listBackends(), ready.models);
        },
      });
      this.setupHint =
        `No image model yet: downloading the default model (${wanted.join(' + ')}, about ${formatBytes(approx)}) from ${endpoint} into ${modelsDir} in the background. ` +
        'Generations answer 503 model_loading until it is ready (progress in the log, GET /v1/system and the console\'s System page); EASEL_AUTO_PULL=0 turns this off.';
    } else {
      this.setupHint = embedded.hint;
    }
    this.prices = new PriceTable(priceRules(config.pricing));
    this.costs = new CostModel({ config: config.costModel, prices: this.prices, unpricedImageUsd: config.budgets.unpricedImageUsd, mdb: this.mdb });
    this.metrics = new CostMetrics();
    const circuits = new CircuitBreakers(config.routing.circuit);
    const costLog = this.log.child({ component: 'cost' });
    circuits.onChange = (backend, state) => costLog.warn({ backend, circuit: state }, `circuit of backend ${backend} is ${state}`);
    this.router = new Router({ registry: this.backends, models: embedded.models, config: config.routing, costs: this.costs, circuits });
    this.metrics.attach({ store: this.store, queue: this.queue, health: () => this.router.backendHealth(), circuits: () => circuits.snapshot() });
    this.fairShare.registerMetrics(this.metrics.registry);
    this.embedder = config.cache.semantic.enabled ? createEmbedder(config.cache.semantic.embedder ?? { type: 'hashed', dimensions: 256 }) : undefined;
    this.cache = new ImageCache({ mdb: this.mdb, store: this.store, storage: this.storage, config: config.cache, embedder: this.embedder, log: costLog });
    this.cache.resolveKeys = async () => (await this.keys.listKeys()).filter((k) => !k.revokedAt);
    this.cache.onLookup = (kind, hit) => this.metrics.cacheLookups.inc({ kind, result: hit ? 'hit' : 'miss' });
    this.budgets = new BudgetGate({ ledger: new BudgetLedger(this.mdb), config: config.budgets, log: costLog, onRefusal: (scope) => this.metrics.budgetRefusals.inc({ scope }) });
    this.jobCosts = new JobCosts(this.mdb);
    this.batches = new BatchStore(this.mdb);

    // One way out: the state change, then budgets and cache, then the event, then metrics and webhooks.
    this.settler = new JobSettler({ store: this.store, events: this.events, jobCosts: this.jobCosts, log: this.log });
    this.settler.listen(this.budgets.listener);
    this.settler.listen(this.cache.listener);
    this.settler.listen(jobMetricsListener(this.metrics, this.costs));

    this.webhooks = new WebhookService({
      config, mdb: this.mdb, store: this.store, storage: this.storage, events: this.events, log: this.log, dataDir, deliver: roles.worker,
    });
    this.settler.listen(this.webhooks.listener);

    const moderator = new PromptModerator(config.moderation);
    // One way in: every door (HTTP routes, retries, batch requests) submits through this.
    this.submissions = new Submissions({
      store: this.store, queue: this.queue, storage: this.storage, backends: this.backends, router: this.router, budgets: this.budgets, cache: this.cache,
      jobCosts: this.jobCosts, settler: this.settler, moderator, checkWebhookUrl: (url) => this.webhooks.checkWebhookUrl(url), uploads: config.uploads,
      log: this.log.child({ component: 'submissions' }),
      // First start: while the default model downloads, generations answer 503 model_loading.
      unavailable: () => modelLoadingError(this.autoPull),
      fairness: this.fairShare,
    });

    this.worker = roles.worker
      ? new Worker(
          {
            store: this.store, queue: this.queue, storage: this.storage, backends: this.backends, events: this.events, log: this.log,
            settler: this.settler, routing: new AttemptRouting({ router: this.router, jobCosts: this.jobCosts, metrics: this.metrics, log: costLog }), costs: this.costs, jobCosts: this.jobCosts,
          },
          { concurrency: config.worker.concurrency, jobTimeoutMs: config.worker.jobTimeoutSeconds * 1000, maxAttempts: config.queue.maxAttempts },
        )
      : undefined;

    this.batchPump = roles.worker
      ? new BatchPump({ batches: this.batches, store: this.store, keys: this.keys, submissions: this.submissions, config: config.batches, log: this.log.child({ component: 'batches' }) })
      : undefined;

    this.retention = roles.worker
      ? new RetentionScheduler({ mdb: this.mdb, storage: this.storage, config: config.retention, log: this.log.child({ component: 'retention' }) })
      : undefined;

    this.server = roles.api
      ? buildServer({
          config,
          store: this.store,
          keys: this.keys,
          auth: this.auth,
          queue: this.queue,
          storage: this.storage,
          backends: this.backends,
          events: this.events,
          log: this.log,
          publicUrl: () => this.publicUrl(),
          readiness: () => this.readiness(),
          verifyFileSignature: verify,
          moderator,
          checkWebhookUrl: (url) => this.webhooks.checkWebhookUrl(url),
          webhookInfo: (jobId) => this.webhooks.webhookInfo(jobId),
          submissions: this.submissions,
          settler: this.settler,
          jobCosts: this.jobCosts,
          budgets: this.budgets,
          router: this.router,
          metrics: this.metrics,
          batches: this.batches,
          mdb: this.mdb,
          autoPull: this.autoPull,
        })
      : undefined;
  }

  publicUrl(): string {
    const configured = this.config.server.publicUrl;
    if (configured) return configured.replace(/\/+$/, '');
    return this.listeningUrl ?? `http://${this.config.server.host}:${this.config.server.port}`;
  }

  /** The URL the API listens on (after start). */
  get url(): string | undefined {
    return this.listeningUrl;
  }

  async readiness(): Promise<Readiness> {
    const checks: Readiness['checks'] = {};
    const probe = async (name: string, fn: () => Promise<void>) => {
      try {
        await fn();
        checks[name] = { ok: true };
      } catch (err) {
        // A check may say what anyone may read (no paths or addresses) besides its full message.
        checks[name] = { ok: false, message: (err as Error).message, public: (err as { publicMessage?: string }).publicMessage };
      }
    };
    await Promise.all([
      probe('database', () => pingDatabase(this.mdb)),
      probe('queue', () => this.queue.ping()),
      probe('storage', () => this.storage.ping()),
      probe('disk', () => this.checkFreeDisk()),
    ]);
    const health = await this.backends.health();
    const names = Object.keys(health);
    if (this.autoPull && names.length === 0) {
      const pull = this.autoPull.state();
      checks.model = pull.status === 'failed'
        ? { ok: false, message: `the default model could not be downloaded: ${pull.error}`, public: 'the default model could not be downloaded' }
        : { ok: false, message: `the default model is ${pull.status === 'waiting' ? `being downloaded by ${pull.owner}` : pull.status}: ${describeProgress(pull)}`, public: `the default model is ${pull.status === 'waiting' ? 'being downloaded by another process' : pull.status}: ${describeProgress(pull)}` };
    }
    const healthy = names.filter((n) => health[n]!.ok);
    // Warming (a first small generation on a cold GPU) is not a failure to hide: /ready says so.
    const warming = names.some((n) => health[n]!.warming);
    checks.backends = healthy.length
      ? { ok: true, message: `${healthy.length}/${names.length} healthy` }
      : { ok: false, message: names.length ? `no healthy backend (${names.map((n) => `${n}: ${health[n]!.message ?? 'down'}`).join('; ')})` : 'no backend configured', ...(warming ? { public: 'the GPU backends are warming up' } : {}) };
    // Alive but past its queue-depth limit (a GPU pool): not ready, so a load balancer sheds load.
    const overloaded = names.filter((n) => health[n]!.overloaded);
    if (overloaded.length) {
      checks.capacity = { ok: false, message: overloaded.map((n) => `backend ${n} is overloaded: ${health[n]!.message ?? 'queue full'}`).join('; ') };
    }
    return { ready: Object.values(checks).every((c) => c.ok), checks };
  }

  /** Local storage: fails while the images' disk has less free space than `storage.minFreeBytes`. */
  private async checkFreeDisk(): Promise<void> {
    const min = this.config.storage.minFreeBytes;
    if (!(this.storage instanceof LocalStorage) || min <= 0) return;
    const free = await this.storage.freeDiskBytes();
    if (free < min) {
      const mib = (n: number) => `${Math.floor(n / 1024 / 1024)} MiB`;
      throw Object.assign(new Error(`low disk: ${mib(free)} free under ${this.storage.dir}, below storage.minFreeBytes (${mib(min)})`), {
        publicMessage: `low disk: ${mib(free)} free, below storage.minFreeBytes (${mib(min)})`,
      });
    }
  }

  async start(): Promise<void> {
    const applied = await migrate(this.mdb);
    if (applied.length) this.log.info({ migrations: applied }, 'database migrated');
    if (this.roles.api) {
      this.createdAdminKey = await ensureAdminKey(this.keys, this.config.auth.adminKey);
      // A key revoked through any API process stops working in this one at once.
      this.unsubscribeKeys = this.events.subscribeAll((event) => {
        if (event.type === 'key_revoked') this.auth.invalidate();
      });
    }
    // Config entries that name keys apply to jobs queued before this start too.
    await this.fairShare.learnKeys();
    if (this.worker) {
      await this.requeueUnfinished();
      this.worker.start();
      if (!this.roles.api) this.relayProviderWebhooks();
      this.retention?.start();
      this.budgets.start(this.config.budgets.sweepIntervalSeconds * 1000);
      this.cacheTimer = setInterval(() => void this.cache.purgeExpired().catch(() => {}), 3600_000);
      this.cacheTimer.unref();
      this.batchPump?.start();
      // A worker-only process has no API to serve /metrics on: it gets its own port when configured.
      if (!this.server && this.config.metrics.enabled && this.config.metrics.workerPort) {
        this.metricsServer = await startMetricsServer(this.metrics, { host: this.config.server.host, port: this.config.metrics.workerPort, bearerToken: this.config.metrics.bearerToken });
      }
    }
    if (this.server) {
      const address = await this.server.listen({ host: this.config.server.host, port: this.config.server.port });
      this.listeningUrl = address.replace('://[::1]', '://localhost');
    }
    // After listen: webhook payloads carry image URLs built from the public URL.
    await this.webhooks.start();
    this.autoPull?.start();
  }

  /**
   * Provider webhooks arrive at API processes; the calls waiting on them run here. Each relayed one is
   * verified again by this process's backend (the same secret) before it wakes anything.
   */
  private relayProviderWebhooks(): void {
    this.unsubscribeRelay = this.events.subscribeAll((event) => {
      if (event.type !== 'provider_webhook') return;
      const backend = this.backends.listBackends().find((b) => b.name === event.backend);
      if (!backend || !isWebhookReceiver(backend)) return;
      backend.handleWebhook({ headers: event.headers, rawBody: Buffer.from(event.body, 'base64') }).catch((err) => {
        this.log.warn({ err, backend: event.backend }, 'relayed provider webhook failed');
      });
    });
  }

  /**
   * Puts every unfinished job back on the queue. Enqueue is idempotent per job id, so jobs still
   * queued or held by a live worker are untouched (on Redis: waiting in the fair waiting room, being
   * moved, or in BullMQ); this recovers jobs whose queue message was lost (a crash between the
   * database write and the enqueue, or a Redis that lost its data).
   */
  async requeueUnfinished(): Promise<number> {
    let count = 0;
    let after: string | undefined;
    for (;;) {
      const page = await this.store.listUnfinished(500, after);
      if (page.length === 0) return count;
      for (const job of page) await this.queue.enqueue({ jobId: job.id, priority: job.priority, keyId: job.keyId });
      count += page.length;
      after = page.at(-1)!.id;
    }
  }

  /** Graceful: stop accepting, let in-flight jobs finish within the grace period, then close. */
  async stop(graceMs = this.config.worker.shutdownGraceSeconds * 1000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.autoPull?.stop().catch(() => {});
    if (this.server) await this.server.close().catch(() => {});
    await this.retention?.stop().catch(() => {});
    await this.batchPump?.stop().catch(() => {});
    await this.metricsServer?.close().catch(() => {});
    this.unsubscribeRelay?.();
    this.unsubscribeKeys?.();
    if (this.worker) await this.worker.stop(graceMs).catch((err) => this.log.error({ err }, 'worker stop failed'));
    await this.webhooks.stop(graceMs).catch((err) => this.log.error({ err }, 'webhook stop failed'));
    this.budgets.stop();
    clearInterval(this.cacheTimer);
    await this.cache.flush().catch((err) => this.log.warn({ err }, 'writing cache entries failed'));
    await this.embedder?.close?.().catch(() => {});
    await this.queue.close().catch(() => {});
    await this.events.close().catch(() => {});
    await this.backends.close().catch(() => {});
    await this.storage.close?.().catch(() => {});
    await this.mdb.close().catch(() => {});
  }
}
