/**
 * A small ONNX graph builder on onnx-proto, for the test models and the benchmark's random-weight
 * replicas. Initializers can stream into an external data file as they are made, so a multi-GB
 * model never sits in memory whole (and stays under protobuf's 2 GB limit).
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import onnxProto from 'onnx-proto';

export const { onnx } = onnxProto;
export const DT = onnx.TensorProto.DataType;
type Dim = number | string;
type AttrValue = number | string | number[] | { f: number } | { tensor: InstanceType<typeof onnx.TensorProto> } | { floats: number[] };

export const ELEM: Record<string, number> = { float32: DT.FLOAT, float16: DT.FLOAT16, int32: DT.INT32, int64: DT.INT64, double: DT.DOUBLE };

export function valueInfo(name: string, elemType: number, dims: Dim[] | undefined) {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType,
        ...(dims ? { shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } : {}),
      },
    },
  });
}

export function tensorProto(name: string, dims: number[], dataType: number, raw: Uint8Array) {
  return onnx.TensorProto.create({ name, dims, dataType, rawData: raw });
}

const bytes = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

export class GraphBuilder {
  readonly nodes: InstanceType<typeof onnx.NodeProto>[] = [];
  readonly inputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  readonly outputs: InstanceType<typeof onnx.ValueInfoProto>[] = [];
  readonly initializers: InstanceType<typeof onnx.TensorProto>[] = [];
  private counter = 0;
  private external: { fd: number; location: string; offset: number } | undefined;
  /** Initializers at least this big go to the external file when one is open. */
  externalThreshold = 1024;
  params = 0;

  /** Streams large initializers into `dataPath` (referenced relative to the model file). */
  useExternalData(dataPath: string): this {
    this.external = { fd: openSync(dataPath, 'w'), location: basename(dataPath), offset: 0 };
    return this;
  }

  fresh(prefix = 't'): string {
    return `${prefix}_${this.counter++}`;
  }

  input(name: string, type: string | number, dims: Dim[] | undefined): string {
    this.inputs.push(valueInfo(name, typeof type === 'number' ? type : ELEM[type]!, dims));
    return name;
  }

  output(name: string, type: string | number, dims: Dim[] | undefined): string {
    this.outputs.push(valueInfo(name, typeof type === 'number' ? type : ELEM[type]!, dims));
    return name;
  }

  /** A float32 (or other typed) initializer. */
  init(data: Float32Array | Int32Array | BigInt64Array | Uint16Array | Float64Array, dims: number[], opts: { name?: string; dataType?: number } = {}): string {
    const name = opts.name ?? this.fresh('w');
    const dataType =
      opts.dataType ??
      (data instanceof Float32Array ? DT.FLOAT : data instanceof Int32Array ? DT.INT32 : data instanceof BigInt64Array ? DT.INT64 : data instanceof Float64Array ? DT.DOUBLE : DT.FLOAT16);
    if (data instanceof Float32Array || data instanceof Uint16Array) this.params += data.length;
    const raw = bytes(data);
    if (this.external && raw.byteLength >= this.externalThreshold) {
      const ext = this.external;
      const pad = (4096 - (ext.offset % 4096)) % 4096;
      if (pad) writeSync(ext.fd, new Uint8Array(pad));
      ext.offset += pad;
      writeSync(ext.fd, raw);
      this.initializers.push(
        onnx.TensorProto.create({
          name,
          dims,
          dataType,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: ext.location },
            { key: 'offset', value: String(ext.offset) },
            { key: 'length', value: String(raw.byteLength) },
          ],
        }),
      );
      ext.offset += raw.byteLength;
    } else {
      this.initializers.push(tensorProto(name, dims, dataType, new Uint8Array(raw)));
    }
    return name;
  }

  ints(values: number[]): string {
    return this.init(BigInt64Array.from(values.map((v) => BigInt(v))), [values.length]);
  }

  scalar(value: number): string {
    return this.init(Float32Array.of(value), []);
  }

  node(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, nOut = 1, domain?: string): string[] {
    const outputs = Array.from({ length: nOut }, () => this.fresh(op.toLowerCase()));
    this.nodes.push(
      onnx.NodeProto.create({
        opType: op,
        input: inputs,
        output: outputs,
        name: this.fresh(op),
        ...(domain ? { domain } : {}),
        attribute: Object.entries(attrs).map(([name, v]) => attribute(name, v)),
      }),
    );
    return outputs;
  }

  /** One-output node. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.node(op, inputs, attrs)[0]!;
  }

  /** Renames a value to a graph output name (via Identity). */
  name(value: string, as: string): string {
    this.nodes.push(onnx.NodeProto.create({ opType: 'Identity', input: [value], output: [as], name: this.fresh('Identity') }));
    return as;
  }

  toBytes(opset = 17): Uint8Array {
    if (this.external) {
      closeSync(this.external.fd);
      this.external = undefined;
    }
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'easel-tests',
      opsetImport: [{ domain: '', version: opset }],
      graph: { name: 'g', node: this.nodes, input: this.inputs, output: this.outputs, initializer: this.initializers },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

function attribute(name: string, v: AttrValue) {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof v === 'number') return Number.isInteger(v) ? { name, type: T.INT, i: v } : { name, type: T.FLOAT, f: v };
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
  if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
  if ('f' in v) return { name, type: T.FLOAT, f: v.f };
  return { name, type: T.TENSOR, t: v.tensor };
}
