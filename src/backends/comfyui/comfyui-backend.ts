/**
 * The `comfyui` backend: one or more ComfyUI hosts behind a {@link HostPool} (placement, batching,
 * model affinity, health, retry on another host).
 *
 * One host call: upload input images (`POST /upload/image`), submit the graph (`POST /prompt` with
 * this host's websocket `client_id`), follow the websocket until the prompt's end, then read
 * `/history/{id}` and fetch every saved image through `/view`.
 *
 * The end is detected as ComfyUI's notes say: `executing` with `node: null` for the prompt is the
 * only message sent after the history entry is written; `execution_success` comes before it (and
 * is absent on servers older than 2024-07), and errors and interrupts send `execution_error` /
 * `execution_interrupted` before that final `executing`. History has the last word (its
 * `status_str`). When the websocket drops, it is reopened and the prompt is still followed; until
 * it is back, `/history/{id}` is polled, and a prompt that is neither in history nor queued any more
 * (the host restarted) or a host that stops answering moves the job to another host.
 *
 * Validation failures (400 with `node_errors`, or 200 with non-empty `node_errors`, which means
 * some outputs were dropped) fail the job with a message naming the node. Cancel removes a pending
 * prompt from the host's queue and interrupts it only if it is the one running.
 */
import { createHash, randomUUID } from 'node:crypto';
import { sharp } from '../../images/sharp.ts';
import type {
  BackendCallContext,
  BackendCapabilities,
  BackendHealth,
  BackendImage,
  BackendImageInput,
  BackendRequest,
  BackendResult,
  BackendWarning,
  ImageBackend,
} from '../image-backend.ts';
import { BackendError } from '../image-backend.ts';
import { HostFailure, HostPool, checkGpuRequest, generationBatchKey, poolOptionsFrom } from '../pool/host-pool.ts';
import type { BatchOutput, PoolBatch, PoolHost, PoolLog, ProbeResult, RunIO } from '../pool/host-pool.ts';
import { hostRequest, readBytes, readJson, sleep, sniffImageType } from '../pool/http.ts';
import type { HostHttp } from '../pool/http.ts';
import { comfyuiBackendConfigSchema } from './options.ts';
import type { CheckpointFamily, ComfyUIBackendConfig, ComfyUIBackendConfigInput, WorkflowField } from './options.ts';
import { ComfySocket, waitFor } from './socket.ts';
import type { ComfyMessage, PreviewFrame } from './socket.ts';
import { FAMILY_DEFAULTS, TEMPLATE_OUTPUT_NODE, buildTemplate, guessFamily } from './templates.ts';
import type { ApiGraph } from './templates.ts';
import { applyWorkflow, loadWorkflow } from './workflows.ts';
import type { LoadedWorkflow } from './workflows.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { acceptedOptions } from '../provider-options.ts';
import { compatibility, unsupported } from '../warnings.ts';
import { checkpointSpec, comfyLoras, workflowSpec } from './models.ts';
import { loraSetKey } from '../model-spec.ts';

/** What `/history/{id}` holds for a finished prompt. */
export interface HistoryEntry {
  outputs?: Record<string, { images?: Array<{ filename: string; subfolder?: string; type?: string }> } & Record<string, unknown>>;
  status?: { status_str?: string; completed?: boolean; messages?: Array<[string, Record<string, unknown>]> };
}

type Outcome =
  | { kind: 'success'; history?: HistoryEntry }
  | { kind: 'error'; data: Record<string, unknown> }
  | { kind: 'interrupted'; data: Record<string, unknown> };

const CHECKPOINT_REFRESH_MS = 60_000;
/** A miss makes every host list its LoRAs again, at most this often (a stream of unknown names costs one look). */
const LORA_REFRESH_THROTTLE_MS = 5_000;
const CONNECT_TIMEOUT_MS = 5_000;
const CANCEL_SETTLE_MS = 3_000;

/** Follows one prompt's websocket messages. */
class PromptFollower {
  outcome: Outcome | undefined;
  started = false;
  error: Record<string, unknown> | undefined;
  interrupted: Record<string, unknown> | undefined;
  private waiters = new Set<() => void>();
  private best = 0;
  private previews = 0;
  private readonly onProgress: (p: number) => void;
  private readonly onPreviewImage: ((frame: PreviewFrame, index: number) => void) | undefined;

  constructor(onProgress: (p: number) => void, onPreviewImage?: (frame: PreviewFrame, index: number) => void) {
    this.onProgress = onProgress;
    this.onPreviewImage = onPreviewImage;
  }

  changed(until?: AbortSignal): Promise<void> {
    return waitFor(this.waiters, until);
  }

  settle(outcome: Outcome): void {
    if (this.outcome) return;
    this.outcome = outcome;
    this.notify();
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = new Set();
    for (const f of w) f();
  }

