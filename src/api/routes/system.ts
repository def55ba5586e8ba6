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
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ApiDeps } from '../server.ts';
import { errorResponses, json } from '../schemas/common.ts';
import { noQuery } from '../schemas/compile.ts';

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' && v ? v : null);

/** A pool's host, in snake_case, when the details carry one; unknown fields are left out. */
function hostView(h: Record<string, unknown>, admin: boolean) {
  return {
    name: str(h.name) ?? 'host',
    ...(admin && str(h.url) ? { url: str(h.url)! } : {}),
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

const count = z.number().nullable();
const hostSchema = z.object({
  name: z.string(),
  url: z.string().optional().describe('Admin keys only'),
  status: z.string(),
  running: count,
  loaded_model: z.string().nullable(),
  busy_ms: count,
  calls: count,
  images: count,
  model_switches: count,
  free_vram_bytes: count,
  total_vram_bytes: count,
  last_error: z.string().nullable(),
});

const systemSchema = z.object({
  object: z.literal('system'),
  checked_at: z.int(),
  jobs: z.record(z.string(), z.number()).describe('Jobs by status: every key’s for an admin key, the caller’s own otherwise'),
  default_model: z.string().nullable(),
  backends: z.array(
    z.object({
      name: z.string(),
      type: z.string(),
      ok: z.boolean(),
      overloaded: z.boolean(),
      warming: z.boolean().describe('Running its warm-up (config `warmup`): not taking work yet'),
      message: z.string().nullable(),
      models: z.array(z.string()),
      capabilities: z.object({
        generate: z.boolean(),
        edit: z.boolean(),
        mask: z.boolean(),
        variation: z.boolean(),
        max_input_images: z.number(),
        max_images_per_call: z.number(),
      }),
      queue: z.object({ queued: z.int(), running: z.int(), waiting_for_host: count }),
      hosts: z.array(hostSchema),
    }),
  ),
  keys: z
    .array(z.object({ key_id: z.string(), name: z.string().nullable(), queued: z.int(), running: z.int() }))
    .describe('Queued and running jobs per key: every key for an admin key, the caller’s own otherwise'),
  model_download: z
    .object({
      status: z.string(),
      models: z.array(z.string()),
      model: z.string().nullable(),
      percent: z.number().nullable(),
      received_bytes: z.number(),
      total_bytes: z.number().nullable(),
      bytes_per_second: z.number().nullable(),
      eta_seconds: z.number().nullable(),
      endpoint: z.string().nullable().describe('Admin keys only'),
      owner: z.string().nullable(),
      error: z.string().nullable(),
      started_at: z.string(),
    })
    .nullable()
    .describe('The first start’s download of the default model; null when there is none'),
});

export async function systemRoutes(app: FastifyInstance, deps: ApiDeps) {
  app.withTypeProvider<ZodTypeProvider>().get('/system', {
    schema: {
      summary: 'Backends and GPU hosts: health, capabilities, busy time, loaded model, queue depth',
      operationId: 'getSystem',
      tags: ['system'],
      querystring: noQuery,
      response: { 200: json('System status', systemSchema), ...errorResponses },
    },
  }, async (req) => {
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
        warming: h.warming ?? false,
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
      object: 'system' as const,
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
            // Where it comes from and what went wrong may name internal hosts: admin keys only.
            endpoint: admin ? pull.endpoint : null,
            owner: admin ? pull.owner : null,
            error: pull.error && !admin ? 'the download failed (the details are in the server’s logs)' : pull.error,
            started_at: pull.startedAt,
          }
        : null,
    };
  });
}
