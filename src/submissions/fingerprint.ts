/**
 * The digest of what an idempotent submission asked for, so a retry with the same key is told apart
 * from a different request. JSON with sorted keys; values are bounded by validation before this runs
 * (and nesting is cut off here regardless, so no input can exhaust the stack).
 */
import { createHash } from 'node:crypto';

const MAX_DEPTH = 32;

function stableJson(value: unknown, depth: number): string {
  if (depth > MAX_DEPTH) return '"…"';
  if (Array.isArray(value)) return `[${value.map((v) => stableJson(v, depth + 1)).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v, depth + 1)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export function fingerprint(parts: unknown): string {
  return createHash('sha256').update(stableJson(parts, 0)).digest('hex');
}
