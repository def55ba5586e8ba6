/** The model downloader and `pullModel` against a loopback stand-in of Hugging Face's file endpoint. */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import * as ort from 'onnxruntime-node';
import { downloadFile, DownloadError } from '../../src/models/downloader.ts';
import { pullModel, listInstalled, removeModel, PullError } from '../../src/models/model-store.ts';
import type { PullEvent } from '../../src/models/model-store.ts';
import type { CatalogEntry } from '../../src/models/catalog.ts';
import { startHfStandin } from '../support/hf-standin.ts';
import type { HfStandin } from '../support/hf-standin.ts';
import { buildFp16Model } from './support/tiny-models.ts';

const REPO = 'acme/tiny-onnx';
const BLOB = randomBytes(256 * 1024);
const SHA = createHash('sha256').update(BLOB).digest('hex');
let hf: HfStandin;
let root: string;
let n = 0;
const fresh = () => join(root, `d${n++}`);
const url = (path: string) => `${hf.url}/${REPO}/resolve/main/${path}`;
const since = (mark: number) => hf.requests.slice(mark);

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'easel-dl-'));
  hf = await startHfStandin([
    { repo: REPO, path: 'unet/model.onnx', data: BLOB },
    { repo: REPO, path: 'bad/model.onnx', data: BLOB },
    { repo: REPO, path: 'tokenizer/vocab.json', data: Buffer.from('{"a":0}') },
  ]);
});
after(async () => {
  await hf.close();
  rmSync(root, { recursive: true, force: true });
});

describe('downloadFile', () => {
  test('verifies the SHA-256 the server sends (x-linked-etag), then serves the next call from disk', async () => {
    const dest = join(fresh(), 'model.onnx');
    const res = await downloadFile({ url: url('unet/model.onnx'), dest });
    assert.deepEqual(res, { size: BLOB.length, sha256: SHA, status: 'downloaded', verified: true });
    assert.deepEqual(readFileSync(dest), BLOB);
    assert.equal(readFileSync(`${dest}.sha256`, 'utf8').trim(), SHA);
    const mark = hf.requests.length;
    assert.equal((await downloadFile({ url: url('unet/model.onnx'), dest, sha256: SHA })).status, 'cached');
    assert.equal(since(mark).length, 0);
  });

  test('a cut connection is resumed with a Range request and the file still checks out', async () => {
    const dest = join(fresh(), 'model.onnx');
    hf.cutNext(REPO, 'unet/model.onnx', 100_000);
    const mark = hf.requests.length;
    const retries: string[] = [];
    const res = await downloadFile({ url: url('unet/model.onnx'), dest, size: BLOB.length, sha256: SHA }, { retryDelayMs: 10, onRetry: (_, e) => retries.push(e.message) });
    assert.equal(res.status, 'resumed');
    assert.equal(retries.length, 1);
    const reqs = since(mark);
    assert.equal(reqs.length, 2);
    assert.equal(reqs[0]!.range, undefined);
    assert.equal(reqs[1]!.range, 'bytes=100000-');
    assert.equal(reqs[1]!.status, 206);
    assert.deepEqual(readFileSync(dest), BLOB);
  });

  test('a partial file left by an earlier run is continued, not restarted', async () => {
    const dest = join(fresh(), 'model.onnx');
    mkdirSync(join(dest, '..'), { recursive: true });
    writeFileSync(`${dest}.part`, BLOB.subarray(0, 5000));
    const mark = hf.requests.length;
    const res = await downloadFile({ url: url('unet/model.onnx'), dest });
    assert.equal(res.status, 'resumed');
    assert.equal(since(mark)[0]!.range, 'bytes=5000-');
    assert.deepEqual(readFileSync(dest), BLOB);
  });

  test('a corrupted file is rejected by its checksum and removed', async () => {
    const dest = join(fresh(), 'model.onnx');
    hf.corrupt(REPO, 'bad/model.onnx');
    await assert.rejects(downloadFile({ url: url('bad/model.onnx'), dest }), (e: DownloadError) => e.code === 'checksum' && /checksum mismatch/.test(e.message));
    assert.ok(!existsSync(dest) && !existsSync(`${dest}.part`));
  });

  test('the catalog hash and size win over the server and are enforced', async () => {
    const dest = join(fresh(), 'model.onnx');
    await assert.rejects(downloadFile({ url: url('unet/model.onnx'), dest, sha256: '0'.repeat(64) }), (e: DownloadError) => e.code === 'checksum');
    await assert.rejects(downloadFile({ url: url('unet/model.onnx'), dest, size: 123 }), (e: DownloadError) => e.code === 'size' || e.code === 'network');
    assert.ok(!existsSync(dest));
  });

  test('404 is reported as not found', async () => {
    await assert.rejects(downloadFile({ url: url('nope.onnx'), dest: join(fresh(), 'x') }), (e: DownloadError) => e.code === 'not_found' && e.status === 404);
  });

  test("Hugging Face's 302 for LFS files: x-linked-etag read from the redirect, body from the CDN path", async () => {
    const cdn = await startHfStandin([{ repo: REPO, path: 'unet/model.onnx', data: BLOB }], { redirectLfs: true });
    try {
      const dest = join(fresh(), 'model.onnx');
      const res = await downloadFile({ url: `${cdn.url}/${REPO}/resolve/main/unet/model.onnx`, dest });
      assert.equal(res.verified, true);
      assert.deepEqual(cdn.requests.map((r) => r.status), [302, 200]);
      assert.match(cdn.requests[1]!.path, /^\/cdn\/[0-9a-f]{64}$/);
    } finally {
      await cdn.close();
    }
  });
});

