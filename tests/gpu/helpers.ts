/** Shared bits of the GPU backend tests. */
import assert from 'node:assert/strict';
import type { BackendCallContext, BackendPartialImage, BackendRequest } from '../../src/backends/image-backend.ts';
import { BackendError } from '../../src/backends/image-backend.ts';

export function request(overrides: Partial<BackendRequest> = {}): BackendRequest {
  return {
    kind: 'generation',
    model: 'sd15.safetensors',
    prompt: 'a lighthouse at dusk',
    n: 1,
    size: { width: 64, height: 64 },
    steps: 10,
    outputFormat: 'png',
    inputImages: [],
    providerOptions: {},
    ...overrides,
  };
}

export interface TestContext extends BackendCallContext {
  progress: number[];
  partials: BackendPartialImage[];
  states: unknown[];
  controller: AbortController;
}

export function context(jobId = 'job_test'): TestContext {
  const controller = new AbortController();
  const progress: number[] = [];
  const partials: BackendPartialImage[] = [];
  const states: unknown[] = [];
  return {
    jobId,
    signal: controller.signal,
    controller,
    progress,
    partials,
    states,
    reportProgress: (p) => progress.push(p),
    reportPartialImage: (img) => partials.push(img),
    savedState: undefined,
    saveState: async (s) => {
      states.push(s);
    },
  };
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

export async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
