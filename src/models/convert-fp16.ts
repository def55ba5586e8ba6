/**
 * fp16 → fp32 conversion of an ONNX model, done on the protobuf: fp16 initializers and constant
 * tensors become fp32, Cast-to-fp16 becomes Cast-to-fp32, fp16 graph inputs/outputs/value infos
 * become fp32. The CPU provider runs fp32 far faster than fp16 (and some fp16 kernels not at all),
 * while SD-Turbo is only published as fp16. Large tensors go to an external data file next to the
 * output (`<name>.onnx_data`), so models past protobuf's 2 GB limit come out valid.
 */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import onnxProto from 'onnx-proto';
import { halfToFloat } from '../backends/onnx/half-float.ts';

const { onnx } = onnxProto;
type Graph = onnxProto.onnx.IGraphProto;
type Tensor = onnxProto.onnx.ITensorProto;
type ValueInfo = onnxProto.onnx.IValueInfoProto;

const FLOAT = onnx.TensorProto.DataType.FLOAT;
const FLOAT16 = onnx.TensorProto.DataType.FLOAT16;
const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;
const ALIGN = 4096;

export interface ConvertStats {
  initializers: number;
  constants: number;
  casts: number;
  values: number;
  /** fp32 bytes written to the external data file. */
  externalBytes: number;
}

export interface ConvertOptions {
  /** Tensors at least this many bytes go to the external file (default 1 KiB). */
  externalThreshold?: number;
}

/** Reads `src` (with its external data, if any) and writes the fp32 model to `dest` (+ `dest_data`). */
export function convertFp16ToFp32(src: string, dest: string, opts: ConvertOptions = {}): ConvertStats {
  const threshold = opts.externalThreshold ?? 1024;
  const model = onnx.ModelProto.decode(readFileSync(src));
  const srcDir = dirname(src);
  const dataName = `${basename(dest)}_data`;
  const dataPath = join(dirname(dest), dataName);
  const tmpData = `${dataPath}.tmp`;
  const tmpModel = `${dest}.tmp`;
  mkdirSync(dirname(dest), { recursive: true });
  const fd = openSync(tmpData, 'w');
  const stats: ConvertStats = { initializers: 0, constants: 0, casts: 0, values: 0, externalBytes: 0 };
  let offset = 0;
  const externalFds = new Map<string, number>();

  const readExternal = (t: Tensor): Uint8Array => {
    const entry = (k: string) => (t.externalData ?? []).find((e) => e.key === k)?.value ?? undefined;
    const location = entry('location');
    if (!location) throw new Error(`tensor ${t.name}: external data without a location`);
    const path = join(srcDir, location);
    let efd = externalFds.get(path);
    if (efd === undefined) {
      efd = openSync(path, 'r');
      externalFds.set(path, efd);
    }
    const length = Number(entry('length') ?? NaN);
    const at = Number(entry('offset') ?? 0);
    const size = Number.isFinite(length) ? length : elementCount(t) * (t.dataType === FLOAT16 ? 2 : 4);
    const buf = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const n = readSync(efd, buf, got, size - got, at + got);
      if (n === 0) throw new Error(`${path}: ends before tensor ${t.name} (offset ${at}, length ${size})`);
      got += n;
    }
    return buf;
  };

  /** The tensor's payload as fp32 bytes if it was fp16, else its bytes as stored. */
  const payload = (t: Tensor): { bytes: Uint8Array; converted: boolean } | undefined => {
    let raw: Uint8Array | undefined;
    if (t.dataLocation === EXTERNAL) raw = readExternal(t);
    else if (t.rawData && t.rawData.length) raw = t.rawData;
    if (t.dataType !== FLOAT16) return raw ? { bytes: raw, converted: false } : undefined;
    let halves: Uint16Array;
    if (raw) {
      const aligned = raw.byteOffset % 2 === 0 ? raw : new Uint8Array(raw);
      halves = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
    } else {
      // fp16 stored in int32_data, one half per element (the low 16 bits).
      halves = Uint16Array.from(t.int32Data ?? [], (v) => v & 0xffff);
    }
    const f = halfToFloat(halves);
    return { bytes: new Uint8Array(f.buffer), converted: true };
  };

  const place = (t: Tensor, bytes: Uint8Array, external: boolean) => {
    t.int32Data = [];
    t.floatData = [];
    t.externalData = [];
    if (external && bytes.byteLength >= threshold) {
      const pad = (ALIGN - (offset % ALIGN)) % ALIGN;
      if (pad) writeSync(fd, new Uint8Array(pad));
      offset += pad;
      writeSync(fd, bytes);
      t.rawData = new Uint8Array(0);
      t.dataLocation = EXTERNAL;
      t.externalData = [
        onnx.StringStringEntryProto.create({ key: 'location', value: dataName }),
        onnx.StringStringEntryProto.create({ key: 'offset', value: String(offset) }),
        onnx.StringStringEntryProto.create({ key: 'length', value: String(bytes.byteLength) }),
      ];
      offset += bytes.byteLength;
      stats.externalBytes += bytes.byteLength;
    } else {
      t.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
      t.rawData = bytes;
    }
  };

  const convertTensor = (t: Tensor, external: boolean): boolean => {
    const was16 = t.dataType === FLOAT16;
    const p = payload(t);
    if (was16) t.dataType = FLOAT;
    if (p) place(t, p.bytes, external);
    else if (was16) place(t, new Uint8Array(0), false);
    return was16;
  };

  const fixValue = (v: ValueInfo) => {
    const tt = v.type?.tensorType;
    if (tt && tt.elemType === FLOAT16) {
      tt.elemType = FLOAT;
      stats.values++;
    }
  };

  const walk = (g: Graph) => {
    for (const t of g.initializer ?? []) if (convertTensor(t, true)) stats.initializers++;
    for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? [])]) fixValue(v);
    for (const node of g.node ?? []) {
      for (const a of node.attribute ?? []) {
        if (node.opType === 'Cast' && a.name === 'to' && Number(a.i) === FLOAT16) {
          a.i = FLOAT;
          stats.casts++;
        } else if (a.name === 'dtype' && Number(a.i) === FLOAT16) {
          a.i = FLOAT;
        }
        if (a.t && convertTensor(a.t, false)) stats.constants++;
        for (const t of a.tensors ?? []) if (convertTensor(t, false)) stats.constants++;
        if (a.g) walk(a.g);
        for (const sub of a.graphs ?? []) walk(sub);
      }
    }
  };

  try {
    if (!model.graph) throw new Error(`${src} has no graph`);
    walk(model.graph);
    closeSync(fd);
    writeFileSync(tmpModel, onnx.ModelProto.encode(model).finish());
    if (stats.externalBytes > 0) renameSync(tmpData, dataPath);
    else rmSync(tmpData, { force: true });
    renameSync(tmpModel, dest);
  } catch (err) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    rmSync(tmpData, { force: true });
    rmSync(tmpModel, { force: true });
    throw err;
  } finally {
    for (const efd of externalFds.values()) closeSync(efd);
  }
  return stats;
}

/** True when the model declares any fp16 initializer (reads the whole file; call once per pull). */
export function hasFp16Initializers(path: string): boolean {
  if (!existsSync(path)) return false;
  const model = onnx.ModelProto.decode(readFileSync(path));
  return Boolean(model.graph?.initializer?.some((t) => t.dataType === FLOAT16));
}

function elementCount(t: Tensor): number {
  return (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1);
}
