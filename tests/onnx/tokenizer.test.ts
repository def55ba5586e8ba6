import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipTokenizer } from '../../src/backends/onnx/clip-tokenizer.ts';
import { TOKENIZER_FIXTURE } from './support/tiny-models.ts';

const sd15 = ClipTokenizer.fromDir(TOKENIZER_FIXTURE);

describe('CLIP BPE tokenizer over the real CLIP vocabulary', () => {
  test('golden vector: "An astronaut riding a horse"', () => {
    assert.deepEqual(sd15.encode('An astronaut riding a horse'), [49406, 550, 18376, 6765, 320, 4558, 49407]);
  });

  test('lower-cases, collapses whitespace, splits punctuation, digits and contractions like CLIP', () => {
    // Same ids with any casing or spacing.
    assert.deepEqual(sd15.encode('  AN   Astronaut\triding\na HORSE '), sd15.encode('An astronaut riding a horse'));
    const ids = sd15.tokenize("it's 4K!!");
    // it, 's, 4, k, !!
    assert.equal(ids.length, 5);
    assert.equal(ids[2], sd15.tokenize('4')[0]);
    assert.deepEqual(sd15.tokenize('<|endoftext|>'), [49407]);
  });

  test('every byte has a token: emoji and non-Latin text round-trip to ids', () => {
    const ids = sd15.tokenize('東京 🐱 café');
    assert.ok(ids.length >= 4);
    assert.ok(ids.every((id) => Number.isInteger(id) && id >= 0 && id < 49408));
  });

  test('pads to 77 with <|endoftext|> for SD 1.x, with "!" (id 0) for SD 2.x / Turbo', () => {
    const padded = sd15.encodePadded('a cat');
    assert.equal(padded.length, 77);
    assert.deepEqual(padded.slice(0, 4), [49406, 320, 2368, 49407]);
    assert.ok(padded.slice(4).every((id) => id === 49407));
    const turbo = ClipTokenizer.fromDir(TOKENIZER_FIXTURE, { padToken: '!' });
    assert.equal(turbo.padId, 0);
    assert.ok(turbo.encodePadded('a cat').slice(4).every((id) => id === 0));
  });

  test('truncates to 77 tokens and keeps the end token', () => {
    const ids = sd15.encode('cat '.repeat(200));
    assert.equal(ids.length, 77);
    assert.equal(ids[0], 49406);
    assert.equal(ids[76], 49407);
  });

  test('a tokenizer.json with the same vocabulary gives the same ids', () => {
    const dir = mkdtempSync(join(tmpdir(), 'easel-tok-'));
    try {
      const vocab = JSON.parse(readFileSync(join(TOKENIZER_FIXTURE, 'vocab.json'), 'utf8'));
      const merges = readFileSync(join(TOKENIZER_FIXTURE, 'merges.txt'), 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab, merges: merges.map((m) => m.split(' ')), end_of_word_suffix: '</w>' } }));
      writeFileSync(join(dir, 'special_tokens_map.json'), JSON.stringify({ pad_token: '!' }));
      const fromJson = ClipTokenizer.fromDir(dir);
      assert.deepEqual(fromJson.encode('An astronaut riding a horse'), [49406, 550, 18376, 6765, 320, 4558, 49407]);
      assert.equal(fromJson.padId, 0, 'pad token read from special_tokens_map.json');
      // A non-CLIP tokenizer.json (no </w> suffix) is refused rather than silently giving wrong ids.
      writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ model: { type: 'BPE', vocab, merges: [], end_of_word_suffix: '' } }));
      assert.throws(() => ClipTokenizer.fromDir(dir), /not CLIP's/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