  onMessage = (msg: ComfyMessage): void => {
    const data = msg.data;
    switch (msg.type) {
      case 'execution_start':
      case 'execution_cached':
        this.started = true;
        break;
      case 'executing':
        this.started = true;
        // The end: sent after the history entry is written, also after an error or interrupt.
        if (data.node === null) {
          this.settle(this.error ? { kind: 'error', data: this.error } : this.interrupted ? { kind: 'interrupted', data: this.interrupted } : { kind: 'success' });
        }
        break;
      case 'progress': {
        const value = Number(data.value);
        const max = Number(data.max);
        if (max > 0 && Number.isFinite(value)) {
          const p = Math.max(0, Math.min(1, value / max));
          if (p > this.best) {
            this.best = p;
            this.onProgress(p);
          }
        }
        break;
      }
      case 'execution_error':
        this.error = data;
        break;
      case 'execution_interrupted':
        this.interrupted = data;
        break;
    }
  };

  onPreview = (frame: PreviewFrame): void => {
    this.onPreviewImage?.(frame, this.previews++);
  };
}

export class ComfyUIBackend implements ImageBackend {
  readonly type = 'comfyui';
  readonly name: string;
  readonly capabilities: BackendCapabilities;
  readonly config: ComfyUIBackendConfig;
  readonly pool: HostPool;
  private readonly http: HostHttp;
  private readonly workflows = new Map<string, LoadedWorkflow>();
  private readonly workflowSpecs = new Map<string, BackendModelSpec>();
  private readonly sockets = new Map<string, ComfySocket>();
  private readonly checkpointsAt = new Map<string, number>();
  private readonly lorasAt = new Map<string, number>();

  constructor(config: ComfyUIBackendConfigInput | ComfyUIBackendConfig, deps: { log?: PoolLog } = {}) {
    this.config = comfyuiBackendConfigSchema.parse(config);
    const c = this.config;
    this.name = c.name;
    for (const wf of c.workflows) {
      if (this.workflows.has(wf.name)) throw new Error(`backend "${c.name}": two workflows are named "${wf.name}"`);
      const loaded = loadWorkflow(wf, c.name);
      this.workflows.set(wf.name, loaded);
      this.workflowSpecs.set(wf.name, workflowSpec(loaded, c.maxBatchSize));
    }
    this.capabilities = {
      generate: true,
      edit: true,
      mask: true,
      variation: true,
      maxInputImages: 1,
      maxImagesPerCall: c.maxBatchSize,
    };
    this.http = { backendName: c.name, timeoutMs: c.requestTimeoutSeconds * 1000, basicAuth: c.basicAuth };
    this.pool = new HostPool(
      poolOptionsFrom(c, { maxConcurrentPerHost: c.maxConcurrentPerHost, queueAhead: c.queueAheadPerHost, log: deps.log }),
      {
        run: (host, batch, io) => this.runBatch(host, batch, io),
        probe: (host, signal) => this.probe(host, signal),
        ...(c.warmup ? { warmup: (host: PoolHost, signal: AbortSignal) => this.warmup(host, signal) } : {}),
      },
    );
  }

  /** A workflow's spec follows its mapping; a checkpoint's is its family's template. Both offer the LoRAs the hosts list. */
  modelSpec(model: string): BackendModelSpec {
    // Nobody has asked the hosts yet (no job, no health check): start looking, for the next ask.
    if (this.pool.loraFiles() === undefined) void this.refreshLoras();
    const wf = this.workflowSpecs.get(model);
    if (wf) return wf.loras ? { ...wf, loras: { ...wf.loras, available: comfyLoras(this.pool.loraFiles()) } } : wf;
    return checkpointSpec(this.config.checkpoints[model]?.family ?? guessFamily(model), this.config.maxBatchSize, this.pool.loraFiles());
  }

  /** Lists every host's LoRAs again (a request named one not listed); at most once every few seconds. */
  async refreshLoras(): Promise<void> {
    return this.pool.refreshLoras(
      Math.min(LORA_REFRESH_THROTTLE_MS, this.config.loraRefreshSeconds * 1000),
      (h, signal) => this.listLoras(h, signal),
      (h) => this.lorasAt.set(h.name, Date.now()),
    );
  }

