/**
 * Prompt embedders for the semantic cache. Pluggable: an OpenAI-compatible `/v1/embeddings`
 * endpoint, the CLIP text encoder of an ONNX diffusion model folder (the one the built-in engine
 * runs, mean-pooled over the prompt's tokens), or a hashed bag of words and character trigrams that
 * needs no model (deterministic; it catches rewordings that share words, not synonyms).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { EmbedderConfig } from './config.ts';

export interface Embedder {
  /** A stable name: embeddings from different embedders are never compared. */
  readonly id: string;
  embed(text: string): Promise<Float32Array>;
  close?(): Promise<void>;
}

export function normalizeVector(v: Float32Array): Float32Array {
  let norm = 0;
  for (const x of v) norm += x * x;
  norm = Math.sqrt(norm);
  if (norm > 0) for (let i = 0; i < v.length; i++) v[i]! /= norm;
  return v;
}

/** Cosine similarity of two vectors (normalised ones: their dot product). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return -1;
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na > 0 && nb > 0 ? dot / Math.sqrt(na * nb) : 0;
}

const STOP = new Set(['a', 'an', 'the', 'of', 'in', 'on', 'at', 'with', 'and', 'to', 'for', 'is', 'by']);

/** Hashed features: words (weight 1) and character trigrams (weight 0.5), L2-normalised. */
export class HashedEmbedder implements Embedder {
  readonly id: string;
  private readonly dims: number;

  constructor(dimensions = 256) {
    this.dims = dimensions;
    this.id = `hashed-${dimensions}`;
  }

  private bucket(feature: string): [number, number] {
    const h = createHash('sha1').update(feature).digest();
    return [h.readUInt32LE(0) % this.dims, h[4]! & 1 ? 1 : -1];
  }

  async embed(text: string): Promise<Float32Array> {
    const v = new Float32Array(this.dims);
    const words = text.toLowerCase().normalize('NFKC').match(/[\p{L}\p{N}]+/gu) ?? [];
    for (const w of words) {
      if (STOP.has(w)) continue;
      const [i, s] = this.bucket(`w:${w}`);
      v[i]! += s;
      const padded = ` ${w} `;
      for (let k = 0; k + 3 <= padded.length; k++) {
        const [j, t] = this.bucket(`t:${padded.slice(k, k + 3)}`);
        v[j]! += 0.5 * t;
      }
    }
    return normalizeVector(v);
  }
}

/** An OpenAI-compatible embeddings endpoint. */
export class OpenAIEmbedder implements Embedder {
  readonly id: string;
  private readonly url: string;
  private readonly model: string;
  private readonly apiKey: string | undefined;
  private readonly timeoutMs: number;

  constructor(cfg: Extract<EmbedderConfig, { type: 'openai' }>) {
    this.url = `${cfg.baseUrl.replace(/\/+$/, '')}/embeddings`;
    this.model = cfg.model;
    this.apiKey = cfg.apiKey ?? process.env[cfg.apiKeyEnv];
    this.timeoutMs = cfg.timeoutSeconds * 1000;
    this.id = `openai:${cfg.baseUrl}:${cfg.model}`;
  }

  async embed(text: string): Promise<Float32Array> {
    const res = await fetch(this.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(this.apiKey ? { authorization: `Bearer ${this.apiKey}` } : {}) },
      body: JSON.stringify({ model: this.model, input: text }),
      signal: AbortSignal.timeout(this.timeoutMs),
    });
    if (!res.ok) throw new Error(`embeddings endpoint answered ${res.status}: ${(await res.text()).slice(0, 200)}`);
    const body = (await res.json()) as { data?: { embedding?: number[] }[] };
    const e = body.data?.[0]?.embedding;
    if (!Array.isArray(e) || e.length === 0) throw new Error('embeddings endpoint returned no embedding');
    return normalizeVector(Float32Array.from(e));
  }
}

/**
 * The CLIP text encoder of a diffusers ONNX folder (`text_encoder/model.onnx` + `tokenizer/`), the
 * same one the built-in engine conditions images on; the embedding is the mean of the last hidden
 * state over the prompt's tokens. onnxruntime is loaded only when this embedder is configured.
 */
export class OnnxClipEmbedder implements Embedder {
  readonly id: string;
  private readonly dir: string;
  private session: Promise<{ run(text: string): Promise<Float32Array>; close(): Promise<void> }> | undefined;

  constructor(modelDir: string) {
    this.dir = modelDir;
    this.id = `onnx-clip:${modelDir}`;
  }

  private open() {
    this.session ??= (async () => {
      const encoderPath = join(this.dir, 'text_encoder', 'model.onnx');
      if (!existsSync(encoderPath)) throw new Error(`${encoderPath} not found: cache.semantic.embedder.modelDir must be a diffusers ONNX folder`);
      const ort = await import('onnxruntime-node');
      const { ClipTokenizer } = await import('../backends/onnx/clip-tokenizer.ts');
      const tokenizer = ClipTokenizer.fromDir(join(this.dir, 'tokenizer'));
      const session = await ort.InferenceSession.create(encoderPath);
      const inputName = session.inputNames[0]!;
      let int64 = false;
      return {
        run: async (text: string) => {
          const used = tokenizer.encode(text).length;
          const ids = tokenizer.encodePadded(text);
          const feed = (wide: boolean) =>
            wide ? new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) : new ort.Tensor('int32', Int32Array.from(ids), [1, ids.length]);
          let out;
          try {
            out = await session.run({ [inputName]: feed(int64) });
          } catch (err) {
            if (int64) throw err;
            int64 = true; // the encoder wants int64 token ids
            out = await session.run({ [inputName]: feed(true) });
          }
          const hidden = out[session.outputNames[0]!]!;
          const dims = hidden.dims[hidden.dims.length - 1]!;
          const data = hidden.data as Float32Array;
          const v = new Float32Array(dims);
          for (let t = 0; t < used; t++) for (let d = 0; d < dims; d++) v[d]! += data[t * dims + d]!;
          return normalizeVector(v);
        },
        close: () => session.release(),
      };
    })();
    return this.session;
  }

  async embed(text: string): Promise<Float32Array> {
    return (await this.open()).run(text);
  }

  async close(): Promise<void> {
    if (this.session) await (await this.session.catch(() => undefined))?.close().catch(() => {});
  }
}

export function createEmbedder(cfg: EmbedderConfig | undefined): Embedder | undefined {
  if (!cfg) return undefined;
  if (cfg.type === 'openai') return new OpenAIEmbedder(cfg);
  if (cfg.type === 'onnx-clip') return new OnnxClipEmbedder(cfg.modelDir);
  return new HashedEmbedder(cfg.dimensions);
}
