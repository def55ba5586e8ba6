/**
 * Who gets which share: the `fairness` config read for one key. Pure (no I/O): the queues ask it how
 * to order and limit a key's jobs, admission asks it for the key's queue limits.
 *
 * Config entries name keys by id or by name (ids win, as for budgets). Queue messages carry only the
 * key's id, so the policy remembers the names it has seen (every admission tells it, and the runtime
 * primes it with the key list at start); a key it has never seen is looked up by id alone.
 */
import type { FairnessConfig, KeyFairness } from './config.ts';

/** What a queue needs to order and limit one key's jobs. */
export interface KeyShare {
  /** Turns relative to other keys at the same priority (weight 2: twice the turns of weight 1). */
  weight: number;
  /** Most jobs of the key running at once (null: no limit). */
  maxRunning: number | null;
  /** The key's group, and the group's running limit, when it has one. */
  group: string | null;
  groupMaxRunning: number | null;
}

/** The queues' view of the policy. */
export interface FairOrder {
  /** false: first come, first served within a priority, no running limits. */
  readonly enabled: boolean;
  /** Some key or group has a running limit, so taking a job must check it. */
  readonly limitsRunning: boolean;
  /** The share of the key with this id (undefined: a message without a key, one shared tenant). */
  shareOf(keyId: string | undefined): KeyShare;
}

export interface KeySettings extends KeyShare {
  maxQueued: number | null;
  groupMaxQueued: number | null;
  /** The group's members as configured (ids or names), when the key is in a group. */
  groupKeys: readonly string[];
}

/** The tenant of messages that carry no key (tests, jobs queued before fair sharing). */
export const NO_KEY = '';

const own = <T>(record: Record<string, T>, k: string | undefined): T | undefined => (k !== undefined && Object.hasOwn(record, k) ? record[k] : undefined);

export class FairPolicy implements FairOrder {
  readonly config: FairnessConfig;
  readonly enabled: boolean;
  readonly limitsRunning: boolean;
  readonly limitsQueued: boolean;
  private readonly names = new Map<string, string>();

  constructor(config: FairnessConfig) {
    this.config = config;
    this.enabled = config.enabled;
    const entries: { maxRunning?: number | null; maxQueued?: number | null }[] = [config.defaults, ...Object.values(config.keys), ...Object.values(config.groups)];
    this.limitsRunning = config.enabled && entries.some((e) => e.maxRunning != null);
    this.limitsQueued = config.enabled && entries.some((e) => e.maxQueued != null);
  }

  /** A key's name, so entries that name it apply to its messages too. */
  remember(key: { id: string; name: string }): void {
    if (this.names.get(key.id) !== key.name) this.names.set(key.id, key.name);
  }

  nameOf(keyId: string): string | undefined {
    return this.names.get(keyId);
  }

  settingsFor(key: { id: string; name?: string }): KeySettings {
    const d = this.config.defaults;
    const name = key.name ?? this.names.get(key.id);
    const mine: KeyFairness = own(this.config.keys, key.id) ?? own(this.config.keys, name) ?? {};
    const pick = <K extends keyof KeyFairness>(k: K, fallback: NonNullable<KeyFairness[K]> | null) => (mine[k] === undefined ? fallback : mine[k]);
    let group: string | null = null;
    let g: FairnessConfig['groups'][string] | undefined;
    for (const [groupName, candidate] of Object.entries(this.config.groups)) {
      if (candidate.keys.includes(key.id) || (name !== undefined && candidate.keys.includes(name))) {
        group = groupName;
        g = candidate;
        break;
      }
    }
    return {
      weight: pick('weight', d.weight) ?? d.weight,
      maxRunning: this.enabled ? pick('maxRunning', d.maxRunning) : null,
      maxQueued: this.enabled ? pick('maxQueued', d.maxQueued) : null,
      group,
      groupMaxRunning: this.enabled ? (g?.maxRunning ?? null) : null,
      groupMaxQueued: this.enabled ? (g?.maxQueued ?? null) : null,
      groupKeys: g?.keys ?? [],
    };
  }

  shareOf(keyId: string | undefined): KeyShare {
    if (keyId === undefined || keyId === NO_KEY) return { weight: 1, maxRunning: null, group: null, groupMaxRunning: null };
    const s = this.settingsFor({ id: keyId });
    return { weight: s.weight, maxRunning: s.maxRunning, group: s.groupMaxRunning === null ? null : s.group, groupMaxRunning: s.groupMaxRunning };
  }
}

/** Fair order with every key alike and no limits: what a queue does when nobody configured one. */
export const EVEN_SHARES: FairOrder = {
  enabled: true,
  limitsRunning: false,
  shareOf: () => ({ weight: 1, maxRunning: null, group: null, groupMaxRunning: null }),
};
