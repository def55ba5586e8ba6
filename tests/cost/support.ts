/**
 * Test backends for cost control: a "GPU" backend whose health, failures, latency and reported GPU
 * time a test controls. Configured as `type: openai` backends whose name starts with `gpu` (so the
 * config schema accepts them); the factory swaps in the fake and leaves real OpenAI backends alone.
 */
import { uniformSpec } from '../../src/backends/model-spec.ts';
import type { BackendModelSpec } from '../../src/backends/model-spec.ts';
import type { BackendFactory } from '../../src/backends/registry.ts';
import type { BackendConfig } from '../../src/config/schema.ts';
import { OpenAIBackend } from '../../src/backends/openai/openai-backend.ts';
import { BackendError } from '../../src/backends/image-backend.ts';
import type { BackendCallContext, BackendCapabilities, BackendHealth, BackendRequest, BackendResult, ImageBackend } from '../../src/backends/image-backend.ts';
import { makePng } from '../support/png.ts';

export interface GpuControl {
  healthy: boolean;
  overloaded: boolean;
  /** The next calls that fail, and how. */
  failures: { code: string; retryable: boolean }[];
  delayMs: number;
  /** GPU time the backend reports per call (else none: the worker measures wall time). */
  gpuMs?: number;
  host?: string;
  calls: BackendRequest[];
}

export function gpuControl(): GpuControl {
  return { healthy: true, overloaded: false, failures: [], delayMs: 0, calls: [] };
}

class FakeGpuBackend implements ImageBackend {
  readonly name: string;
  readonly type = 'fake-gpu';
  readonly capabilities: BackendCapabilities;
  private readonly control: GpuControl;

  constructor(config: BackendConfig, control: GpuControl) {
    this.name = config.name;
    this.control = control;
    const caps = (config as { capabilities?: { edit?: boolean; maxInputImages?: number } }).capabilities ?? {};
    this.capabilities = { generate: true, edit: caps.edit ?? false, mask: false, variation: false, maxInputImages: caps.edit ? (caps.maxInputImages ?? 1) : 0, maxImagesPerCall: 4 };
  }

  modelSpec(): BackendModelSpec {
    return uniformSpec(this.capabilities, 'gpu-time');
  }

  async generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
    this.control.calls.push(request);
    if (this.control.delayMs) await new Promise((r) => setTimeout(r, this.control.delayMs));
    const f = this.control.failures.shift();
    if (f) throw new BackendError(`${this.name}: simulated ${f.code}`, { code: f.code, retryable: f.retryable });
    ctx.reportProgress(1);
    const w = request.size?.width ?? 64;
    const h = request.size?.height ?? 64;
    const png = await makePng(Math.min(w, 128), Math.min(h, 128), [40, 90, 160]);
    return {
      images: Array.from({ length: request.n }, () => ({ data: png, mediaType: 'image/png' })),
      warnings: [],
      providerMetadata: { ...(this.control.gpuMs !== undefined ? { gpuMs: this.control.gpuMs } : {}), ...(this.control.host ? { host: this.control.host } : {}) },
    };
  }

  async health(): Promise<BackendHealth> {
    return { ok: this.control.healthy, message: this.control.healthy ? 'up' : 'down (simulated)', ...(this.control.overloaded ? { overloaded: true } : {}) };
  }
}

/** Backend factories: `gpu*` names become fake GPU backends driven by `controls[name]`. */
export function fakeGpuFactories(controls: Record<string, GpuControl>): Record<string, BackendFactory> {
  return {
    openai: (config: BackendConfig): ImageBackend => {
      const control = controls[config.name];
      return control ? new FakeGpuBackend(config, control) : new OpenAIBackend(config as never);
    },
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function until(check: () => Promise<boolean> | boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`${what} not reached in ${timeoutMs}ms`);
    await sleep(20);
  }
}
