/**
 * The router: turns what a client asked for (a concrete model, an alias, or nothing) into the
 * backend a job runs on, and records why.
 *
 * - **Aliases**: quality tiers (`preview`, `standard`, `premium`) and use-case presets
 *   (`thumbnail`, `product_shot`, `blog_image`, `og_image`, `hero_image`, `print`, …) name a set of
 *   candidate models (a list, or every model of a tier) and may choose the size, quality and steps
 *   the use needs. Shipped defaults are merged with `routing.aliases`. A model name always wins over
 *   an alias of the same name.
 * - **Candidates** must be able to do the job: its kind (generation, edit with N input images and a
 *   mask, variation), the size asked for (where the model's sizes are known), and, for prompts that
 *   ask for text in the image, a model that renders text when there is one. Of those, the cheapest
 *   (price table or self-hosted cost model) that is healthy, not overloaded and whose circuit is
 *   closed wins; the others, cheapest first, are its fallback chain.
 * - **Concrete models** run where they are configured, unless their backend is down, overloaded or
 *   its circuit is open and a declared fallback (`routing.fallback`, `models[].fallback`) is not.
 * - **At run time** the worker asks again (`pickForAttempt`): a job whose backend failed, or whose
 *   circuit opened or which became overloaded while it waited, moves down its chain.
 */
import type { ImageRequest, ImageSize } from '../core/image-request.ts';
import type { JobKind } from '../core/job.ts';
import type { BackendHealth, ImageBackend } from '../backends/image-backend.ts';
import type { BackendRegistry, ResolvedModel } from '../backends/registry.ts';
import type { ModelConfig } from '../config/schema.ts';
import { capabilityProblem, inferTextInImage as inferText, inferTier as inferModelTier, loraProblem, providerOptionsProblem, sizeProblem } from '../backends/model-spec.ts';
import type { AliasConfig, RoutingConfig, Tier } from './config.ts';
import { TIERS } from './config.ts';
import type { CircuitBreakers } from './circuit.ts';
import type { CostModel, Estimate } from '../pricing/cost-model.ts';

/** Aliases shipped with easel; `routing.aliases` adds to and overrides them (null removes one). */
export const DEFAULT_ALIASES: Record<string, AliasConfig> = {
  preview: { tier: 'preview', quality: 'low', description: 'cheapest fast model: drafts and previews' },
  standard: { tier: 'standard', quality: 'medium', description: 'good everyday quality' },
  premium: { tier: 'premium', quality: 'high', description: 'best quality available' },
  thumbnail: { tier: 'preview', size: '256x256', quality: 'low', description: 'small square thumbnails' },
  product_shot: { tier: 'standard', size: '1024x1024', quality: 'medium', description: 'square product photos' },
  blog_image: { tier: 'standard', size: '1536x1024', quality: 'medium', description: 'landscape article illustrations' },
  og_image: { tier: 'standard', size: '1200x630', quality: 'medium', description: 'Open Graph / social preview cards (1.91:1)' },
  hero_image: { tier: 'premium', size: '1792x1024', quality: 'high', description: 'wide, high-quality page heroes' },
  print: { tier: 'premium', size: '2048x2048', quality: 'high', description: 'the largest, best images' },
};

const TIER_FALLBACK: Record<Tier, Tier[]> = {
  preview: ['preview', 'standard', 'premium'],
  standard: ['standard', 'premium', 'preview'],
  premium: ['premium', 'standard', 'preview'],
};

/** A model's tier from its id when neither its backend nor config says (see model-spec.ts). */
export const inferTier = inferModelTier;
export const inferTextInImage = inferText;

