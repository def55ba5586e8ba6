/**
 * One ONNX Runtime session with what the engine needs to know about it: each input's element type
 * and shape as the model declares them (so int32/int64 ids and the three timestep forms are fed as
 * the model wants), time spent in `run`, and the CUDA → CPU fallback.
 */
import * as ort from 'onnxruntime-node';
import { floatToHalf, halfToFloat } from './half-float.ts';

/**
 * onnxruntime-node 1.30's binding reads a Float16Array as zero bytes ("not enough space: expected
 * 4, got 0"), and onnxruntime-common keeps float16 tensors in one whenever the global exists. Its
 * type table is filled once, by the first Tensor: build that one with the global hidden, so float16
 * tensors keep Uint16Array storage, which the binding reads correctly.
 */
function pinFloat16Storage(): void {
  const g = globalThis as { Float16Array?: unknown };
  const saved = g.Float16Array;
  if (saved === undefined) return;
  try {
    delete g.Float16Array;
    new ort.Tensor('float32', new Float32Array(1), [1]);
  } finally {
    g.Float16Array = saved;
  }
}
pinFloat16Storage();

export interface IoSpec {
  name: string;
  type: string;
  /** Numbers are fixed sizes, strings symbolic; empty for a scalar (or a shape the model leaves open). */
  shape: (number | string)[];
}

export interface SessionFactoryOptions {
  executionProvider: 'cpu' | 'cuda';
  deviceId: number;
  intraOpThreads: number;
  /** One line, once, when CUDA was asked for but does not load. */
  warn(message: string): void;
}

/**
 * Session settings of the engine (the benchmark times bare runs with the same ones): all graph
 * optimisations, one inter-op thread, and denormals flushed to zero, which keeps fp32 kernels at full
 * speed when activations underflow (sigmoids of large negatives) without visible change to images.
 */
export function engineSessionOptions(intraOpThreads: number): ort.InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: intraOpThreads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
    extra: { session: { set_denormal_as_zero: '1' } },
  };
}

/** Creates sessions; remembers a failed CUDA load so the line is said once and CPU is used after. */
export class SessionFactory {
  private readonly opts: SessionFactoryOptions;
  private cudaFailed = false;

  constructor(opts: SessionFactoryOptions) {
    this.opts = opts;
    // ORT's own log would add a multi-line error when the CUDA library is missing; the fallback line
    // below says it once and plainly, and every real failure reaches us as an exception anyway. The
    // level is process-wide and read at the first session, so it is set the same way every time.
    ort.env.logLevel = 'fatal';
  }

  /** What sessions actually run on. */
  get provider(): 'cpu' | 'cuda' {
    return this.opts.executionProvider === 'cuda' && !this.cudaFailed ? 'cuda' : 'cpu';
  }

  async open(path: string): Promise<OnnxSession> {
    const base = engineSessionOptions(this.opts.intraOpThreads);
    if (this.provider === 'cuda') {
      try {
        const s = await ort.InferenceSession.create(path, { ...base, executionProviders: [{ name: 'cuda', deviceId: this.opts.deviceId }, 'cpu'] });
        return new OnnxSession(s, path);
      } catch (err) {
        this.cudaFailed = true;
        const why = String((err as Error)?.message ?? err).split('\n')[0]!.slice(0, 300);
        this.opts.warn(`CUDA execution provider unavailable, running on CPU instead (${why})`);
      }
    }
    return new OnnxSession(await ort.InferenceSession.create(path, { ...base, executionProviders: ['cpu'] }), path);
  }
}

export class OnnxSession {
  readonly path: string;
  readonly inputs: Map<string, IoSpec>;
  readonly outputs: Map<string, IoSpec>;
  /** Milliseconds spent inside session.run, for the engine's overhead figure. */
  runMs = 0;
  runs = 0;
  private readonly session: ort.InferenceSession;

  constructor(session: ort.InferenceSession, path: string) {
    this.session = session;
    this.path = path;
    this.inputs = new Map(session.inputMetadata.map((m) => [m.name, spec(m)]));
    this.outputs = new Map(session.outputMetadata.map((m) => [m.name, spec(m)]));
  }

  /** The input with one of these names, else the first input for which `fallback` holds. */
  input(names: string[], fallback?: (s: IoSpec) => boolean): IoSpec | undefined {
    for (const n of names) {
      const s = this.inputs.get(n);
      if (s) return s;
    }
    return fallback ? [...this.inputs.values()].find(fallback) : undefined;
  }

  output(names: string[]): IoSpec {
    for (const n of names) {
      const s = this.outputs.get(n);
      if (s) return s;
    }
    return [...this.outputs.values()][0]!;
  }

  describe(): string {
    const io = (m: Map<string, IoSpec>) => [...m.values()].map((s) => `${s.name}:${s.type}[${s.shape.join(',')}]`).join(' ');
    return `inputs ${io(this.inputs)}; outputs ${io(this.outputs)}`;
  }

  async run(feeds: Record<string, ort.Tensor>, outputs: string[]): Promise<Record<string, ort.Tensor>> {
    const t0 = performance.now();
    try {
      return await this.session.run(feeds, outputs);
    } finally {
      this.runMs += performance.now() - t0;
      this.runs++;
    }
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

function spec(m: ort.InferenceSession.ValueMetadata): IoSpec {
  if (!m.isTensor) return { name: m.name, type: 'non-tensor', shape: [] };
  return { name: m.name, type: m.type, shape: [...m.shape] };
}

/** A float tensor of the element type the model declares (float32 or float16). */
export function floatTensor(type: string, data: Float32Array, dims: number[]): ort.Tensor {
  if (type === 'float16') return new ort.Tensor('float16', floatToHalf(data), dims);
  if (type === 'float64') return new ort.Tensor('float64', Float64Array.from(data), dims);
  return new ort.Tensor('float32', data, dims);
}

/** An integer tensor in the declared type (int32 or int64). */
export function intTensor(type: string, data: ArrayLike<number>, dims: number[]): ort.Tensor {
  if (type === 'int64') return new ort.Tensor('int64', BigInt64Array.from(Array.from(data, (v) => BigInt(v))), dims);
  if (type === 'int32') return new ort.Tensor('int32', Int32Array.from(data), dims);
  throw new Error(`expected an int32 or int64 input, the model declares ${type}`);
}

/** Any numeric tensor's data as float32. */
export function toFloat32(t: ort.Tensor): Float32Array {
  const d = t.data as unknown;
  if (d instanceof Float32Array) return d;
  if (d instanceof Uint16Array && t.type === 'float16') return halfToFloat(d);
  if (ArrayBuffer.isView(d)) return Float32Array.from(d as unknown as ArrayLike<number>);
  throw new Error(`output ${t.type} is not numeric`);
}
