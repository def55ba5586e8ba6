/**
 * Tiny diffusers-layout ONNX folders built at test time. They carry the real input/output names and
 * each dtype/timestep variant real exporters produce, and compute things the tests can predict:
 *
 * - text encoder: last_hidden_state[b,t,k] = id[b,t] · 1e-4 · (k+1)/D
 * - UNet `zero`: out = 0; `identity`: out = sample; `text`: out = mean(encoder_hidden_states[b]);
 *   `timestep`: out = timestep · 1e-3 (per row)
 * - VAE decoder: channels 0..2 of the latent, nearest-upscaled ×8; encoder: 8×8 average pool, channel 0
 *   repeated as channel 3.
 */
import { cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DT, GraphBuilder } from './onnx-graph.ts';

export const TOKENIZER_FIXTURE = fileURLToPath(new URL('../fixtures/clip-tokenizer/', import.meta.url));

export type UnetKind = 'zero' | 'identity' | 'text' | 'timestep';

export interface TinyModelOptions {
  unet?: UnetKind;
  idsType?: 'int32' | 'int64';
  /** Timestep input as exporters write it: int64 [1], float32 [batch], float32 scalar. */
  timestep?: { type: 'int64' | 'float32' | 'float16'; shape: (number | string)[] };
  lcm?: boolean;
  hidden?: number;
  vaeEncoder?: boolean;
  vaeDecoder?: boolean;
  /** scheduler_config.json contents (diffusers keys). */
  scheduler?: Record<string, unknown>;
  /** easel-model.json contents, if any. */
  manifest?: Record<string, unknown>;
  vaeScalingFactor?: number;
  /** Fixed batch dimension on the UNet's sample (static-shape exports). */
  fixedBatch?: number;
}

function textEncoder(idsType: 'int32' | 'int64', D: number): Uint8Array {
  const g = new GraphBuilder();
  const ids = g.input('input_ids', idsType, ['batch', 77]);
  const f = g.op('Cast', [ids], { to: DT.FLOAT });
  const scaled = g.op('Mul', [f, g.scalar(1e-4)]);
  const col = g.op('Unsqueeze', [scaled, g.ints([2])]);
  const ramp = Float32Array.from({ length: D }, (_, k) => (k + 1) / D);
  const hidden = g.op('Mul', [col, g.init(ramp, [1, 1, D])]);
  g.name(hidden, 'last_hidden_state');
  g.name(g.op('ReduceMean', [hidden], { axes: [1], keepdims: 0 }), 'pooler_output');
  g.output('last_hidden_state', 'float32', ['batch', 77, D]);
  g.output('pooler_output', 'float32', ['batch', D]);
  return g.toBytes(17);
}

function unet(kind: UnetKind, ts: NonNullable<TinyModelOptions['timestep']>, D: number, lcm: boolean, fixedBatch?: number): Uint8Array {
  const g = new GraphBuilder();
  const batch = fixedBatch ?? 'batch';
  const sample = g.input('sample', 'float32', [batch, 4, 'height', 'width']);
  const t = g.input('timestep', ts.type, ts.shape);
  const ehs = g.input('encoder_hidden_states', 'float32', [batch, 77, D]);
  if (lcm) g.input('timestep_cond', 'float32', [batch, 256]);
  const zero = g.op('Mul', [sample, g.scalar(0)]);
  let out: string;
  switch (kind) {
    case 'zero':
      out = zero;
      break;
    case 'identity':
      out = g.op('Identity', [sample]);
      break;
    case 'text': {
      const m = g.op('ReduceMean', [ehs], { axes: [1, 2], keepdims: 1 });
      out = g.op('Add', [zero, g.op('Reshape', [m, g.ints([-1, 1, 1, 1])])]);
      break;
    }
    case 'timestep': {
      const tf = g.op('Cast', [t], { to: DT.FLOAT });
      const col = g.op('Reshape', [g.op('Mul', [tf, g.scalar(1e-3)]), g.ints([-1, 1, 1, 1])]);
      out = g.op('Add', [zero, col]);
      break;
    }
  }
  g.name(out, 'out_sample');
  g.output('out_sample', 'float32', [batch, 4, 'height', 'width']);
  return g.toBytes(17);
}

function vaeDecoder(): Uint8Array {
  const g = new GraphBuilder();
  const z = g.input('latent_sample', 'float32', ['batch', 4, 'h', 'w']);
  const rgb = g.op('Slice', [z, g.ints([0]), g.ints([3]), g.ints([1])]);
  const up = g.op('Resize', [rgb, '', g.init(Float32Array.of(1, 1, 8, 8), [4])], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
  g.name(up, 'sample');
  g.output('sample', 'float32', ['batch', 3, 'H', 'W']);
  return g.toBytes(17);
}

function vaeEncoder(): Uint8Array {
  const g = new GraphBuilder();
  const x = g.input('sample', 'float32', ['batch', 3, 'H', 'W']);
  const pooled = g.op('AveragePool', [x], { kernel_shape: [8, 8], strides: [8, 8] });
  const c0 = g.op('Slice', [pooled, g.ints([0]), g.ints([1]), g.ints([1])]);
  g.name(g.op('Concat', [pooled, c0], { axis: 1 }), 'latent_sample');
  g.output('latent_sample', 'float32', ['batch', 4, 'h', 'w']);
  return g.toBytes(17);
}

function write(path: string, data: Uint8Array | string): void {
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, data);
}