  async generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    const refuse = (message: string) => new BackendError(message, { code: 'invalid_request' });
    checkGpuRequest(request, this.name, this.config.maxBatchSize);
    const resumed = await this.resume(request, ctx);
    if (resumed) return resumed;
    const loraRefs = (request.loras ?? []).map((l) => l.ref);
    if (this.pool.lacksLoras(loraRefs)) {
      await this.refreshLoras();
      if (this.pool.lacksLoras(loraRefs)) throw refuse(`Backend "${this.name}": no host has all of the LoRAs ${loraRefs.join(', ')}`);
    }
    const loras = { loraSet: loraSetKey(request.loras), loraRefs };
    const wf = this.workflows.get(request.model);
    if (wf) {
      if (request.inputImages.length && !wf.inputs.image) throw refuse(`Workflow "${wf.name}" on backend "${this.name}" takes no input image`);
      if (request.mask && !wf.inputs.mask) throw refuse(`Workflow "${wf.name}" on backend "${this.name}" takes no mask`);
      // The checkpoint is the workflow's own: choosing another one is choosing another model.
      const batchKey = wf.inputs.batchSize && wf.inputs.seed ? generationBatchKey(request, `workflow:${wf.name}:${wf.checkpoint}`) : undefined;
      return this.pool.submit(request, ctx, { checkpoint: wf.checkpoint, batchKey, ...loras });
    }
    if (this.pool.lacks(request.model)) {
      // The lists may be stale (a checkpoint added since): look again before refusing.
      this.checkpointsAt.clear();
      await this.pool.probeAll();
    }
    if (this.pool.lacks(request.model)) {
      throw new BackendError(`Backend "${this.name}": no host has checkpoint "${request.model}" (nor a workflow of that name)`, { code: 'model_not_found' });
    }
    return this.pool.submit(request, ctx, { checkpoint: request.model, batchKey: generationBatchKey(request, request.model), ...loras });
  }

  health(): Promise<BackendHealth> {
    return this.pool.health();
  }

  async close(): Promise<void> {
    await this.pool.close();
    for (const s of this.sockets.values()) s.close();
  }

  // ---- one host call -------------------------------------------------------------------------

  private socketFor(host: PoolHost): ComfySocket {
    let s = this.sockets.get(host.name);
    if (!s) {
      s = new ComfySocket(host.url, { reconnectDelayMs: this.config.reconnectDelayMs });
      this.sockets.set(host.name, s);
    }
    return s;
  }

  private async runBatch(host: PoolHost, batch: PoolBatch, io: RunIO): Promise<BatchOutput> {
    const signal = io.signal;
    const socket = this.socketFor(host);
    const opened = socket.ensureOpen(CONNECT_TIMEOUT_MS);
    const { graph, outputs, warnings } = await this.buildGraph(host, batch, signal);
    // Without the socket open, this prompt's messages would go nowhere; polling covers a failure.
    await opened;

    const follower = new PromptFollower(
      (p) => io.progress(p),
      this.config.previews ? (frame, k) => io.partialImage({ index: 0, partialIndex: k, data: frame.data, mediaType: frame.mediaType }) : undefined,
    );
    let promptId: string = randomUUID();
    let unwatch = socket.watch(promptId, follower);
    try {
      // Not abortable: a submit cut off after the host took it would leave a prompt nobody cancels.
      // A cancel that comes meanwhile is handled right after, by deleting or interrupting it.
      const res = await hostRequest(this.http, host, '/prompt', {
        json: { prompt: graph, client_id: socket.clientId, prompt_id: promptId },
      });
      const body = (await readJson(res)) as { prompt_id?: unknown; node_errors?: Record<string, unknown>; error?: unknown } | undefined;
      if (res.status === 400) throw validationError(this.name, host, graph, body);
      if (!res.ok) {
        throw new BackendError(`Backend "${this.name}": host ${host.name} answered ${res.status} to /prompt`, { code: 'backend_error', status: res.status });
      }
      if (typeof body?.prompt_id === 'string' && body.prompt_id !== promptId) {
        // A server from before client-chosen ids: follow the id it gave.
        unwatch();
        promptId = body.prompt_id;
        unwatch = socket.watch(promptId, follower);
      }
      if (body?.node_errors && Object.keys(body.node_errors).length > 0) {
        // Queued with some outputs dropped: not what was asked for.
        await this.cancelPrompt(host, promptId, follower, AbortSignal.timeout(5000)).catch(() => {});
        throw validationError(this.name, host, graph, body);
      }
      const id = promptId;
      io.saveState((m) => ({ backend: 'comfyui', host: host.name, promptId: id, seed: batch.seed, batchIndex: m.offset, batchSize: batch.total, ...(outputs ? { outputs } : {}) }));

      const outcome = await this.follow(host, socket, promptId, follower, signal);
      io.release();
      if (outcome.kind === 'error') throw executionError(this.name, host, outcome.data);
      if (outcome.kind === 'interrupted') {
        // Not ours (we were not cancelled): someone interrupted the host. Run it elsewhere.
        throw new HostFailure(`host ${host.name} interrupted the prompt at node ${String(outcome.data.node_id ?? '?')}`, { hostDown: false });
      }
      const entry = outcome.history ?? (await this.finishedHistory(host, promptId, signal));
      if (entry.status?.status_str === 'error') throw executionError(this.name, host, historyError(entry));
      const images = await this.fetchOutputs(host, entry, outputs, signal);
      for (const img of images) img.seed = batch.seed;
      return { images, warnings, providerMetadata: { promptId, host: host.name } };
    } finally {
      unwatch();
    }
  }

  /**
   * A later attempt of a job whose prompt an earlier attempt queued (the worker crashed or was
   * restarted while waiting): when the host still has that prompt, finished or still queued, its
   * images are taken from it instead of running the workflow again. Anything else (the host is gone
   * from the config or unreachable, the prompt lost or failed) answers undefined: submit afresh.
   */
  private async resume(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult | undefined> {
    const state = savedPrompt(ctx.savedState);
    const host = state && this.pool.hosts.find((h) => h.name === state.host);
    if (!state || !host || host.status === 'down') return undefined;
    const { signal } = ctx;
    const started = performance.now();
    let entry: HistoryEntry | undefined;
    try {
      entry = await this.history(host, state.promptId, signal);
      if (!entry) {
        if (!(await this.isQueued(host, state.promptId, signal))) return undefined;
        // Still queued or running there: follow it to its end, as the first attempt would have.
        const socket = this.socketFor(host);
        await socket.ensureOpen(CONNECT_TIMEOUT_MS).catch(() => {}); // polling covers a socket that will not open
        const follower = new PromptFollower((p) => ctx.reportProgress(p));
        const unwatch = socket.watch(state.promptId, follower);
        try {
          const outcome = await this.follow(host, socket, state.promptId, follower, signal);
          if (outcome.kind !== 'success') return undefined;
          entry = outcome.history ?? (await this.finishedHistory(host, state.promptId, signal));
        } finally {
          unwatch();
        }
      }
      if (entry.status?.status_str === 'error') return undefined;
      const images = (await this.fetchOutputs(host, entry, state.outputs, signal)).slice(state.batchIndex, state.batchIndex + request.n);
      if (images.length === 0) return undefined;
      for (const img of images) img.seed = state.seed;
      const ran = executionMs(entry);
      return {
        images,
        warnings: [],
        providerMetadata: {
          gpuMs: ran ?? performance.now() - started,
          promptId: state.promptId,
          host: host.name,
          resumed: true,
          batch: { size: state.batchSize, seed: state.seed, firstIndex: state.batchIndex },
        },
      };
    } catch (err) {
      if (signal.aborted) throw new BackendError(`Call to backend "${this.name}" was aborted`, { code: 'aborted', cause: signal.reason });
      // The host could not give it back: run it again rather than fail the job.
      if (err instanceof BackendError) return undefined;
      throw err;
    }
  }

  /** Waits for the prompt's end, over the websocket and, while it is down, by polling history. */
  private async follow(host: PoolHost, socket: ComfySocket, promptId: string, follower: PromptFollower, signal: AbortSignal): Promise<Outcome> {
    const hostLostMs = this.config.hostLostAfterSeconds * 1000;
    // Even with the socket up, look at the host now and then: a host that vanished without closing
    // the connection (power loss) or a prompt lost to a restart shows up there.
    const checkEveryMs = Math.max(this.config.historyPollMs, hostLostMs / 3);
    let nextCheck = Date.now() + checkEveryMs;
    let seenGeneration = socket.open ? socket.generation : -1;
    let lastContact = Date.now();
    let missing = 0;
    const aborted = new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', () => resolve(), { once: true });
    });
    // Wakes on a message for the prompt, a socket open/close, the abort or the timer; whichever
    // comes first, the other waits are dropped.
    const wait = async (ms: number, onSocket: boolean) => {
      const done = new AbortController();
      await Promise.race([follower.changed(done.signal), ...(onSocket ? [socket.changed(done.signal)] : []), aborted, sleep(ms, done.signal)]);
      done.abort();
    };
    for (;;) {
      if (follower.outcome) return follower.outcome;
      if (signal.aborted) {
        await this.cancelPrompt(host, promptId, follower, AbortSignal.timeout(5000)).catch(() => {});
        throw new BackendError(`Call to backend "${this.name}" was aborted`, { code: 'aborted', cause: signal.reason });
      }
      const now = Date.now();
      if (socket.open && socket.generation === seenGeneration && now < nextCheck) {
        await wait(nextCheck - now, true);
        continue;
      }
      // The socket is down, or was reopened and messages may have been missed, or it is time to look.
      if (socket.open) seenGeneration = socket.generation;
      else void socket.ensureOpen(CONNECT_TIMEOUT_MS);
      nextCheck = now + checkEveryMs;
      try {
        const entry = await this.history(host, promptId, signal);
        lastContact = Date.now();
        if (entry) return follower.outcome ?? historyOutcome(entry);
        if (await this.isQueued(host, promptId, signal)) missing = 0;
        // Two looks apart: it may have finished between the history and the queue reads.
        else if (++missing >= 2) throw new HostFailure(`host ${host.name} lost prompt ${promptId} (restarted?)`, { hostDown: false });
      } catch (err) {
        if (signal.aborted) continue;
        if (!(err instanceof HostFailure) || !err.hostDown) throw err;
        if (Date.now() - lastContact > hostLostMs) {
          throw new HostFailure(`host ${host.name} stopped answering while running prompt ${promptId}: ${err.message}`, { cause: err });
        }
      }
      if (follower.outcome) continue;
      if (socket.open) {
        if (missing > 0) nextCheck = Date.now() + this.config.historyPollMs;
        continue;
      }
      await wait(this.config.historyPollMs, true);
    }
  }

  /** Cancel: delete it from the queue if pending; interrupt only if it is the one running. */
  private async cancelPrompt(host: PoolHost, promptId: string, follower: PromptFollower, signal: AbortSignal): Promise<void> {
    const opts = { signal, timeoutMs: 5000 };
    await hostRequest(this.http, host, '/queue', { ...opts, json: { delete: [promptId] } }).then((r) => r.body?.cancel());
    const queue = (await readJson(await hostRequest(this.http, host, '/queue', opts))) as { queue_running?: unknown[] } | undefined;
    const running = (queue?.queue_running ?? []).some((item) => Array.isArray(item) && item[1] === promptId);
    if (!running) return;
    await hostRequest(this.http, host, '/interrupt', { ...opts, json: { prompt_id: promptId } }).then((r) => r.body?.cancel());
    // Hold the host slot until it has actually stopped, so the next prompt's clock starts then.
    if (!follower.outcome) {
      const done = new AbortController();
      await Promise.race([follower.changed(done.signal), sleep(CANCEL_SETTLE_MS, done.signal)]);
      done.abort();
    }
  }

  private async history(host: PoolHost, promptId: string, signal: AbortSignal): Promise<HistoryEntry | undefined> {
    const res = await hostRequest(this.http, host, `/history/${encodeURIComponent(promptId)}`, { signal });
    const body = (await readJson(res)) as Record<string, HistoryEntry> | undefined;
    const entry = body?.[promptId];
    if (!entry) return undefined;
    // An entry is written once the prompt has ended; `completed` false with an error status is an error end.
    return entry;
  }

  private async isQueued(host: PoolHost, promptId: string, signal: AbortSignal): Promise<boolean> {
    const q = (await readJson(await hostRequest(this.http, host, '/queue', { signal }))) as { queue_running?: unknown[]; queue_pending?: unknown[] } | undefined;
    const has = (items: unknown[] | undefined) => (items ?? []).some((item) => Array.isArray(item) && item[1] === promptId);
    return has(q?.queue_running) || has(q?.queue_pending);
  }

  /** History right after the end message; written before it, but read defensively. */
  private async finishedHistory(host: PoolHost, promptId: string, signal: AbortSignal): Promise<HistoryEntry> {
    for (let attempt = 0; attempt < 7; attempt++) {
      const entry = await this.history(host, promptId, signal);
      if (entry) return entry;
      await sleep(25 * 2 ** attempt, signal);
    }
    throw new HostFailure(`host ${host.name} finished prompt ${promptId} but has no history for it`, { hostDown: false });
  }

  private async fetchOutputs(host: PoolHost, entry: HistoryEntry, outputs: string[] | undefined, signal: AbortSignal): Promise<BackendImage[]> {
    const all = entry.outputs ?? {};
    const ids = outputs ?? Object.keys(all).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
    const files = ids.flatMap((id) => (all[id]?.images ?? []).filter((f) => outputs || (f.type ?? 'output') === 'output'));
    if (files.length === 0) {
      throw new BackendError(`Backend "${this.name}": the workflow saved no image on host ${host.name}`, { code: 'backend_error' });
    }
    return Promise.all(
      files.map(async (f) => {
        const q = new URLSearchParams({ filename: f.filename, subfolder: f.subfolder ?? '', type: f.type ?? 'output' });
        const res = await hostRequest(this.http, host, `/view?${q}`, { signal });
        if (!res.ok) {
          await res.body?.cancel();
          throw new HostFailure(`host ${host.name} answered ${res.status} for its output ${f.filename}`, { hostDown: false, status: res.status });
        }
        const data = await readBytes(res, host, `image ${f.filename}`);
        const mediaType = sniffImageType(data) ?? res.headers.get('content-type')?.split(';')[0] ?? 'image/png';
        return { data, mediaType };
      }),
    );
  }

  // ---- graphs --------------------------------------------------------------------------------

  /**
   * The graph of one batch. Provider options are only what the model's spec declares (guarded keys
   * and the rest are dropped with warnings); easel's mapped fields are written last.
   */
  private async buildGraph(host: PoolHost, batch: PoolBatch, signal: AbortSignal): Promise<{ graph: ApiGraph; outputs: string[] | undefined; warnings: BackendWarning[] }> {
    const req = batch.request;
    const accepted = acceptedOptions(req.providerOptions, this.modelSpec(req.model).providerOptions, { backend: this.name, model: req.model });
    const warnings: BackendWarning[] = [...accepted.warnings];
    const opts = accepted.options;
    const wf = this.workflows.get(req.model);
    for (const key of ['quality', 'style'] as const) {
      if (req[key] !== undefined) warnings.push(unsupported(key, `${key} is not supported by backend "${this.name}"; ignored`));
    }
    if (req.background && req.background !== 'auto') warnings.push(unsupported('background', `background is not supported by backend "${this.name}"; ignored`));

    const image = req.inputImages[0] ? await this.upload(host, req.inputImages[0], signal) : undefined;
    const mask = req.mask ? await this.uploadMask(host, req.mask, signal) : undefined;

    if (wf) {
      const d = wf.defaults;
      const size = req.size ? fitSize(req.size, warnings) : undefined;
      const values: Partial<Record<WorkflowField, unknown>> = {
        prompt: req.prompt,
        negativePrompt: req.negativePrompt,
        seed: batch.seed,
        steps: req.steps ?? d.steps,
        cfg: req.guidanceScale ?? d.cfg,
        width: size?.width ?? d.width,
        height: size?.height ?? d.height,
        batchSize: batch.total,
        sampler: str(opts.sampler) ?? str(opts.sampler_name) ?? d.sampler,
        scheduler: str(opts.scheduler) ?? d.scheduler,
        denoise: num(opts.denoise) ?? num(opts.strength) ?? d.denoise,
        image,
        mask: mask?.name,
      };
      for (const [field, value] of Object.entries(values)) {
        if (value === undefined || wf.inputs[field as WorkflowField]) continue;
        const asked =
          (field === 'negativePrompt' && req.negativePrompt) ||
          (field === 'steps' && req.steps !== undefined) ||
          (field === 'cfg' && req.guidanceScale !== undefined) ||
          ((field === 'width' || field === 'height') && req.size) ||
          (field === 'seed' && !batch.seedChosen);
        const setting = { negativePrompt: 'negative_prompt', cfg: 'guidance_scale', width: 'size', height: 'size' }[field] ?? field;
        if (asked) warnings.push(unsupported(setting, `workflow "${wf.name}" has no input for ${field}; ignored`));
      }
      if (batch.total > 1 && !wf.inputs.batchSize) warnings.push(unsupported('n', `workflow "${wf.name}" has no batch size input; it makes what it makes`));
      const declared = Object.fromEntries(Object.keys(wf.options).map((name) => [name, opts[name]]));
      if ((req.loras?.length ?? 0) > wf.loraSlots.length) throw new BackendError(`Workflow "${wf.name}" on backend "${this.name}" has ${wf.loraSlots.length} LoRA slot(s); ${req.loras!.length} LoRAs were asked`, { code: 'invalid_request' });
      return { graph: applyWorkflow(wf, values, declared, req.loras), outputs: wf.outputs, warnings };
    }

    const ckpt = this.config.checkpoints[req.model] ?? {};
    const family: CheckpointFamily = ckpt.family ?? guessFamily(req.model);
    const fam = FAMILY_DEFAULTS[family];
    const def = this.config.defaults;
    const edit = req.kind !== 'generation';
    const size = req.size ? fitSize(req.size, warnings) : { width: ckpt.width ?? def.width ?? fam.width, height: ckpt.height ?? def.height ?? fam.height };
    const batchIndex = num(opts.batch_index);
    const graph = buildTemplate({
      family,
      checkpoint: req.model,
      prompt: req.kind === 'variation' ? (req.prompt ?? '') : req.prompt,
      negativePrompt: req.negativePrompt ?? ckpt.negativePrompt ?? def.negativePrompt ?? '',
      width: size.width,
      height: size.height,
      batchSize: batch.total,
      seed: batch.seed,
      steps: req.steps ?? ckpt.steps ?? def.steps ?? fam.steps,
      cfg: req.guidanceScale ?? ckpt.cfg ?? def.cfg ?? fam.cfg,
      sampler: str(opts.sampler) ?? str(opts.sampler_name) ?? ckpt.sampler ?? def.sampler ?? fam.sampler,
      scheduler: str(opts.scheduler) ?? ckpt.scheduler ?? def.scheduler ?? fam.scheduler,
      denoise: edit ? (num(opts.denoise) ?? num(opts.strength) ?? (req.kind === 'variation' ? def.variationDenoise : def.denoise)) : 1,
      image,
      mask,
      scaleInput: edit && req.size !== undefined,
      batchIndex: batchIndex !== undefined && batchIndex > 0 ? Math.floor(batchIndex) : undefined,
      filenamePrefix: this.config.filenamePrefix,
      loras: req.loras,
    });
    return { graph, outputs: [TEMPLATE_OUTPUT_NODE], warnings };
  }

  /** Uploads an input image; returns how LoadImage names it (`subfolder/name`). */
  private async upload(host: PoolHost, image: BackendImageInput, signal: AbortSignal, suffix = ''): Promise<string> {
    const ext = image.mediaType === 'image/jpeg' ? 'jpg' : image.mediaType === 'image/webp' ? 'webp' : 'png';
    const hash = createHash('sha256').update(image.data).digest('hex').slice(0, 24);
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(image.data)], { type: image.mediaType }), `easel-${hash}${suffix}.${ext}`);
    form.append('type', 'input');
    form.append('overwrite', 'true');
    if (this.config.uploadSubfolder) form.append('subfolder', this.config.uploadSubfolder);
    const res = await hostRequest(this.http, host, '/upload/image', { body: form, signal });
    const body = (await readJson(res)) as { name?: unknown; subfolder?: unknown } | undefined;
    if (!res.ok || typeof body?.name !== 'string') {
      throw new BackendError(`Backend "${this.name}": host ${host.name} refused the input image upload (${res.status})`, { code: 'backend_error', status: res.status });
    }
    const sub = typeof body.subfolder === 'string' ? body.subfolder : '';
    return sub ? `${sub}/${body.name}` : body.name;
  }

  private async uploadMask(host: PoolHost, mask: BackendImageInput, signal: AbortSignal): Promise<{ name: string; alpha: boolean }> {
    let alpha = true;
    try {
      alpha = (await sharp()(mask.data).metadata()).hasAlpha ?? false;
    } catch {
      throw new BackendError(`Backend "${this.name}": the mask is not a readable image`, { code: 'invalid_request' });
    }
    return { name: await this.upload(host, mask, signal, '-mask'), alpha };
  }

  // ---- health --------------------------------------------------------------------------------

  private async probe(host: PoolHost, signal: AbortSignal): Promise<ProbeResult> {
    const res = await hostRequest(this.http, host, '/system_stats', { signal });
    const stats = (await readJson(res)) as { devices?: Array<{ vram_free?: number; vram_total?: number }> } | undefined;
    if (!res.ok || !stats) return { ok: false, message: `/system_stats answered ${res.status}` };
    const device = stats.devices?.[0];
    const result: ProbeResult = { ok: true, freeVramBytes: device?.vram_free, totalVramBytes: device?.vram_total };
    const at = this.checkpointsAt.get(host.name) ?? 0;
    const fresh = host.status === 'up' || host.status === 'warming';
    if (!fresh || Date.now() - at > CHECKPOINT_REFRESH_MS) {
      const list = await this.listCheckpoints(host, signal).catch(() => undefined);
      if (list) {
        result.checkpoints = list;
        this.checkpointsAt.set(host.name, Date.now());
      }
    }
    const lorasAt = this.lorasAt.get(host.name) ?? 0;
    if (!fresh || host.loras === undefined || Date.now() - lorasAt > this.config.loraRefreshSeconds * 1000) {
      const list = await this.listLoras(host, signal).catch(() => undefined);
      if (list) {
        result.loras = list;
        this.lorasAt.set(host.name, Date.now());
      }
    }
    return result;
  }

  /** LoRA files from `/object_info/LoraLoader` (`[[…]]` or `["COMBO", {options}]`), else `/models/loras` (PROTOCOLS.md §11 B1). */
  private async listLoras(host: PoolHost, signal: AbortSignal): Promise<string[] | undefined> {
    const info = (await readJson(await hostRequest(this.http, host, '/object_info/LoraLoader', { signal }))) as Record<string, { input?: { required?: { lora_name?: unknown[] } } }> | undefined;
    const listed = comboValues(info?.LoraLoader?.input?.required?.lora_name);
    if (listed) return listed;
    const res = await hostRequest(this.http, host, '/models/loras', { signal });
    if (res.status === 404) {
      await res.body?.cancel();
      return [];
    }
    const list = await readJson(res);
    return res.ok && Array.isArray(list) ? list.filter((x): x is string => typeof x === 'string') : undefined;
  }

  /**
   * The warm-up (config `warmup`): one small image of the checkpoint (or workflow) the host should
   * have ready, through the normal graph and prompt path; its image is dropped.
   */
  private async warmup(host: PoolHost, signal: AbortSignal): Promise<void> {
    const w = this.config.warmup!;
    const model = w.model ?? host.loaded ?? Object.keys(this.config.checkpoints)[0] ?? host.checkpoints?.[0];
    if (!model) return;
    const request: BackendRequest = { kind: 'generation', model, prompt: w.prompt, n: 1, size: { width: w.width, height: w.height }, steps: w.steps, outputFormat: 'png', inputImages: [], providerOptions: {} };
    const batch: PoolBatch = { request, checkpoint: this.workflows.get(model)?.checkpoint ?? model, members: [], total: 1, seed: 0, seedChosen: true, attempt: 0 };
    await this.runBatch(host, batch, { signal, progress: () => {}, partialImage: () => {}, release: () => {}, saveState: () => {} });
    host.loaded = batch.checkpoint;
  }

  /** Checkpoints from `/object_info/CheckpointLoaderSimple` (older: `[[…]]`, newer: `["COMBO", {options}]`), else `/models/checkpoints`. */
  private async listCheckpoints(host: PoolHost, signal: AbortSignal): Promise<string[] | undefined> {
    const info = (await readJson(await hostRequest(this.http, host, '/object_info/CheckpointLoaderSimple', { signal }))) as
      | Record<string, { input?: { required?: { ckpt_name?: unknown[] } } }>
      | undefined;
    const listed = comboValues(info?.CheckpointLoaderSimple?.input?.required?.ckpt_name);
    if (listed) return listed;
    const res = await hostRequest(this.http, host, '/models/checkpoints', { signal });
    const list = await readJson(res);
    return res.ok && Array.isArray(list) ? list.filter((x): x is string => typeof x === 'string') : undefined;
  }
}

