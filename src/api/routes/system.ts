/**
 * GET /v1/system — what the console's System page shows: each backend with its health, capabilities,
 * the public models it serves and its queue depth (queued and running jobs for those models, all
 * keys for an admin, the caller's own otherwise), plus the GPU hosts, busy time and loaded model
 * wherever the backend reports them in its health details (the GPU host pools do). Host URLs, health
 * messages and host errors carry internal addresses: only admin keys see them in full. While the
 * default model is downloaded on first start, `model_download` says how far it is.
 */
import { redactAddresses } from '../redact.ts';
import type { FastifyInstance } from 'fastify';
import type { ApiDeps } from '../server.ts';

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' && v ? v : null);

/** A pool's host, in snake_case, when the details carry one; unknown fields are left out. */
function hostView(h: Record<string, unknown>, admin: boolean) {
  return {
    name: str(h.name) ?? 'host',
    ...(admin && str(h.url) ? { url: str(h.url) } : {}),
    status: str(h.status) ?? 'unknown',
    running: num(h.running),
    loaded_model: str(h.loaded) ?? str(h.loadedModel) ?? null,
    busy_ms: num(h.busyMs),
    calls: num(h.calls),
    images: num(h.images),
    model_switches: num(h.switches),
    free_vram_bytes: num(h.freeVramBytes),
    total_vram_bytes: num(h.totalVramBytes),
    last_error: admin ? str(h.lastError) : str(h.lastError) && 'failed (the details are in the server’s logs)',
  };
}

export async function systemRoutes(app: FastifyInstance, deps: ApiDeps) {
  app.get('/system', async (req) => {
    const admin = req.apiKey.admin;
    const own = admin ? undefined : req.apiKey.id;
    const [health, counts, active, perKey] = await Promise.all([deps.backends.health(), deps.store.countByStatus(own), deps.store.countActiveByModel(own), deps.submissions.fairness?.depthByKey(own)]);
    const models = deps.backends.listModels();
    const backends = deps.backends.listBackends().map((b) => {
      const h = health[b.name] ?? { ok: false, message: 'no health answer' };
      const served = models.filter((m) => m.backend === b.name).map((m) => m.name);
      const mine = active.filter((a) => served.includes(a.model));
      const details = (h.details ?? {}) as Record<string, unknown>;
      const hosts = Array.isArray(details.hosts) ? (details.hosts as Record<string, unknown>[]).map((x) => hostView(x, admin)) : [];
      return {
        name: b.name,
        type: b.type,
        ok: h.ok,
        overloaded: h.overloaded ?? false,
        message: h.message == null ? null : admin ? h.message : h.ok ? redactAddresses(h.message) : 'unavailable (the details are in the server’s logs)',
        models: served,
        capabilities: {
          generate: b.capabilities.generate,
          edit: b.capabilities.edit,
          mask: b.capabilities.mask,
          variation: b.capabilities.variation,
          max_input_images: b.capabilities.maxInputImages,
          max_images_per_call: b.capabilities.maxImagesPerCall,
        },
        queue: {
          queued: mine.filter((a) => a.status === 'queued').reduce((s, a) => s + a.count, 0),
          running: mine.filter((a) => a.status === 'running').reduce((s, a) => s + a.count, 0),
          // The pool's own wait queue: jobs handed to the backend that wait for a free GPU host.
          waiting_for_host: num(details.waiting),
        },
        hosts,
      };
    });
    const pull = deps.autoPull?.state();
    return {
      object: 'system',
      checked_at: Math.floor(Date.now() / 1000),
      jobs: counts,
      // Queued and running jobs per key (fair sharing, src/fairness): every key's for an admin, else the caller's.
      keys: (perKey ?? []).map((k) => ({ key_id: k.keyId, name: k.name, queued: k.queued, running: k.running })),
      default_model: deps.backends.defaultModel ?? null,
      backends,
      // The first start's download of the default model (null when there is none).
      model_download: pull
        ? {
            status: pull.status,
            models: pull.models,
            model: pull.model,
            percent: pull.percent,
            received_bytes: pull.receivedBytes,
            total_bytes: pull.totalBytes,
            bytes_per_second: pull.bytesPerSecond,
            eta_seconds: pull.etaSeconds,
            endpoint: pull.endpoint,
            owner: pull.owner,
            error: pull.error,
            started_at: pull.startedAt,
          }
        : null,
    };
  });
}