/** Writes a complete tiny model folder; returns its path. */
export function buildTinyModel(dir: string, opts: TinyModelOptions = {}): string {
  const D = opts.hidden ?? 8;
  const ts = opts.timestep ?? { type: 'int64', shape: [1] };
  mkdirSync(dir, { recursive: true });
  write(join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'ORTStableDiffusionPipeline', _diffusers_version: '0.30.0' }));
  write(
    join(dir, 'scheduler', 'scheduler_config.json'),
    JSON.stringify({
      _class_name: opts.lcm ? 'LCMScheduler' : 'EulerDiscreteScheduler',
      beta_start: 0.00085,
      beta_end: 0.012,
      beta_schedule: 'scaled_linear',
      num_train_timesteps: 1000,
      prediction_type: 'epsilon',
      timestep_spacing: 'trailing',
      steps_offset: 1,
      ...opts.scheduler,
    }),
  );
  mkdirSync(join(dir, 'tokenizer'), { recursive: true });
  for (const f of ['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json']) cpSync(join(TOKENIZER_FIXTURE, f), join(dir, 'tokenizer', f));
  write(join(dir, 'text_encoder', 'model.onnx'), textEncoder(opts.idsType ?? 'int32', D));
  write(join(dir, 'unet', 'model.onnx'), unet(opts.unet ?? 'zero', ts, D, opts.lcm ?? false, opts.fixedBatch));
  if (opts.vaeDecoder !== false) {
    write(join(dir, 'vae_decoder', 'model.onnx'), vaeDecoder());
    write(join(dir, 'vae_decoder', 'config.json'), JSON.stringify({ scaling_factor: opts.vaeScalingFactor ?? 0.18215, sample_size: 64 }));
  }
  if (opts.vaeEncoder) {
    write(join(dir, 'vae_encoder', 'model.onnx'), vaeEncoder());
    write(join(dir, 'vae_encoder', 'config.json'), JSON.stringify({ scaling_factor: opts.vaeScalingFactor ?? 0.18215 }));
  }
  if (opts.manifest) write(join(dir, 'easel-model.json'), JSON.stringify(opts.manifest));
  return dir;
}

/** A TAESD-style decoder folder (same tiny decoder, scaling factor 1). */
export function buildTinyTaesd(dir: string): string {
  write(join(dir, 'vae_decoder', 'model.onnx'), vaeDecoder());
  write(join(dir, 'vae_decoder', 'config.json'), JSON.stringify({ scaling_factor: 1.0 }));
  write(join(dir, 'easel-model.json'), JSON.stringify({ name: 'taesd', kind: 'decoder', family: 'taesd' }));
  return dir;
}

/**
 * An fp16 model: y = Cast(Cast(x, fp16) · W16 + b16, fp32), W and b fp16 initializers/Constant,
 * as fp16 exports with fp32 I/O look. Returns the expected y for x = [1, 2].
 */
export function buildFp16Model(path: string, opts: { fp16Io?: boolean; external?: boolean } = {}): Uint8Array {
  mkdirSync(join(path, '..'), { recursive: true });
  const g = new GraphBuilder();
  if (opts.external) {
    g.useExternalData(`${path}_data`);
    g.externalThreshold = 0;
  }
  const ioType = opts.fp16Io ? 'float16' : 'float32';
  const x = g.input('x', ioType, [1, 2]);
  const x16 = opts.fp16Io ? x : g.op('Cast', [x], { to: DT.FLOAT16 });
  // 0.5, 1.5, -2, 0.25 in half bits.
  const w = g.init(Uint16Array.of(0x3800, 0x3e00, 0xc000, 0x3400), [2, 2], { dataType: DT.FLOAT16 });
  const mm = g.op('MatMul', [x16, w]);
  const bias = g.node('Constant', [], { value: { tensor: { name: 'b', dims: [2], dataType: DT.FLOAT16, rawData: new Uint8Array(Uint16Array.of(0x3c00, 0xbc00).buffer) } as never } })[0]!;
  const sum = g.op('Add', [mm, bias]);
  const y = opts.fp16Io ? sum : g.op('Cast', [sum], { to: DT.FLOAT });
  g.name(y, 'y');
  g.output('y', ioType, [1, 2]);
  const bytes = g.toBytes(17);
  write(path, bytes);
  return bytes;
}