// ---- helpers ---------------------------------------------------------------------------------

const str = (v: unknown): string | undefined => (typeof v === 'string' && v ? v : undefined);

/** A combo input's values from `/object_info`: `[[…values], {opts}]`, or V3's `["COMBO", {options: […]}]`. */
export function comboValues(spec: unknown): string[] | undefined {
  if (!Array.isArray(spec)) return undefined;
  if (Array.isArray(spec[0])) return spec[0].filter((x): x is string => typeof x === 'string');
  const options = (spec[1] as { options?: unknown } | undefined)?.options;
  return Array.isArray(options) ? options.filter((x): x is string => typeof x === 'string') : undefined;
}
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Latent sizes are multiples of 8. */
function fitSize(size: { width: number; height: number }, warnings: BackendWarning[]): { width: number; height: number } {
  const fit = (v: number) => Math.max(16, Math.round(v / 8) * 8);
  const out = { width: fit(size.width), height: fit(size.height) };
  if (out.width !== size.width || out.height !== size.height) warnings.push(compatibility('size', `size ${size.width}x${size.height} was rounded to ${out.width}x${out.height} (multiples of 8)`));
  return out;
}

/** What runBatch saved on the job before waiting on a prompt. */
interface SavedPrompt {
  host: string;
  promptId: string;
  seed: number;
  batchIndex: number;
  batchSize: number;
  outputs?: string[];
}

