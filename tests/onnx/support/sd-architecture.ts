/**
 * Random-weight ONNX replicas of the Stable Diffusion components, layer for layer as diffusers
 * builds them (GroupNorm as PyTorch exports it: Reshape + InstanceNormalization + affine), for
 * timing the engine where the real weights cannot be downloaded. At `SD_TURBO` scale they are the
 * real SD-Turbo / SD 2.1 shapes: UNet 865 M parameters, OpenCLIP-H text encoder (23 layers used),
 * the SD VAE decoder and the TAESD decoder. Weights stream to external data files as they are made.
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DT, GraphBuilder } from './onnx-graph.ts';

export interface SdArchitecture {
  unetChannels: number[];
  /** Attention heads per UNet block (SD 2.x: 64-wide heads). */
  unetHeads: number[];
  layersPerBlock: number;
  crossDim: number;
  textLayers: number;
  textWidth: number;
  textHeads: number;
  vaeChannels: number[];
  taesdChannels: number;
  groups: number;
}

/** SD-Turbo = SD 2.1 base (512²): the real sizes. */
export const SD_TURBO: SdArchitecture = {
  unetChannels: [320, 640, 1280, 1280],
  unetHeads: [5, 10, 20, 20],
  layersPerBlock: 2,
  crossDim: 1024,
  textLayers: 23,
  textWidth: 1024,
  textHeads: 16,
  vaeChannels: [128, 256, 512, 512],
  taesdChannels: 64,
  groups: 32,
};

/** The same topology at a quarter of the width (for quick runs). */
export const SD_TURBO_QUARTER: SdArchitecture = {
  unetChannels: [80, 160, 320, 320],
  unetHeads: [2, 4, 8, 8],
  layersPerBlock: 2,
  crossDim: 256,
  textLayers: 6,
  textWidth: 256,
  textHeads: 4,
  vaeChannels: [32, 64, 128, 128],
  taesdChannels: 16,
  groups: 8,
};

/** Weights with variance 1/fan-in (activations stay in range through the depth). */
class Weights {
  private s = 0x9e3779b9;
  uniform(n: number, fanIn: number): Float32Array {
    const a = Math.sqrt(3 / fanIn);
    const out = new Float32Array(n);
    let s = this.s;
    for (let i = 0; i < n; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      out[i] = ((s >>> 0) / 4294967296 - 0.5) * 2 * a;
    }
    this.s = s;
    return out;
  }
}

class Layers {
  readonly g: GraphBuilder;
  private readonly w = new Weights();
  private readonly groups: number;

  constructor(g: GraphBuilder, groups: number) {
    this.g = g;
    this.groups = groups;
  }

  const(values: Float32Array, dims: number[]): string {
    return this.g.init(values, dims);
  }

  conv(x: string, cin: number, cout: number, k: number, opts: { stride?: number; bias?: boolean } = {}): string {
    const w = this.g.init(this.w.uniform(cout * cin * k * k, cin * k * k), [cout, cin, k, k]);
    const inputs = [x, w];
    if (opts.bias !== false) inputs.push(this.g.init(new Float32Array(cout), [cout]));
    const p = k >> 1;
    return this.g.op('Conv', inputs, { kernel_shape: [k, k], strides: [opts.stride ?? 1, opts.stride ?? 1], pads: [p, p, p, p] });
  }

  linear(x: string, din: number, dout: number, bias = true): string {
    const y = this.g.op('MatMul', [x, this.g.init(this.w.uniform(din * dout, din), [din, dout])]);
    return bias ? this.g.op('Add', [y, this.g.init(new Float32Array(dout), [dout])]) : y;
  }

  silu(x: string): string {
    return this.g.op('Mul', [x, this.g.op('Sigmoid', [x])]);
  }

  gelu(x: string): string {
    const erf = this.g.op('Erf', [this.g.op('Div', [x, this.g.scalar(Math.SQRT2)])]);
    return this.g.op('Mul', [this.g.op('Mul', [x, this.g.scalar(0.5)]), this.g.op('Add', [erf, this.g.scalar(1)])]);
  }

  groupNorm(x: string, c: number, eps = 1e-5): string {
    const grouped = this.g.op('Reshape', [x, this.g.ints([0, this.groups, -1])]);
    const norm = this.g.op('InstanceNormalization', [grouped, this.const(new Float32Array(this.groups).fill(1), [this.groups]), this.const(new Float32Array(this.groups), [this.groups])], { epsilon: { f: eps } });
    const back = this.g.op('Reshape', [norm, this.g.op('Shape', [x])]);
    return this.g.op('Add', [this.g.op('Mul', [back, this.const(new Float32Array(c).fill(1), [c, 1, 1])]), this.const(new Float32Array(c), [c, 1, 1])]);
  }