describe('pullModel', () => {
  const entry = (files: CatalogEntry['files'], over: Partial<CatalogEntry> = {}): CatalogEntry => ({
    name: 'tiny',
    description: 'test',
    repo: 'acme/tiny-pipe',
    revision: 'main',
    kind: 'pipeline',
    family: 'turbo',
    precision: 'fp32',
    approxBytes: 1,
    license: 'MIT',
    files,
    schedulerConfig: { _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'trailing' },
    ...over,
  });

  test('downloads every file, skips optional ones the repo lacks, converts fp16 for the CPU, writes the manifest last', async () => {
    const src = join(root, 'fp16src', 'unet', 'model.onnx');
    const fp16 = buildFp16Model(src);
    hf.put({ repo: 'acme/tiny-pipe', path: 'unet/model.onnx', data: fp16 });
    hf.put({ repo: 'acme/tiny-pipe', path: 'tokenizer/vocab.json', data: Buffer.from('{}') });
    const modelsDir = fresh();
    const events: PullEvent[] = [];
    const cat = [
      entry(
        [
          { path: 'tokenizer/vocab.json' },
          { path: 'unet/model.onnx', onnx: true },
          { path: 'unet/model.onnx_data', optional: true, onnxData: true },
          { path: 'scheduler/scheduler_config.json', optional: true },
        ],
        { precision: 'fp16' },
      ),
    ];
    hf.cutNext('acme/tiny-pipe', 'unet/model.onnx', 50);
    const { dir, manifest } = await pullModel('tiny', { modelsDir, endpoint: hf.url, catalog: cat, retryDelayMs: 5, onEvent: (e) => events.push(e) });
    assert.equal(manifest.precision, 'fp32');
    assert.ok(events.some((e) => e.type === 'retry'), 'the cut was retried');
    assert.ok(events.some((e) => e.type === 'convert' && e.path === 'unet/model.onnx'));
    assert.ok(events.some((e) => e.type === 'file-done' && e.status === 'missing' && e.path === 'unet/model.onnx_data'));
    assert.ok(existsSync(join(dir, 'scheduler', 'scheduler_config.json')), 'catalog scheduler config written');
    assert.ok(!existsSync(join(dir, '.download')), 'staging removed');
    const s = await ort.InferenceSession.create(join(dir, 'unet', 'model.onnx'));
    const y = await s.run({ x: new ort.Tensor('float32', Float32Array.of(1, 2), [1, 2]) });
    assert.deepEqual(Array.from(y.y!.data as Float32Array), [-2.5, 1]);
    await s.release();
    const listed = listInstalled(modelsDir);
    assert.deepEqual(listed.map((m) => [m.name, m.complete]), [['tiny', true]]);
    // Pulling again re-uses everything on disk.
    const mark = hf.requests.length;
    await pullModel('tiny', { modelsDir, endpoint: hf.url, catalog: cat });
    assert.deepEqual(since(mark).map((r) => r.path), ['/acme/tiny-pipe/resolve/main/scheduler/scheduler_config.json'], 'only the optional file the repo lacks is asked for again');
    assert.equal(removeModel(modelsDir, 'tiny'), true);
    assert.deepEqual(listInstalled(modelsDir), []);
  });

  test('a failed pull leaves no manifest (the folder shows as incomplete) and names the problem', async () => {
    const modelsDir = fresh();
    hf.put({ repo: 'acme/tiny-pipe', path: 'bad.onnx', data: BLOB });
    hf.corrupt('acme/tiny-pipe', 'bad.onnx');
    await assert.rejects(pullModel('tiny', { modelsDir, endpoint: hf.url, catalog: [entry([{ path: 'tokenizer/vocab.json' }, { path: 'bad.onnx' }])] }), (e: PullError) => /checksum mismatch/.test(e.message));
    assert.deepEqual(listInstalled(modelsDir).map((m) => [m.name, m.complete]), [['tiny', false]]);
    await assert.rejects(pullModel('nope', { modelsDir, endpoint: hf.url }), /unknown model "nope"; known models: sd-turbo/);
  });
});
