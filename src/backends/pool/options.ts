/**
 * Config shared by the self-hosted GPU backends (`comfyui`, `a1111`): the hosts of the pool and how
 * work is spread over them. Spread into each backend's zod object.
 */
import { z } from 'zod';
import { warmupSchema } from '../warmup.ts';

export const poolHostSchema = z.union([
  z.url({ protocol: /^https?$/ }),
  z
    .object({
      url: z.url({ protocol: /^https?$/ }),
      /** Shown in health messages and logs (defaults to host:port). */
      name: z.string().min(1).optional(),
      /** Overrides `maxConcurrentPerHost` for this host. */
      maxConcurrent: z.number().int().min(1).max(64).optional(),
    })
    .strict(),
]);
export type PoolHostConfig = z.infer<typeof poolHostSchema>;

export const poolFields = {
  /** The name models and routes refer to this backend by. */
  name: z.string().min(1),
  /** GPU hosts: base URLs (`http://gpu1:8188`) or `{url, name, maxConcurrent}`. */
  hosts: z.array(poolHostSchema).min(1),
  /** Calls one host runs at once (most GPUs: one prompt at a time). */
  maxConcurrentPerHost: z.number().int().min(1).max(64).default(1),
  /**
   * Most images one backend call makes. Compatible waiting jobs (same checkpoint, prompt, size,
   * steps, cfg, sampler; no explicit seed) are coalesced up to this; 1 turns batching off.
   */
  maxBatchSize: z.number().int().min(1).max(64).default(4),
  /** Prefer a host that already has the job's checkpoint loaded (false: strict arrival order). */
  affinity: z.boolean().default(true),
  /**
   * A waiting job for a checkpoint no host has loaded is served next once it is this old, even if
   * that costs a switch (jobs for a loaded checkpoint are served by that host in age order anyway).
   */
  affinityMaxWaitSeconds: z.number().positive().default(30),
  /** Above this many jobs waiting for a host, health reports overload and `/ready` answers 503. */
  maxQueueDepth: z.number().int().min(1).default(64),
  /** Times a job whose host died or failed mid-run is moved to another host before it fails (retryable). */
  maxHostRetries: z.number().int().min(0).max(10).default(2),
  /** How often hosts are probed (down hosts too, until they return). */
  healthIntervalSeconds: z.number().positive().default(5),
  /** Consecutive failed probes before a host leaves the pool. */
  unhealthyAfterFailures: z.number().int().min(1).default(2),
  /** Limit for one control request (submit, status, upload, download); generation itself is bounded by the job timeout. */
  requestTimeoutSeconds: z.number().positive().max(3600).default(30),
  /** How long a host that stops answering mid-run (connection refused, no events, no history) is waited for before its jobs move on. */
  hostLostAfterSeconds: z.number().positive().default(15),
  /** HTTP Basic credentials (`user:pass`) for hosts started with an auth flag. */
  basicAuth: z.string().regex(/^[^:]+:.*$/, 'user:password').optional(),
  /** How often each host's LoRA list is read again (a name a request asks for that is not listed triggers a look at once). */
  loraRefreshSeconds: z.number().positive().max(86_400).default(60),
  /** A small request on each host when it first answers, before it takes work (see src/backends/warmup.ts); absent: off. */
  warmup: warmupSchema.optional(),
};

export interface PoolSettings {
  maxConcurrentPerHost: number;
  maxBatchSize: number;
  affinity: boolean;
  affinityMaxWaitSeconds: number;
  maxQueueDepth: number;
  maxHostRetries: number;
  healthIntervalSeconds: number;
  unhealthyAfterFailures: number;
}

export interface NormalizedHost {
  url: string;
  name: string;
  maxConcurrent: number;
}

/** Hosts with names and limits filled in; a trailing slash is dropped from the URL. */
export function normalizeHosts(hosts: PoolHostConfig[], maxConcurrentPerHost: number): NormalizedHost[] {
  const seen = new Set<string>();
  return hosts.map((h) => {
    const spec = typeof h === 'string' ? { url: h } : h;
    const url = spec.url.replace(/\/+$/, '');
    let name = spec.name ?? new URL(url).host;
    for (let i = 2; seen.has(name); i++) name = `${spec.name ?? new URL(url).host}#${i}`;
    seen.add(name);
    return { url, name, maxConcurrent: spec.maxConcurrent ?? maxConcurrentPerHost };
  });
}

/**
 * Sampling defaults a checkpoint entry or a backend's `defaults` may give; a request's own values win.
 * `minSide` is the smallest width or height the engine takes.
 */
export function samplingDefaultFields(minSide: number) {
  return {
    /** Sent on every call that gives none (A1111's own API default is 50). */
    steps: z.number().int().min(1).max(10_000).optional(),
    /** CFG scale (for FLUX-style checkpoints on ComfyUI: the FluxGuidance value). */
    cfg: z.number().min(0).max(100).optional(),
    /** e.g. `Euler a`, `DPM++ 2M` (A1111), `euler`, `dpmpp_2m` (ComfyUI). */
    sampler: z.string().min(1).optional(),
    /** e.g. `Karras` (A1111 v1.9+; left out when unset), `normal` (ComfyUI). */
    scheduler: z.string().min(1).optional(),
    width: z.number().int().min(minSide).max(16_384).optional(),
    height: z.number().int().min(minSide).max(16_384).optional(),
    negativePrompt: z.string().optional(),
  };
}