  layerNorm(x: string, c: number): string {
    return this.g.op('LayerNormalization', [x, this.const(new Float32Array(c).fill(1), [c]), this.const(new Float32Array(c), [c])], { axis: -1, epsilon: { f: 1e-5 } });
  }

  /** Multi-head attention of [B,N,C] queries over a [B,M,ctx] context. */
  attention(x: string, ctx: string, c: number, ctxDim: number, heads: number, mask?: string): string {
    const d = c / heads;
    const split = (t: string, perm: number[]) => this.g.op('Transpose', [this.g.op('Reshape', [t, this.g.ints([0, -1, heads, d])])], { perm });
    const q = split(this.linear(x, c, c, false), [0, 2, 1, 3]);
    const k = split(this.linear(ctx, ctxDim, c, false), [0, 2, 3, 1]);
    const v = split(this.linear(ctx, ctxDim, c, false), [0, 2, 1, 3]);
    let scores = this.g.op('Mul', [this.g.op('MatMul', [q, k]), this.g.scalar(1 / Math.sqrt(d))]);
    if (mask) scores = this.g.op('Add', [scores, mask]);
    const out = this.g.op('MatMul', [this.g.op('Softmax', [scores], { axis: -1 }), v]);
    const merged = this.g.op('Reshape', [this.g.op('Transpose', [out], { perm: [0, 2, 1, 3] }), this.g.ints([0, -1, c])]);
    return this.linear(merged, c, c);
  }

  resnet(x: string, cin: number, cout: number, temb?: { act: string; dim: number }): string {
    let h = this.conv(this.silu(this.groupNorm(x, cin)), cin, cout, 3);
    if (temb) h = this.g.op('Add', [h, this.g.op('Reshape', [this.linear(temb.act, temb.dim, cout), this.g.ints([-1, cout, 1, 1])])]);
    h = this.conv(this.silu(this.groupNorm(h, cout)), cout, cout, 3);
    const skip = cin === cout ? x : this.conv(x, cin, cout, 1);
    return this.g.op('Add', [skip, h]);
  }

  /** diffusers Transformer2DModel with linear projections (SD 2.x) and one BasicTransformerBlock. */
  transformer(x: string, c: number, heads: number, ctx: string, ctxDim: number): string {
    const n = this.groupNorm(x, c, 1e-6);
    const seq = this.g.op('Transpose', [this.g.op('Reshape', [n, this.g.ints([0, c, -1])])], { perm: [0, 2, 1] });
    let h = this.linear(seq, c, c);
    let t = this.layerNorm(h, c);
    h = this.g.op('Add', [this.attention(t, t, c, c, heads), h]);
    h = this.g.op('Add', [this.attention(this.layerNorm(h, c), ctx, c, ctxDim, heads), h]);
    const proj = this.linear(this.layerNorm(h, c), c, c * 8);
    const [a, gate] = this.g.node('Split', [proj, this.g.ints([c * 4, c * 4])], { axis: -1 }, 2) as [string, string];
    h = this.g.op('Add', [this.linear(this.g.op('Mul', [a, this.gelu(gate)]), c * 4, c), h]);
    h = this.linear(h, c, c);
    const back = this.g.op('Reshape', [this.g.op('Transpose', [h], { perm: [0, 2, 1] }), this.g.op('Shape', [x])]);
    return this.g.op('Add', [back, x]);
  }

  upsample(x: string, c: number, conv = true): string {
    const up = this.g.op('Resize', [x, '', this.const(Float32Array.of(1, 1, 2, 2), [4])], { mode: 'nearest' });
    return conv ? this.conv(up, c, c, 3) : up;
  }
}

function save(g: GraphBuilder, dir: string, name: string): { path: string; params: number } {
  const path = join(dir, name, 'model.onnx');
  writeFileSync(path, g.toBytes(17));
  return { path, params: g.params };
}

function builder(dir: string, name: string): GraphBuilder {
  mkdirSync(join(dir, name), { recursive: true });
  return new GraphBuilder().useExternalData(join(dir, name, 'model.onnx_data'));
}