/** A prompt that asks for words in the picture (quoted text, signs, captions, logos…). */
export function promptNeedsText(prompt: string): boolean {
  return /["“”«»][^"“”«»]{1,80}["“”«»]/.test(prompt) || /\b(text|saying|says|caption|headline|title|logo|lettering|typography|label|slogan|sign that)\b/i.test(prompt);
}

const sizeText = (s: ImageSize) => `${s.width}x${s.height}`;
export function parseWxH(s: string): ImageSize {
  const [w, h] = s.split('x').map(Number);
  return { width: w!, height: h! };
}

/** The offered size closest to `want` in aspect ratio, then in area (preferring at least as large). */
export function snapSize(want: ImageSize, offered: readonly string[] | undefined): ImageSize {
  if (!offered || offered.length === 0) return want;
  if (offered.includes(sizeText(want))) return want;
  const wantRatio = Math.log(want.width / want.height);
  const wantArea = want.width * want.height;
  let best: ImageSize | undefined;
  let bestScore = Infinity;
  for (const s of offered.map(parseWxH)) {
    const ratio = Math.abs(Math.log(s.width / s.height) - wantRatio);
    const area = s.width * s.height;
    const areaPenalty = area >= wantArea ? Math.log(area / wantArea) * 0.01 : 1 + Math.log(wantArea / area) * 0.01;
    const score = ratio * 10 + areaPenalty;
    if (score < bestScore) {
      bestScore = score;
      best = s;
    }
  }
  return best ?? want;
}

export interface RouteInput {
  /** What the client sent as `model` (an alias, a model, or nothing for the default). */
  model: string | undefined;
  kind: JobKind;
  request: ImageRequest;
  inputs?: { images: number; mask: boolean };
  /** Refinements: rather an edit-capable model (img2img) when one is a candidate. */
  preferEdit?: boolean;
}

export interface ChainEntry {
  model: string;
  size?: string;
  quality?: string;
}

export interface CandidateView {
  model: string;
  backend: string;
  estimate_usd: number;
  available: boolean;
  note?: string;
}

/** What the job records about its routing (`job_costs.routing`, shown on the job). */
export interface RoutingRecord {
  requested: string | null;
  alias?: string;
  model: string;
  backend: string;
  backendModel: string;
  reason: string;
  /** Where to go next, in order, when the chosen backend fails or is overloaded. */
  chain: ChainEntry[];
  candidates?: CandidateView[];
  fallbacks?: { from: string; to: string; reason: string; at: number }[];
}

export interface RouteDecision {
  route: ResolvedModel;
  /** The request with the alias's size/quality/steps applied. */
  request: ImageRequest;
  estimate: Estimate;
  record: RoutingRecord;
  /** Something worth keeping on the job (an alias, a fallback, a choice among candidates). */
  notable: boolean;
}

interface ModelMeta {
  tier: Tier;
  /** Sizes offered as a list (for snapping an alias's size); undefined when any size (or a range) is taken. */
  sizes: readonly string[] | undefined;
  textInImage: boolean;
  fallback: string[];
}

export class Router {
  private readonly registry: BackendRegistry;
  private readonly config: RoutingConfig;
  private readonly models = new Map<string, ModelConfig>();
  readonly aliases: Record<string, AliasConfig>;
  private readonly costs: CostModel;
  readonly circuits: CircuitBreakers;
  private health: Record<string, BackendHealth> = {};
  private healthAt = 0;
  private refreshing: Promise<void> | undefined;
  private readonly healthMaxAgeMs: number;

  constructor(opts: { registry: BackendRegistry; models: ModelConfig[]; config: RoutingConfig; costs: CostModel; circuits: CircuitBreakers; healthMaxAgeMs?: number }) {
    this.registry = opts.registry;
    this.config = opts.config;
    for (const m of opts.models) this.models.set(m.name, m);
    this.costs = opts.costs;
    this.circuits = opts.circuits;
    this.healthMaxAgeMs = opts.healthMaxAgeMs ?? 5000;
    const merged: Record<string, AliasConfig> = { ...DEFAULT_ALIASES };
    for (const [name, a] of Object.entries(opts.config.aliases)) {
      if (a === null) delete merged[name];
      else merged[name] = a;
    }
    this.aliases = merged;
  }

  /** Every alias with the models it can pick now (for listings). */
  describeAliases(): { name: string; description?: string; size?: string; tier?: Tier; models: string[] }[] {
    return Object.entries(this.aliases)
      .filter(([name]) => !this.registry.hasModel(name))
      .map(([name, a]) => ({ name, description: a.description, size: a.size, tier: a.tier, models: this.aliasModels(a).models }));
  }

  /** The models an alias may pick from now. */
  aliasCandidates(name: string): string[] {
    return Object.hasOwn(this.aliases, name) ? this.aliasModels(this.aliases[name]!).models : [];
  }

  isAlias(name: string | undefined): boolean {
    return !!name && !this.registry.hasModel(name) && Object.hasOwn(this.aliases, name);
  }

  meta(name: string): ModelMeta {
    const cfg = this.models.get(name);
    const route = this.registry.resolve(name);
    const spec = route?.spec;
    return {
      tier: spec?.tier ?? cfg?.tier ?? inferTier(route?.backendModel ?? name),
      sizes: spec?.sizes?.kind === 'list' ? spec.sizes.sizes : undefined,
      textInImage: spec?.textInImage ?? cfg?.textInImage ?? inferTextInImage(route?.backendModel ?? name),
      fallback: (Object.hasOwn(this.config.fallback, name) ? this.config.fallback[name] : undefined) ?? cfg?.fallback ?? [],
    };
  }

  /** Health as last seen (refreshed in the background at most every few seconds). */
  async backendHealth(): Promise<Record<string, BackendHealth>> {
    const age = Date.now() - this.healthAt;
    if (this.healthAt === 0) await this.refreshHealth();
    else if (age > this.healthMaxAgeMs && !this.refreshing) void this.refreshHealth();
    return this.health;
  }

  /** Reads every backend's health now. */
  async refreshHealth(): Promise<void> {
    if (this.refreshing) await this.refreshing;
    // Each backend is asked directly (the registry's cache cannot be bypassed); a slow probe counts as down.
    const probe = async (b: ImageBackend): Promise<[string, BackendHealth]> => {
      let timer: NodeJS.Timeout | undefined;
      try {
        const timeout = new Promise<BackendHealth>((resolve) => {
          timer = setTimeout(() => resolve({ ok: false, message: 'health check timed out' }), 10_000);
          timer.unref();
        });
        return [b.name, await Promise.race([b.health(), timeout])];
      } catch (err) {
        return [b.name, { ok: false, message: (err as Error).message }];
      } finally {
        clearTimeout(timer);
      }
    };
    this.refreshing = Promise.all(this.registry.listBackends().map(probe))
      .then((entries) => {
        this.health = Object.fromEntries(entries);
        this.healthAt = Date.now();
      })
      .catch(() => {
        this.healthAt = Date.now();
      })
      .finally(() => {
        this.refreshing = undefined;
      });
    return this.refreshing;
  }

  /** Whether work may go to this backend now, and if not, why. */
  availability(backend: string): { ok: boolean; why?: string } {
    const h = this.health[backend];
    if (h && !h.ok) return { ok: false, why: `backend ${backend} is unhealthy${h.message ? ` (${h.message})` : ''}` };
    if (h?.overloaded) return { ok: false, why: `backend ${backend} is overloaded` };
    if (!this.circuits.available(backend)) return { ok: false, why: `backend ${backend}'s circuit is open after repeated failures` };
    return { ok: true };
  }

  private aliasModels(alias: AliasConfig): { models: string[]; tierUsed?: Tier } {
    if (alias.models) return { models: alias.models.filter((m) => this.registry.hasModel(m)) };
    const all = this.registry.listModels().map((m) => m.name);
    for (const tier of TIER_FALLBACK[alias.tier!]) {
      const models = all.filter((m) => this.meta(m).tier === tier);
      if (models.length) return { models, tierUsed: tier };
    }
    return { models: [] };
  }

  /** The quality word a model understands for an alias's quality (model families differ). */
  private qualityFor(route: ResolvedModel, quality: string | undefined): string | undefined {
    if (!quality || !route.spec.qualityFor) return quality;
    return route.spec.qualityFor(quality);
  }

  /** Why a model cannot take this job (its kind and inputs, its size, its provider options); undefined when it can. */
  private capable(route: ResolvedModel, input: RouteInput, opts: { size?: boolean } = {}): string | undefined {
    const problem =
      capabilityProblem(route.name, route.spec, { kind: input.kind, inputImages: input.inputs?.images ?? 0, mask: input.inputs?.mask ?? false }) ??
      providerOptionsProblem(route.name, route.spec, input.request.providerOptions) ??
      loraProblem(route.name, route.spec, input.request.loras);
    if (problem) return problem.message;
    if (opts.size !== false && input.request.size) {
      const size = sizeProblem(route.spec.sizes, input.request.size);
      if (size) return size;
    }
    return undefined;
  }

  /** Whether the model can take an input image (img2img / edit) for this many images. */
  canEdit(route: ResolvedModel, images = 1): boolean {
    return capabilityProblem(route.name, route.spec, { kind: 'edit', inputImages: images, mask: false }) === undefined;
  }

  /** Routes a request; undefined when the name is neither a model nor an alias (or nothing is configured). */
  async route(input: RouteInput): Promise<RouteDecision | undefined> {
    const requested = input.model ?? null;
    if (input.model !== undefined && this.isAlias(input.model)) return this.routeAlias(input.model, input);
    const route = this.registry.resolve(input.model);
    if (!route) return undefined;
    return this.routeConcrete(route, input, requested);
  }

  private async routeConcrete(route: ResolvedModel, input: RouteInput, requested: string | null): Promise<RouteDecision> {
    const meta = this.meta(route.name);
    const chain: ChainEntry[] = meta.fallback.filter((m) => m !== route.name && this.registry.hasModel(m)).map((model) => ({ model }));
    const estimate = await this.costs.estimate(route, input.request.size, input.request.quality, input.request.n);
    const base: RoutingRecord = {
      requested,
      model: route.name,
      backend: route.backend.name,
      backendModel: route.backendModel,
      reason: requested ? `model '${route.name}' as requested, served by backend ${route.backend.name}` : `the default model '${route.name}', served by backend ${route.backend.name}`,
      chain,
    };
    if (chain.length === 0) return { route, request: input.request, estimate, record: base, notable: false };
    // A declared chain: skip a primary that cannot take work now.
    await this.backendHealth();
    const avail = this.availability(route.backend.name);
    if (avail.ok) return { route, request: input.request, estimate, record: base, notable: true };
    for (let i = 0; i < chain.length; i++) {
      const alt = this.registry.resolve(chain[i]!.model)!;
      if (this.capable(alt, input) || !this.availability(alt.backend.name).ok) continue;
      const est = await this.costs.estimate(alt, input.request.size, input.request.quality, input.request.n);
      return {
        route: alt,
        request: input.request,
        estimate: est,
        notable: true,
        record: {
          ...base,
          model: alt.name,
          backend: alt.backend.name,
          backendModel: alt.backendModel,
          reason: `${avail.why}; fell back to '${alt.name}' (backend ${alt.backend.name}) from the chain of '${route.name}'`,
          chain: chain.slice(i + 1),
        },
      };
    }
    return { route, request: input.request, estimate, notable: true, record: { ...base, reason: `${base.reason} (${avail.why}, and no fallback can take it; queued anyway)` } };
  }

  private async routeAlias(name: string, input: RouteInput): Promise<RouteDecision | undefined> {
    const alias = this.aliases[name]!;
    const { models, tierUsed } = this.aliasModels(alias);
    if (models.length === 0) return undefined;
    await this.backendHealth();
    const needsText = input.kind !== 'variation' && promptNeedsText(input.request.prompt);
    type Cand = { model: string; route: ResolvedModel; request: ImageRequest; estimate: Estimate; available: boolean; why?: string; text: boolean; edit: boolean };
    const cands: Cand[] = [];
    const rejected: CandidateView[] = [];
    for (const model of models) {
      const route = this.registry.resolve(model)!;
      const meta = this.meta(model);
      const incapable = this.capable(route, input, { size: false });
      if (incapable) {
        rejected.push({ model, backend: route.backend.name, estimate_usd: 0, available: false, note: incapable });
        continue;
      }
      // The request's own size is honoured (models that do not offer it are out); else the alias's, snapped.
      let size = input.request.size;
      if (size && sizeProblem(route.spec.sizes, size)) {
        rejected.push({ model, backend: route.backend.name, estimate_usd: 0, available: false, note: `does not offer ${sizeText(size)}` });
        continue;
      }
      if (!size && alias.size) size = snapSize(parseWxH(alias.size), meta.sizes);
      const quality = input.request.quality ?? this.qualityFor(route, alias.quality);
      const request: ImageRequest = { ...input.request };
      if (size) request.size = size;
      if (quality) request.quality = quality;
      else delete request.quality;
      if (request.steps === undefined && alias.steps !== undefined) request.steps = alias.steps;
      const estimate = await this.costs.estimate(route, request.size, request.quality, request.n);
      const avail = this.availability(route.backend.name);
      cands.push({ model, route, request, estimate, available: avail.ok, why: avail.why, text: meta.textInImage, edit: route.spec.capabilities.edit });
    }
    if (cands.length === 0) return undefined;
    let pool = cands;
    const notes: string[] = [];
    if (needsText && pool.some((c) => c.text)) {
      if (pool.some((c) => !c.text)) notes.push('the prompt asks for text, so only models that render text were considered');
      pool = pool.filter((c) => c.text);
    }
    if (input.preferEdit && pool.some((c) => c.edit)) pool = pool.filter((c) => c.edit);
    const byCost = (a: Cand, b: Cand) => a.estimate.usd - b.estimate.usd || models.indexOf(a.model) - models.indexOf(b.model);
    const ordered = [...pool].sort(byCost);
    const available = ordered.filter((c) => c.available);
    const chosen = available[0] ?? ordered[0]!;
    const chain: ChainEntry[] = [...available, ...ordered.filter((c) => !c.available)]
      .filter((c) => c !== chosen)
      .map((c) => ({ model: c.model, ...(c.request.size ? { size: sizeText(c.request.size) } : {}), ...(c.request.quality ? { quality: c.request.quality } : {}) }));
    for (const m of this.meta(chosen.model).fallback) if (this.registry.hasModel(m) && !chain.some((c) => c.model === m) && m !== chosen.model) chain.push({ model: m });
    const fmt = (c: Cand) => `${c.model} $${c.estimate.usd.toFixed(4)}${c.estimate.basis === 'gpu_time' ? ' (GPU time)' : ''}${c.available ? '' : ` [${c.why}]`}`;
    const tierNote = alias.tier && tierUsed && tierUsed !== alias.tier ? ` (no ${alias.tier} model is configured; using ${tierUsed})` : '';
    const what = alias.models ? `alias '${name}'` : `alias '${name}' (tier ${alias.tier}${tierNote})`;
    const reason =
      `${what}: ${available.length ? 'cheapest healthy' : 'no candidate is healthy; cheapest'} of ${ordered.map(fmt).join(', ')} → ${chosen.model} on backend ${chosen.route.backend.name}` +
      (chosen.request.size && !input.request.size && alias.size ? `, size ${sizeText(chosen.request.size)}${sizeText(chosen.request.size) !== alias.size ? ` (the nearest it offers to ${alias.size})` : ''}` : '') +
      (notes.length ? `; ${notes.join('; ')}` : '');
    return {
      route: chosen.route,
      request: chosen.request,
      estimate: chosen.estimate,
      notable: true,
      record: {
        requested: name,
        alias: name,
        model: chosen.model,
        backend: chosen.route.backend.name,
        backendModel: chosen.route.backendModel,
        reason,
        chain,
        candidates: [
          ...cands.map((c) => ({ model: c.model, backend: c.route.backend.name, estimate_usd: c.estimate.usd, available: c.available, ...(c.why ? { note: c.why } : {}) })),
          ...rejected,
        ],
      },
    };
  }

  /**
   * At the start of an attempt: the job's own model while its backend can take work, else the first
   * entry of its chain that can. `failedBackend` is the backend the previous attempt ran on (a
   * retry after a failure): it is passed over when the chain has an alternative.
   */
  pickForAttempt(model: string, chain: ChainEntry[], failedBackend: string | null): { route: ResolvedModel; entry: ChainEntry; reason?: string } | undefined {
    const primary = this.registry.resolve(model);
    const entries: ChainEntry[] = [{ model }, ...chain];
    const usable = (e: ChainEntry) => {
      const r = this.registry.resolve(e.model);
      return r ? { r, avail: this.availability(r.backend.name) } : undefined;
    };
    const reasons: string[] = [];
    for (const e of entries) {
      const u = usable(e);
      if (!u) continue;
      if (failedBackend && u.r.backend.name === failedBackend && entries.length > 1) {
        reasons.push(`backend ${failedBackend} failed the previous attempt`);
        continue;
      }
      if (!u.avail.ok) {
        reasons.push(u.avail.why!);
        continue;
      }
      if (u.r.name === model) return { route: u.r, entry: e };
      return { route: u.r, entry: e, reason: reasons.join('; ') };
    }
    return primary ? { route: primary, entry: { model } } : undefined;
  }

  backendOf(name: string): ImageBackend | undefined {
    return this.registry.resolve(name)?.backend;
  }
}
