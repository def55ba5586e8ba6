/**
 * CLIP's byte-level BPE (openai/CLIP simple_tokenizer semantics, as the `tokenizer.json` of SD
 * models spells them: NFC, whitespace collapsed, lower case, words split by CLIP's regex, `</w>`
 * marking a word's end). Reads `vocab.json` + `merges.txt` or a `tokenizer.json`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const BOS = '<|startoftext|>';
export const EOS = '<|endoftext|>';
const WORDS = /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/gu;
/** CLIP keeps the first 48 894 merges (49 152 − 256 − 2). */
const MAX_MERGES = 49152 - 256 - 2;

/** GPT-2's reversible map from bytes to printable characters. */
function byteEncoder(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + extra++);
  return table;
}
const BYTES = byteEncoder();

export interface ClipTokenizerOptions {
  vocab: Map<string, number>;
  /** Merge pairs in rank order, each `"a b"`. */
  merges: string[];
  /** The token sequences are padded with; default `<|endoftext|>` (SD 1.x). SD 2.x / Turbo pad with `!`. */
  padToken?: string;
  maxLength?: number;
}

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly maxLength: number;
  private readonly vocab: Map<string, number>;
  private readonly ranks: Map<string, number>;
  private readonly cache = new Map<string, string[]>();

  constructor(opts: ClipTokenizerOptions) {
    this.vocab = opts.vocab;
    this.ranks = new Map(opts.merges.slice(0, MAX_MERGES).map((m, i) => [m, i]));
    this.maxLength = opts.maxLength ?? 77;
    this.bosId = this.idOf(BOS);
    this.eosId = this.idOf(EOS);
    this.padId = this.idOf(opts.padToken ?? EOS);
  }

  /**
   * Loads a `tokenizer/` folder: `vocab.json` + `merges.txt`, else `tokenizer.json`. The pad token
   * comes from the option, else `special_tokens_map.json`, else `tokenizer_config.json`.
   */
  static fromDir(dir: string, opts: { padToken?: string; maxLength?: number } = {}): ClipTokenizer {
    let vocab: Map<string, number>;
    let merges: string[];
    if (existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt'))) {
      vocab = new Map(Object.entries(JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>));
      merges = readFileSync(join(dir, 'merges.txt'), 'utf8')
        .split('\n')
        .filter((line) => line && !line.startsWith('#version'));
    } else if (existsSync(join(dir, 'tokenizer.json'))) {
      const tj = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as {
        model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[]; end_of_word_suffix?: string };
      };
      if (tj.model?.type !== 'BPE' || !tj.model.vocab || !tj.model.merges) throw new Error(`${dir}/tokenizer.json is not a BPE tokenizer`);
      if (tj.model.end_of_word_suffix !== undefined && tj.model.end_of_word_suffix !== '</w>') {
        throw new Error(`${dir}/tokenizer.json is not CLIP's (word suffix ${JSON.stringify(tj.model.end_of_word_suffix)})`);
      }
      vocab = new Map(Object.entries(tj.model.vocab));
      merges = tj.model.merges.map((m) => (typeof m === 'string' ? m : m.join(' ')));
    } else {
      throw new Error(`no CLIP tokenizer in ${dir} (vocab.json + merges.txt, or tokenizer.json)`);
    }
    const padToken = opts.padToken ?? configuredPad(dir);
    return new ClipTokenizer({ vocab, merges, padToken, maxLength: opts.maxLength ?? configuredMaxLength(dir) });
  }

  private idOf(token: string): number {
    const id = this.vocab.get(token);
    if (id === undefined) throw new Error(`token ${JSON.stringify(token)} is not in the vocabulary`);
    return id;
  }

  private bpe(word: string): string[] {
    const cached = this.cache.get(word);
    if (cached) return cached;
    const chars = [...word];
    let parts = chars.map((c, i) => (i === chars.length - 1 ? `${c}</w>` : c));
    while (parts.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i < parts.length - 1; i++) {
        const r = this.ranks.get(`${parts[i]} ${parts[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const a = parts[best]!;
      const b = parts[best + 1]!;
      const merged: string[] = [];
      for (let i = 0; i < parts.length; i++) {
        if (i < parts.length - 1 && parts[i] === a && parts[i + 1] === b) {
          merged.push(a + b);
          i++;
        } else {
          merged.push(parts[i]!);
        }
      }
      parts = merged;
    }
    if (this.cache.size < 10_000) this.cache.set(word, parts);
    return parts;
  }

  /** Token ids of the text, without BOS/EOS and without truncation. */
  tokenize(text: string): number[] {
    // eslint-disable-next-line no-control-regex
    const clean = text.normalize('NFC').replace(/[\u0000-\u0008\u000b\u000e-\u001f\u007f]/g, '').replace(/\s+/g, ' ').toLowerCase();
    const ids: number[] = [];
    for (const m of clean.matchAll(WORDS)) {
      const word = m[0];
      if (word === BOS || word === EOS) {
        ids.push(this.idOf(word));
        continue;
      }
      const encoded = Array.from(Buffer.from(word, 'utf8'), (b) => BYTES[b]!).join('');
      for (const piece of this.bpe(encoded)) {
        const id = this.vocab.get(piece);
        // Every byte has a token, so BPE pieces always exist in a CLIP vocabulary; skip if not.
        if (id !== undefined) ids.push(id);
      }
    }
    return ids;
  }

  /** BOS + tokens + EOS, unpadded, truncated to maxLength with EOS kept. */
  encode(text: string): number[] {
    const body = this.tokenize(text).slice(0, this.maxLength - 2);
    return [this.bosId, ...body, this.eosId];
  }

  /** `encode` padded to maxLength. */
  encodePadded(text: string): number[] {
    const ids = this.encode(text);
    while (ids.length < this.maxLength) ids.push(this.padId);
    return ids;
  }
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') return (value as { content: string }).content;
  return undefined;
}

function readJson(path: string): Record<string, unknown> | undefined {
  if (!existsSync(path)) return undefined;
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

function configuredPad(dir: string): string | undefined {
  return tokenContent(readJson(join(dir, 'special_tokens_map.json'))?.pad_token) ?? tokenContent(readJson(join(dir, 'tokenizer_config.json'))?.pad_token);
}

function configuredMaxLength(dir: string): number | undefined {
  const v = readJson(join(dir, 'tokenizer_config.json'))?.model_max_length;
  return typeof v === 'number' && v > 2 && v <= 1024 ? v : undefined;
}