/** UNet2DConditionModel (SD 2.x layout): sample, timestep (int64 [1]), encoder_hidden_states → out_sample. */
export function buildUnet(dir: string, a: SdArchitecture): { path: string; params: number } {
  const g = builder(dir, 'unet');
  const L = new Layers(g, a.groups);
  const ch = a.unetChannels;
  const sample = g.input('sample', 'float32', ['batch', 4, 'height', 'width']);
  const t = g.input('timestep', 'int64', [1]);
  const ctx = g.input('encoder_hidden_states', 'float32', ['batch', 77, a.crossDim]);

  const half = ch[0]! / 2;
  const freqs = Float32Array.from({ length: half }, (_, i) => Math.exp((-Math.log(10000) * i) / half));
  const arg = g.op('Mul', [g.op('Unsqueeze', [g.op('Cast', [t], { to: DT.FLOAT }), g.ints([1])]), L.const(freqs, [1, half])]);
  const tproj = g.op('Concat', [g.op('Cos', [arg]), g.op('Sin', [arg])], { axis: 1 });
  const tdim = ch[0]! * 4;
  const temb = L.linear(L.silu(L.linear(tproj, ch[0]!, tdim)), tdim, tdim);
  const tact = { act: L.silu(temb), dim: tdim };

  let h = L.conv(sample, 4, ch[0]!, 3);
  const skips: [string, number][] = [[h, ch[0]!]];
  let cin = ch[0]!;
  ch.forEach((cout, i) => {
    const attn = i < ch.length - 1;
    for (let j = 0; j < a.layersPerBlock; j++) {
      h = L.resnet(h, cin, cout, tact);
      cin = cout;
      if (attn) h = L.transformer(h, cout, a.unetHeads[i]!, ctx, a.crossDim);
      skips.push([h, cout]);
    }
    if (i < ch.length - 1) {
      h = L.conv(h, cout, cout, 3, { stride: 2 });
      skips.push([h, cout]);
    }
  });
  const top = ch.at(-1)!;
  h = L.resnet(h, top, top, tact);
  h = L.transformer(h, top, a.unetHeads.at(-1)!, ctx, a.crossDim);
  h = L.resnet(h, top, top, tact);

  const rev = [...ch].reverse();
  const revHeads = [...a.unetHeads].reverse();
  let prev = top;
  rev.forEach((cout, i) => {
    const attn = i > 0;
    for (let j = 0; j <= a.layersPerBlock; j++) {
      const [skip, sc] = skips.pop()!;
      h = L.resnet(g.op('Concat', [h, skip], { axis: 1 }), prev + sc, cout, tact);
      prev = cout;
      if (attn) h = L.transformer(h, cout, revHeads[i]!, ctx, a.crossDim);
    }
    if (i < rev.length - 1) h = L.upsample(h, cout);
  });
  h = L.conv(L.silu(L.groupNorm(h, ch[0]!)), ch[0]!, 4, 3);
  g.name(h, 'out_sample');
  g.output('out_sample', 'float32', ['batch', 4, 'height', 'width']);
  return save(g, dir, 'unet');
}

/** CLIP text transformer (pre-LN, causal, GELU MLP): input_ids int32 [B,77] → last_hidden_state. */
export function buildTextEncoder(dir: string, a: SdArchitecture): { path: string; params: number } {
  const g = builder(dir, 'text_encoder');
  const L = new Layers(g, a.groups);
  const c = a.textWidth;
  const ids = g.input('input_ids', 'int32', ['batch', 77]);
  const tok = g.op('Gather', [L.const(new Weights().uniform(49408 * c, c), [49408, c]), ids], { axis: 0 });
  let h = g.op('Add', [tok, L.const(new Weights().uniform(77 * c, c), [1, 77, c])]);
  const mask = new Float32Array(77 * 77);
  for (let i = 0; i < 77; i++) for (let j = i + 1; j < 77; j++) mask[i * 77 + j] = -1e9;
  const causal = L.const(mask, [1, 1, 77, 77]);
  for (let l = 0; l < a.textLayers; l++) {
    const n = L.layerNorm(h, c);
    h = g.op('Add', [h, L.attention(n, n, c, c, a.textHeads, causal)]);
    h = g.op('Add', [h, L.linear(L.gelu(L.linear(L.layerNorm(h, c), c, 4 * c)), 4 * c, c)]);
  }
  g.name(L.layerNorm(h, c), 'last_hidden_state');
  g.output('last_hidden_state', 'float32', ['batch', 77, c]);
  return save(g, dir, 'text_encoder');
}

