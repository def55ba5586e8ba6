/** fp16 → fp32 conversion on the ONNX protobuf, checked by running the result on the CPU. */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { convertFp16ToFp32 } from '../../src/models/convert-fp16.ts';
import { buildFp16Model } from './support/tiny-models.ts';
import { onnx } from './support/onnx-graph.ts';

let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'easel-convert-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

/** Every place an element type can hide in a graph. */
function fp16Anywhere(path: string): string[] {
  const m = onnx.ModelProto.decode(readFileSync(path));
  const found: string[] = [];
  const g = m.graph!;
  for (const t of g.initializer ?? []) if (t.dataType === 10) found.push(`initializer ${t.name}`);
  for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? [])]) if (v.type?.tensorType?.elemType === 10) found.push(`value ${v.name}`);
  for (const n of g.node ?? []) {
    for (const a of n.attribute ?? []) {
      if (n.opType === 'Cast' && Number(a.i) === 10) found.push(`Cast ${n.name}`);
      if (a.t?.dataType === 10) found.push(`tensor attribute of ${n.name}`);
    }
  }
  return found;
}

async function runY(path: string): Promise<number[]> {
  const s = await ort.InferenceSession.create(path);
  try {
    const meta = s.inputMetadata[0]!;
    assert.ok(meta.isTensor && meta.type === 'float32', 'inputs are fp32 after conversion');
    const out = await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, 2), [1, 2]) });
    return Array.from(out.y!.data as Float32Array);
  } finally {
    await s.release();
  }
}

describe('convertFp16ToFp32', () => {
  test('fp16 weights, Cast-to-fp16 and fp16 constants become fp32; the model computes the same', async () => {
    const src = join(root, 'a', 'fp16', 'model.onnx');
    const dest = join(root, 'a', 'fp32', 'model.onnx');
    buildFp16Model(src);
    assert.ok(fp16Anywhere(src).length >= 3);
    const stats = convertFp16ToFp32(src, dest, { externalThreshold: 4 });
    assert.deepEqual({ initializers: stats.initializers, constants: stats.constants, casts: stats.casts }, { initializers: 1, constants: 1, casts: 1 });
    assert.deepEqual(fp16Anywhere(dest), []);
    assert.ok(existsSync(`${dest}_data`), 'large tensors go to model.onnx_data');
    // x·W + b with W = [[0.5, 1.5], [−2, 0.25]], b = [1, −1] and x = [1, 2].
    assert.deepEqual(await runY(dest), [-2.5, 1]);
  });

  test('fp16 graph inputs and outputs become fp32', async () => {
    const src = join(root, 'b', 'fp16', 'model.onnx');
    const dest = join(root, 'b', 'fp32', 'model.onnx');
    buildFp16Model(src, { fp16Io: true });
    const stats = convertFp16ToFp32(src, dest);
    assert.equal(stats.values, 2);
    assert.deepEqual(fp16Anywhere(dest), []);
    assert.deepEqual(await runY(dest), [-2.5, 1]);
    assert.ok(!existsSync(`${dest}_data`), 'small tensors stay inline');
  });

  test('a source whose weights live in external data is read through it', async () => {
    const src = join(root, 'c', 'fp16', 'model.onnx');
    const dest = join(root, 'c', 'fp32', 'model.onnx');
    buildFp16Model(src, { external: true });
    assert.ok(existsSync(`${src}_data`));
    convertFp16ToFp32(src, dest, { externalThreshold: 4 });
    assert.deepEqual(await runY(dest), [-2.5, 1]);
  });
});