function savedPrompt(state: unknown): SavedPrompt | undefined {
  if (!state || typeof state !== 'object') return undefined;
  const s = state as Record<string, unknown>;
  if (s.backend !== 'comfyui' || typeof s.host !== 'string' || typeof s.promptId !== 'string') return undefined;
  if (typeof s.seed !== 'number' || typeof s.batchIndex !== 'number' || typeof s.batchSize !== 'number') return undefined;
  const outputs = Array.isArray(s.outputs) && s.outputs.every((o) => typeof o === 'string') ? (s.outputs as string[]) : undefined;
  return { host: s.host, promptId: s.promptId, seed: s.seed, batchIndex: s.batchIndex, batchSize: s.batchSize, outputs };
}

/** How long the prompt ran on the host, from its history's start and success messages (ms timestamps). */
function executionMs(entry: HistoryEntry): number | undefined {
  const at = (name: string) => entry.status?.messages?.find((m) => m[0] === name)?.[1]?.timestamp;
  const start = at('execution_start');
  const end = at('execution_success');
  return typeof start === 'number' && typeof end === 'number' && end >= start ? end - start : undefined;
}

function historyOutcome(entry: HistoryEntry): Outcome {
  if (entry.status?.status_str === 'error') {
    const interrupted = entry.status.messages?.find((m) => m[0] === 'execution_interrupted');
    if (interrupted) return { kind: 'interrupted', data: interrupted[1] };
    return { kind: 'error', data: historyError(entry) };
  }
  return { kind: 'success', history: entry };
}

