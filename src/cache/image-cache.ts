/**
 * The image cache: earlier finished generations answering later requests at no cost.
 *
 * - **Exact**: a canonical key over everything that determines the image: the normalised prompt
 *   (Unicode NFKC, trimmed, whitespace collapsed, lower-cased), model, n, size, quality, style,
 *   negative prompt, steps, guidance, seed, background, output format and compression, provider
 *   options. Used when the request has an explicit seed (the same seed gives the same image), or
 *   allows reuse (`Easel-Cache: reuse`).
 * - **Semantic** (`Easel-Cache: similar`, with `cache.semantic.enabled`): the prompt's embedding is
 *   compared (cosine) with the most recent entries of the same settings (`params_key`: all of the
 *   above but the prompt); the most similar at or above the threshold answers.
 *
 * Entries live `ttlSeconds`; a key in `cache.optOutKeys`, or a request with `Easel-Cache: off`,
 * neither uses nor fills the cache. A key is answered only with its own images, or with images of
 * the keys it shares a `cache.shareGroups` group with; a hit from another key never names that
 * key's job.
 * A hit copies the source's images under the new job (so retention of the source cannot break it),
 * and the job records the hit, its source and the money saved.
 */
import { createHash } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { newImageId, ulid } from '../core/ids.ts';
import type { ImageRequest } from '../core/image-request.ts';
import type { Job, JobKind, StoredImage } from '../core/job.ts';
import type { ImageStorage } from '../storage/image-storage.ts';
import type { MetadataDb } from '../store/database.ts';
import type { Database, NewRow } from '../store/schema.ts';
import type { ApiKey, JobStore } from '../store/job-store.ts';
import { imageKey, thumbKey } from '../images/keys.ts';
import type { CacheConfig } from './config.ts';
import type { SettleListener } from '../jobs/settle.ts';
import type { Embedder } from './embedders.ts';
import { cosine } from './embedders.ts';

export type CachePolicy = 'auto' | 'reuse' | 'similar' | 'off';
export const CACHE_POLICIES: readonly CachePolicy[] = ['auto', 'reuse', 'similar', 'off'];

export interface CacheHit {
  kind: 'exact' | 'semantic';
  entryId: string;
  sourceJobId: string;
  /** The key whose job made the images (another key of the caller's share group, or the caller). */
  sourceKeyId: string;
  similarity?: number;
  images: StoredImage[];
  /** The source's bytes, read at lookup so a hit whose files are gone is a miss, not a failure later. */
  copies?: { from: StoredImage; data: Buffer; contentType: string }[];
}

export interface CacheKeys {
  cacheKey: string;
  paramsKey: string;
  prompt: string;
}

export const normalizePrompt = (p: string): string => p.normalize('NFKC').trim().replace(/\s+/g, ' ').toLowerCase();

function stable(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stable).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${stable(v)}`)
      .join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

export function cacheKeys(model: string, r: ImageRequest): CacheKeys {
  const params = {
    model,
    n: r.n,
    size: r.size ? `${r.size.width}x${r.size.height}` : 'auto',
    quality: r.quality,
    style: r.style,
    negative: r.negativePrompt ? normalizePrompt(r.negativePrompt) : undefined,
    steps: r.steps,
    guidance: r.guidanceScale,
    seed: r.seed,
    background: r.background,
    format: r.outputFormat,
    compression: r.outputCompression,
    options: r.providerOptions,
    // The same prompt under another LoRA set (or weights) is another image.
    loras: r.loras?.length ? r.loras.map((l) => [l.name, l.weight]) : undefined,
  };
  const prompt = normalizePrompt(r.prompt);
  // stable(params) and stable({ ...params, prompt }), from one pass over the parameters.
  const fields = Object.entries(params)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => [k, `${JSON.stringify(k)}:${stable(v)}`] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const at = fields.findIndex(([k]) => k > 'prompt');
  const withPrompt = fields.map(([, f]) => f);
  withPrompt.splice(at < 0 ? withPrompt.length : at, 0, `"prompt":${JSON.stringify(prompt)}`);
  return { paramsKey: sha(`{${fields.map(([, f]) => f).join(',')}}`), cacheKey: sha(`{${withPrompt.join(',')}}`), prompt };
}

/** Float32 vectors are kept as `<embedder id>|<base64 of the bytes>`. */
export function encodeEmbedding(embedderId: string, v: Float32Array): string {
  return `${embedderId}|${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')}`;
}

