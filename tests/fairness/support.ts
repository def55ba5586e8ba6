/**
 * A backend stand-in for fair-sharing tests: every call takes a fixed time (`delayMs`), may be held
 * at a gate, and is logged with its prompt and start time; the most calls of one key (the prompt's
 * first word) running at once are tracked. Built from the config's `type: openai` backends (the
 * factory replaces them), so the test config is the ordinary stand-in config.
 */
import { uniformSpec } from '../../src/backends/model-spec.ts';
import type { BackendModelSpec } from '../../src/backends/model-spec.ts';
import type { BackendFactory } from '../../src/backends/registry.ts';
import type { BackendConfig } from '../../src/config/schema.ts';
import type { BackendCallContext, BackendCapabilities, BackendHealth, BackendRequest, BackendResult, ImageBackend } from '../../src/backends/image-backend.ts';
import { makePng } from '../support/png.ts';

export class PacedControl {
  delayMs: number;
  readonly calls: { prompt: string; key: string; at: number }[] = [];
  readonly peak = new Map<string, number>();
  private readonly running = new Map<string, number>();
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;

  constructor(delayMs: number) {
    this.delayMs = delayMs;
  }

  /** Calls from now on wait until `open()`. */
  close(): void {
    if (this.gate) return;
    this.gate = new Promise((r) => (this.openGate = r));
  }

  open(): void {
    this.openGate?.();
    this.gate = undefined;
    this.openGate = undefined;
  }

  async run(prompt: string): Promise<void> {
    const key = prompt.split(' ')[0]!;
    this.calls.push({ prompt, key, at: Date.now() });
    const now = (this.running.get(key) ?? 0) + 1;
    this.running.set(key, now);
    this.peak.set(key, Math.max(this.peak.get(key) ?? 0, now));
    try {
      if (this.gate) await this.gate;
      await new Promise((r) => setTimeout(r, this.delayMs));
    } finally {
      this.running.set(key, this.running.get(key)! - 1);
    }
  }

  callsOf(key: string): number {
    return this.calls.filter((c) => c.key === key).length;
  }
}

class PacedBackend implements ImageBackend {
  readonly name: string;
  readonly type = 'paced';
  readonly capabilities: BackendCapabilities = { generate: true, edit: false, mask: false, variation: false, maxInputImages: 0, maxImagesPerCall: 4 };
  private readonly control: PacedControl;
  private png: Promise<Uint8Array> | undefined;

  constructor(config: BackendConfig, control: PacedControl) {
    this.name = config.name;
    this.control = control;
  }

  modelSpec(): BackendModelSpec {
    return uniformSpec(this.capabilities, 'gpu-time');
  }

  async generate(request: BackendRequest, _ctx: BackendCallContext): Promise<BackendResult> {
    await this.control.run(request.prompt);
    this.png ??= makePng(16, 16, [40, 90, 160]);
    const png = await this.png;
    return { images: Array.from({ length: request.n }, () => ({ data: png, mediaType: 'image/png' })), warnings: [] };
  }

  async health(): Promise<BackendHealth> {
    return { ok: true, message: 'up' };
  }
}

export function pacedFactories(control: PacedControl): Record<string, BackendFactory> {
  return { openai: (config: BackendConfig): ImageBackend => new PacedBackend(config, control) };
}

/** Submits `count` async generations for one key, `parallel` requests at a time; returns job ids in order. */
export async function submitMany(base: string, secret: string, prompts: string[], parallel = 8): Promise<string[]> {
  const ids: string[] = new Array(prompts.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < prompts.length) {
        const i = next++;
        const res = await fetch(`${base}/v1/images/generations`, {
          method: 'POST',
          headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json' },
          body: JSON.stringify({ prompt: prompts[i], async: true }),
        });
        const body = (await res.json()) as { id?: string };
        if (res.status !== 202 || !body.id) throw new Error(`submitting "${prompts[i]}": ${res.status} ${JSON.stringify(body)}`);
        ids[i] = body.id;
      }
    }),
  );
  return ids;
}

export interface JobTimes {
  id: string;
  key: string;
  status: string;
  created: number;
  started: number | null;
  finished: number | null;
  attempt: number;
}

/**
 * For each of `late`'s jobs (in submission order): how many of `early`'s jobs finished after the
 * first of `late` was submitted and before it started. The bound the tests assert is on this.
 */
export function completionsBeforeStart(early: JobTimes[], late: JobTimes[]): number[] {
  const arrived = Math.min(...late.map((j) => j.created));
  const ends = early.map((j) => j.finished ?? Infinity).filter((f) => f >= arrived);
  return [...late].sort((a, b) => a.created - b.created).map((j) => ends.filter((f) => f <= (j.started ?? Infinity)).length);
}

/** p-th percentile (0..100), nearest rank. */
export function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