function historyError(entry: HistoryEntry): Record<string, unknown> {
  return entry.status?.messages?.find((m) => m[0] === 'execution_error')?.[1] ?? { exception_message: 'the prompt ended with an error' };
}

function executionError(backend: string, host: PoolHost, data: Record<string, unknown>): BackendError {
  const node = data.node_id !== undefined ? `node ${String(data.node_id)}${data.node_type ? ` (${String(data.node_type)})` : ''}` : 'a node';
  const type = typeof data.exception_type === 'string' ? data.exception_type : '';
  const message = String(data.exception_message ?? 'failed').trim();
  const text = `Backend "${backend}": ${node} failed on host ${host.name}: ${type ? `${type}: ` : ''}${message}`;
  // Out of GPU memory is the host's state, not the request's: another host may manage it.
  if (/OutOfMemory|out of memory/i.test(`${type} ${message}`)) return new HostFailure(text, { hostDown: false });
  return new BackendError(text, { code: 'backend_error' });
}

interface NodeErrorBody {
  error?: { type?: string; message?: string; details?: string } | string;
  node_errors?: Record<string, { errors?: Array<{ type?: string; message?: string; details?: string }>; class_type?: string }>;
}

/** A 400 (or 200 with node_errors) from /prompt, as a job error that names the node(s) and input(s). */
function validationError(backend: string, host: PoolHost, graph: ApiGraph, raw: unknown): BackendError {
  const body = (raw ?? {}) as NodeErrorBody;
  const nodes = Object.entries(body.node_errors ?? {}).map(([id, ne]) => {
    const cls = ne.class_type ?? graph[id]?.class_type ?? '?';
    const errs = (ne.errors ?? []).map((e) => [e.message, e.details].filter(Boolean).join(': ')).join('; ');
    return `node ${id} (${cls}): ${errs || 'invalid'}`;
  });
  const top = typeof body.error === 'string' ? body.error : [body.error?.message, nodes.length ? '' : body.error?.details].filter(Boolean).join(': ');
  const text = `Backend "${backend}": host ${host.name} rejected the workflow${top ? ` (${top})` : ''}${nodes.length ? `: ${nodes.join('; ')}` : ''}`;
  return new BackendError(text, { code: 'invalid_request', status: 400 });
}
