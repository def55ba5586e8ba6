/**
 * easel's own seeded noise: xoshiro128** seeded through splitmix32, with Box–Muller normals. Each
 * image owns one generator, so its noise depends on its seed alone (not on what it was batched with).
 * It cannot match torch's generator for the same seed; golden images are easel's own.
 */

function splitmix32(state: { s: number }): number {
  state.s = (state.s + 0x9e3779b9) | 0;
  let z = state.s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

const rotl = (x: number, k: number): number => (x << k) | (x >>> (32 - k));

export class SeededRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare: number | undefined;

  /** Any safe integer; negative and fractional seeds are folded into 0..2^53. */
  constructor(seed: number) {
    const s = Math.abs(Math.trunc(seed)) % 2 ** 53;
    const lo = s >>> 0;
    const hi = Math.floor(s / 2 ** 32) >>> 0;
    const st = { s: lo ^ Math.imul(hi, 0x27d4eb2f) };
    this.a = splitmix32(st);
    this.b = splitmix32(st) ^ hi;
    this.c = splitmix32(st);
    this.d = splitmix32(st);
    if ((this.a | this.b | this.c | this.d) === 0) this.d = 1;
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a;
    this.d ^= this.b;
    this.b ^= this.c;
    this.a ^= this.d;
    this.c ^= t;
    this.d = rotl(this.d, 11);
    return result;
  }

  /** Uniform in (0, 1], never 0 (Box–Muller takes its log). */
  nextUnit(): number {
    // 53 bits from two draws.
    const hi = this.nextUint32() >>> 5;
    const lo = this.nextUint32() >>> 6;
    return (hi * 67108864 + lo + 1) / 9007199254740992;
  }

  /** One standard normal. */
  normal(): number {
    if (this.spare !== undefined) {
      const v = this.spare;
      this.spare = undefined;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(this.nextUnit()));
    const theta = 2 * Math.PI * this.nextUnit();
    this.spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** Fills `out` with normals times `scale`. */
  fillNormal(out: Float32Array, scale = 1): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = this.normal() * scale;
    return out;
  }
}
