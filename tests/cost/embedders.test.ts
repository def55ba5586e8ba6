/**
 * The ONNX CLIP embedder on a tiny diffusers folder whose text encoder computes
 * hidden[t, k] = id[t] · 1e-4 · (k+1)/D: the mean over the prompt's tokens points along (k+1)/D
 * whatever the prompt, so the embedding is predictable; both int32 and int64 token-id exports work.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { OnnxClipEmbedder, createEmbedder, normalizeVector } from '../../src/cache/embedders.ts';
import { buildTinyModel } from '../onnx/support/tiny-models.ts';

describe('the ONNX CLIP text-encoder embedder', () => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-clip-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const D = 16;
  const expected = normalizeVector(Float32Array.from({ length: D }, (_, k) => (k + 1) / D));

  for (const idsType of ['int32', 'int64'] as const) {
    test(`embeds a prompt through the model's text encoder (${idsType} ids)`, async () => {
      const folder = buildTinyModel(join(dir, idsType), { idsType, hidden: D });
      const e = createEmbedder({ type: 'onnx-clip', modelDir: folder }) as OnnxClipEmbedder;
      try {
        const v = await e.embed('a red fox in the snow');
        assert.equal(v.length, D);
        for (let k = 0; k < D; k++) assert.ok(Math.abs(v[k]! - expected[k]!) < 1e-5);
        assert.match(e.id, /^onnx-clip:/);
      } finally {
        await e.close();
      }
    });
  }

  test('a folder without a text encoder is a clear error', async () => {
    const e = new OnnxClipEmbedder(join(dir, 'missing'));
    await assert.rejects(e.embed('x'), /text_encoder[/\\]model\.onnx not found/);
  });
});