export function decodeEmbedding(text: string, embedderId: string): Float32Array | undefined {
  const bar = text.lastIndexOf('|');
  if (bar < 0 || text.slice(0, bar) !== embedderId) return undefined;
  const buf = Buffer.from(text.slice(bar + 1), 'base64');
  return new Float32Array(buf.buffer, buf.byteOffset, Math.floor(buf.byteLength / 4)).slice();
}

export class ImageCache {
  readonly config: CacheConfig;
  readonly embedder: Embedder | undefined;
  private readonly db: Kysely<Database>;
  private readonly store: JobStore;
  private readonly storage: ImageStorage;
  private readonly log: Logger;
  private readonly vectors = new Map<string, Float32Array>();
  /** Entries waiting to be written: finished jobs are added in batches, one statement per flush. */
  private pending: NewRow<'image_cache'>[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  constructor(opts: { mdb: MetadataDb; store: JobStore; storage: ImageStorage; config: CacheConfig; embedder?: Embedder; log: Logger }) {
    this.db = opts.mdb.db;
    this.store = opts.store;
    this.storage = opts.storage;
    this.config = opts.config;
    this.embedder = opts.config.semantic.enabled ? opts.embedder : undefined;
    this.log = opts.log;
  }

  optedOut(key: Pick<ApiKey, 'id' | 'name'>): boolean {
    return this.config.optOutKeys.includes(key.id) || this.config.optOutKeys.includes(key.name);
  }

  /** Which lookups a request may make. */
  eligibility(key: Pick<ApiKey, 'id' | 'name'>, kind: JobKind, request: ImageRequest, policy: CachePolicy): { exact: boolean; semantic: boolean } {
    if (kind !== 'generation' || policy === 'off' || this.optedOut(key)) return { exact: false, semantic: false };
    const exact = this.config.exact.enabled && (policy === 'reuse' || policy === 'similar' || request.seed !== undefined);
    const semantic = !!this.embedder && policy === 'similar';
    return { exact, semantic };
  }

  /** Whether a finished job may fill the cache. */
  storable(kind: JobKind, policy: string | null | undefined): boolean {
    if (kind !== 'generation' || policy === 'off' || policy === 'opt_out') return false;
    return this.config.exact.enabled || !!this.embedder;
  }

  async embed(prompt: string): Promise<Float32Array | undefined> {
    if (!this.embedder) return undefined;
    try {
      return await this.embedder.embed(normalizePrompt(prompt));
    } catch (err) {
      this.log.warn({ err }, 'prompt embedding failed; the semantic cache is skipped for this request');
      return undefined;
    }
  }

  async lookupExact(keys: CacheKeys, keyIds: readonly string[]): Promise<CacheHit | undefined> {
    await this.flush();
    const q = this.db
      .selectFrom('image_cache')
      .select(['id', 'job_id', 'key_id'])
      .where('key_id', 'in', keyIds)
      .where('cache_key', '=', keys.cacheKey)
      .where('expires_at', '>', Date.now())
      .where('created_at', '>', Date.now() - this.config.exact.ttlSeconds * 1000);
    const rows = await q.orderBy('created_at', 'desc').limit(3).execute();
    for (const r of rows) {
      const images = await this.usable(r.id, r.job_id);
      if (images) return { kind: 'exact', entryId: r.id, sourceJobId: r.job_id, sourceKeyId: r.key_id, images };
    }
    return undefined;
  }

  async lookupSemantic(keys: CacheKeys, keyIds: readonly string[], vector: Float32Array): Promise<CacheHit | undefined> {
    if (!this.embedder) return undefined;
    await this.flush();
    const q = this.db
      .selectFrom('image_cache')
      .select(['id', 'job_id', 'key_id', 'embedding'])
      .where('key_id', 'in', keyIds)
      .where('params_key', '=', keys.paramsKey)
      .where('expires_at', '>', Date.now())
      .where('created_at', '>', Date.now() - this.config.semantic.ttlSeconds * 1000)
      .where('embedding', 'is not', null)
      .$narrowType<{ embedding: string }>();
    const rows = await q.orderBy('created_at', 'desc').limit(this.config.semantic.maxCandidates).execute();
    const scored: { id: string; job: string; key: string; sim: number }[] = [];
    for (const r of rows) {
      let v = this.vectors.get(r.id);
      if (!v) {
        v = decodeEmbedding(r.embedding, this.embedder.id);
        if (!v) continue;
        if (this.vectors.size > 20_000) this.vectors.clear();
        this.vectors.set(r.id, v);
      }
      const sim = cosine(vector, v);
      if (sim >= this.config.semantic.threshold) scored.push({ id: r.id, job: r.job_id, key: r.key_id, sim });
    }
    scored.sort((a, b) => b.sim - a.sim);
    for (const s of scored.slice(0, 3)) {
      const images = await this.usable(s.id, s.job);
      if (images) return { kind: 'semantic', entryId: s.id, sourceJobId: s.job, sourceKeyId: s.key, similarity: Math.round(s.sim * 1e4) / 1e4, images };
    }
    return undefined;
  }

  /** The source's images while they all still exist; otherwise the entry is dropped. */
  private async usable(entryId: string, jobId: string): Promise<StoredImage[] | undefined> {
    const job = await this.store.getJob(jobId);
    const images = job?.status === 'succeeded' ? await this.store.listImagesForJob(jobId) : [];
    if (images.length > 0 && images.length === (job?.result?.images.length ?? images.length)) return images;
    await this.db.deleteFrom('image_cache').where('id', '=', entryId).execute().catch(() => {});
    return undefined;
  }

  /** Reads the hit's image bytes; undefined (and the entry dropped) when any is gone from storage. */
  async load(hit: CacheHit): Promise<CacheHit | undefined> {
    const copies: NonNullable<CacheHit['copies']> = [];
    for (const img of hit.images) {
      const obj = await this.storage.get(img.storageKey).catch(() => undefined);
      if (!obj) {
        await this.db.deleteFrom('image_cache').where('id', '=', hit.entryId).execute().catch(() => {});
        return undefined;
      }
      copies.push({ from: img, data: obj.data, contentType: obj.contentType });
    }
    return { ...hit, copies };
  }

  /**
   * Admission's lookup: the exact cache (seeded requests, `reuse`), then the semantic one (`similar`).
   * A hit is only a hit once its bytes are read. Returns the prompt's embedding too when one was
   * made, so the job's entry need not embed it again.
   */
  async lookup(input: { key: Pick<ApiKey, 'id' | 'name'>; kind: JobKind; model: string; request: ImageRequest; policy: CachePolicy }): Promise<{ hit?: CacheHit; embedding?: string }> {
    const elig = this.eligibility(input.key, input.kind, input.request, input.policy);
    if (!elig.exact && !elig.semantic) return {};
    const keys = cacheKeys(input.model, input.request);
    const loaded = async (h: CacheHit | undefined) => (h ? await this.load(h) : undefined);
    const sharing = await this.sharingKeys(input.key);
    let hit: CacheHit | undefined;
    if (elig.exact) {
      hit = await this.lookupExact(keys, sharing).then(loaded).catch((err) => (this.log.warn({ err }, 'cache lookup failed'), undefined));
      this.onLookup('exact', !!hit);
      if (hit) return { hit };
    }
    if (!elig.semantic) return {};
    const v = await this.embed(input.request.prompt);
    if (!v) return {};
    const embedding = encodeEmbedding(this.embedder!.id, v);
    hit = await this.lookupSemantic(keys, sharing, v).then(loaded).catch((err) => (this.log.warn({ err }, 'semantic cache lookup failed'), undefined));
    this.onLookup('semantic', !!hit);
    return { hit, embedding };
  }

  /**
   * The keys whose images may answer this key: itself, and every key it shares a `cache.shareGroups`
   * group with (groups name keys by name or id; names are resolved through `resolveKeys`, cached).
   */
  async sharingKeys(key: Pick<ApiKey, 'id' | 'name'>): Promise<string[]> {
    const groups = Object.values(this.config.shareGroups).filter((members) => members.includes(key.id) || members.includes(key.name));
    if (groups.length === 0) return [key.id];
    const all = await this.keyDirectory();
    const ids = new Set([key.id]);
    for (const members of groups) for (const m of members) for (const k of all) if (k.id === m || k.name === m) ids.add(k.id);
    return [...ids];
  }

  /** Keys by id and name, for share groups; re-read at most once a minute. */
  private directory: { at: number; keys: { id: string; name: string }[] } | undefined;
  private async keyDirectory(): Promise<{ id: string; name: string }[]> {
    if (!this.directory || Date.now() - this.directory.at > 60_000) {
      const keys = this.resolveKeys ? await this.resolveKeys() : [];
      this.directory = { at: Date.now(), keys: keys.map((k) => ({ id: k.id, name: k.name })) };
    }
    return this.directory.keys;
  }

  /** Every live key (for resolving share groups by name); set by the runtime. */
  resolveKeys: (() => Promise<Pick<ApiKey, 'id' | 'name'>[]>) | undefined;

  /** Called per lookup (metrics). */
  onLookup: (kind: 'exact' | 'semantic', hit: boolean) => void = () => {};

  /**
   * The hit's images copied under the job's own keys (so retention of the source cannot break it);
   * undefined when the source's bytes are gone.
   */
  async copyFor(job: Job, hit: CacheHit): Promise<StoredImage[] | undefined> {
    const loaded = hit.copies ? hit : await this.load(hit);
    if (!loaded) return undefined;
    return Promise.all(
      loaded.copies!.map(async ({ from, data, contentType }) => {
        const ext = from.storageKey.split('.').pop() ?? 'png';
        const storageKey = imageKey(job.id, from.index, ext);
        await this.storage.put(storageKey, data, contentType);
        // The gallery thumbnail (when the source has one) is copied too, so it outlives the source.
        let thumb: string | null = null;
        if (from.thumbKey) {
          const t = await this.storage.get(from.thumbKey).catch(() => undefined);
          if (t) {
            thumb = thumbKey(job.id, from.index);
            await this.storage.put(thumb, t.data, t.contentType);
          }
        }
        return { ...from, id: newImageId(), jobId: job.id, keyId: job.keyId, storageKey, thumbKey: thumb, createdAt: new Date() };
      }),
    );
  }

  /** Counts an answered hit on its entry. */
  async countHit(entryId: string): Promise<void> {
    await this.db.updateTable('image_cache').set((eb) => ({ hits: eb('hits', '+', 1) })).where('id', '=', entryId).execute();
  }

  /** Fills the cache with a finished generation (not one the cache answered), unless its policy says not to. */
  readonly listener: SettleListener = {
    name: 'cache',
    phase: 'ledger',
    onSettled: async ({ job, end, costs }) => {
      if (end.status !== 'succeeded' || end.cache || costs?.cache_kind) return;
      if (!this.storable(job.kind, costs?.cache_policy)) return;
      await this.record(job, end.costUsd, costs?.embedding ?? null);
    },
  };

  /** Adds a finished generation to the cache. */
  async record(job: Job, costUsd: number | null, embedding: string | null): Promise<void> {
    const keys = cacheKeys(job.model, job.request);
    let emb = embedding;
    if (this.embedder && (!emb || decodeEmbedding(emb, this.embedder.id) === undefined)) {
      const v = await this.embed(job.request.prompt);
      emb = v ? encodeEmbedding(this.embedder.id, v) : null;
    }
    const now = Date.now();
    const ttl = Math.max(this.config.exact.ttlSeconds, this.embedder ? this.config.semantic.ttlSeconds : 0) * 1000;
    this.pending.push({
      id: `cache_${ulid()}`,
      cache_key: keys.cacheKey,
      params_key: keys.paramsKey,
      job_id: job.id,
      key_id: job.keyId,
      model: job.model,
      prompt: keys.prompt.slice(0, 2000),
      embedding: emb,
      cost_usd: costUsd,
      hits: 0,
      created_at: now,
      expires_at: now + ttl,
    });
    if (this.pending.length >= 200) await this.flush();
    else if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => void this.flush().catch((err) => this.log.warn({ err }, 'writing cache entries failed')), 50);
      this.flushTimer.unref();
    }
  }

  /** Writes the waiting entries now (lookups in this process call it first, so they see them). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.pending.length === 0) return;
    const rows = this.pending;
    this.pending = [];
    this.flushing = (async () => {
      for (let i = 0; i < rows.length; i += 200) await this.db.insertInto('image_cache').values(rows.slice(i, i + 200)).execute();
    })().finally(() => {
      this.flushing = undefined;
    });
    await this.flushing;
  }

  /** Deletes expired entries (the images stay with their jobs). */
  async purgeExpired(): Promise<number> {
    const r = await this.db.deleteFrom('image_cache').where('expires_at', '<=', Date.now()).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}
