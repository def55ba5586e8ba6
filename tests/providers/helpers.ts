/** Request/context builders and assertion helpers shared by the provider tests. */
import assert from 'node:assert/strict';
import type { BackendCallContext, BackendRequest, BackendWarning } from '../../src/backends/image-backend.ts';
import { BackendError } from '../../src/backends/image-backend.ts';
import type { BackendLog } from '../../src/backends/http/hosted-backend.ts';

export function request(overrides: Partial<BackendRequest> = {}): BackendRequest {
  return {
    kind: 'generation',
    model: 'test-model',
    prompt: 'a red fox in the snow',
    n: 1,
    outputFormat: 'png',
    inputImages: [],
    providerOptions: {},
    ...overrides,
  };
}

export interface TestContext extends BackendCallContext {
  progress: number[];
  saved: unknown[];
  /** Whatever was saved last (what a restarted worker would see). */
  lastSaved(): unknown;
}

export function context(opts: { signal?: AbortSignal; savedState?: unknown; onSave?: (state: unknown) => void } = {}): TestContext {
  const progress: number[] = [];
  const saved: unknown[] = [];
  return {
    jobId: 'job_test',
    signal: opts.signal ?? new AbortController().signal,
    progress,
    saved,
    reportProgress: (p) => progress.push(p),
    savedState: opts.savedState,
    saveState: async (state) => {
      // What the store does: a JSON round trip.
      saved.push(JSON.parse(JSON.stringify(state)));
      opts.onSave?.(state);
    },
    lastSaved: () => saved.at(-1),
  };
}

/** The worker aborts with a reason object carrying `reason` ('canceled', 'timeout', 'lease_lost'). */
export function abortWith(controller: AbortController, reason: 'canceled' | 'timeout' | 'lease_lost'): void {
  const err = Object.assign(new Error(reason), { reason });
  controller.abort(err);
}

export async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof BackendError, `expected a BackendError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected the call to fail');
}

export interface LogLine {
  level: string;
  obj: object;
  msg: string;
}

export function recordingLog(): BackendLog & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (obj: object, msg: string) => lines.push({ level, obj, msg });
  return { lines, error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') };
}

export const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47];
export function isPng(data: Uint8Array): boolean {
  return PNG_MAGIC.every((b, i) => data[i] === b);
}

/** Warnings as one text, for matching their sentences. */
export function warningText(warnings: readonly (BackendWarning | string)[]): string {
  return warnings.map((w) => (typeof w === 'string' ? w : w.detail)).join('\n');
}

export { HOSTILE, assertWarnsAbout, hostileOptions } from '../support/hostile-options.ts';