/** The SD VAE decoder (post_quant_conv, mid block with attention, 4 up blocks of 3 resnets). */
export function buildVaeDecoder(dir: string, a: SdArchitecture): { path: string; params: number } {
  const g = builder(dir, 'vae_decoder');
  const L = new Layers(g, a.groups);
  const ch = [...a.vaeChannels].reverse();
  const z = g.input('latent_sample', 'float32', ['batch', 4, 'h', 'w']);
  let h = L.conv(L.conv(z, 4, 4, 1), 4, ch[0]!, 3);
  h = L.resnet(h, ch[0]!, ch[0]!);
  {
    // Single-head self-attention over all positions.
    const c = ch[0]!;
    const seq = g.op('Transpose', [g.op('Reshape', [L.groupNorm(h, c, 1e-6), g.ints([0, c, -1])])], { perm: [0, 2, 1] });
    const att = L.attention(seq, seq, c, c, 1);
    h = g.op('Add', [g.op('Reshape', [g.op('Transpose', [att], { perm: [0, 2, 1] }), g.op('Shape', [h])]), h]);
  }
  h = L.resnet(h, ch[0]!, ch[0]!);
  let cin = ch[0]!;
  ch.forEach((cout, i) => {
    for (let j = 0; j < 3; j++) {
      h = L.resnet(h, cin, cout);
      cin = cout;
    }
    if (i < ch.length - 1) h = L.upsample(h, cout);
  });
  h = L.conv(L.silu(L.groupNorm(h, cin)), cin, 3, 3);
  g.name(h, 'sample');
  g.output('sample', 'float32', ['batch', 3, 'H', 'W']);
  return save(g, dir, 'vae_decoder');
}

/** TAESD's decoder (madebyollin/taesd): clamp, 64-wide residual blocks, three ×2 upsamples. */
export function buildTaesdDecoder(dir: string, a: SdArchitecture): { path: string; params: number } {
  const g = builder(dir, 'vae_decoder');
  const L = new Layers(g, a.groups);
  const c = a.taesdChannels;
  const relu = (x: string) => g.op('Relu', [x]);
  const block = (x: string) => relu(g.op('Add', [L.conv(relu(L.conv(relu(L.conv(x, c, c, 3)), c, c, 3)), c, c, 3), x]));
  const z = g.input('latent_sample', 'float32', ['batch', 4, 'h', 'w']);
  let h = g.op('Mul', [g.op('Tanh', [g.op('Div', [z, g.scalar(3)])]), g.scalar(3)]);
  h = relu(L.conv(h, 4, c, 3));
  for (let stage = 0; stage < 3; stage++) {
    h = block(block(block(h)));
    h = L.conv(L.upsample(h, c, false), c, c, 3, { bias: false });
  }
  h = L.conv(block(h), c, 3, 3);
  g.name(h, 'sample');
  g.output('sample', 'float32', ['batch', 3, 'H', 'W']);
  return save(g, dir, 'vae_decoder');
}

export interface SdFolders {
  model: string;
  taesd: string;
  params: Record<string, number>;
  buildSeconds: number;
}

/**
 * A complete SD-Turbo-shaped model folder (plus a TAESD folder beside it), built once per
 * architecture and reused while `<root>/.../easel-model.json` exists.
 */
export function buildSdFolders(root: string, a: SdArchitecture, tokenizerDir: string): SdFolders {
  const model = join(root, 'model');
  const taesd = join(root, 'taesd');
  const done = join(root, 'params.json');
  if (existsSync(done)) return { model, taesd, params: JSON.parse(readFileSync(done, 'utf8')), buildSeconds: 0 };
  const t0 = performance.now();
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const params: Record<string, number> = {
    text_encoder: buildTextEncoder(model, a).params,
    unet: buildUnet(model, a).params,
    vae_decoder: buildVaeDecoder(model, a).params,
    taesd_decoder: buildTaesdDecoder(taesd, a).params,
  };
  mkdirSync(join(model, 'tokenizer'), { recursive: true });
  for (const f of ['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json']) cpSync(join(tokenizerDir, f), join(model, 'tokenizer', f));
  mkdirSync(join(model, 'scheduler'), { recursive: true });
  writeFileSync(join(model, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'trailing', prediction_type: 'epsilon' }));
  writeFileSync(join(model, 'vae_decoder', 'config.json'), JSON.stringify({ scaling_factor: 0.18215, sample_size: 512 }));
  writeFileSync(join(model, 'easel-model.json'), JSON.stringify({ name: 'sd-turbo-random', kind: 'pipeline', family: 'turbo', padToken: '!' }));
  writeFileSync(join(taesd, 'vae_decoder', 'config.json'), JSON.stringify({ scaling_factor: 1.0 }));
  writeFileSync(join(taesd, 'easel-model.json'), JSON.stringify({ name: 'taesd', kind: 'decoder', family: 'taesd', outputRange: [0, 1] }));
  writeFileSync(done, JSON.stringify(params));
  return { model, taesd, params, buildSeconds: (performance.now() - t0) / 1000 };
}
