/**
 * The engine behind easel's HTTP API: a configured `onnx` backend answering the OpenAI SDK, the
 * embedded default after `easel models pull` (run as the real CLI against the Hugging Face
 * stand-in), and the one-line hint plus 503 when there is no model at all.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI, { toFile } from 'openai';
import sharp from 'sharp';
import { startEasel } from '../support/easel.ts';
import { childCwd } from '../support/child-env.ts';
import type { TestEasel } from '../support/easel.ts';
import { startHfStandin } from '../support/hf-standin.ts';
import type { HfStandin } from '../support/hf-standin.ts';
import { buildTinyModel } from './support/tiny-models.ts';

const BIN = fileURLToPath(new URL('../../bin/easel.js', import.meta.url));
let root: string;

before(() => {
  root = mkdtempSync(join(tmpdir(), 'easel-onnx-serve-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: childCwd(), env: { PATH: process.env.PATH ?? '', HOME: root, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d));
    child.stderr.on('data', (d: Buffer) => (stderr += d));
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

const client = (e: TestEasel) => new OpenAI({ apiKey: e.adminKey, baseURL: `${e.url}/v1`, maxRetries: 0 });

describe('an onnx backend in the config', () => {
  let easel: TestEasel;
  before(async () => {
    buildTinyModel(join(root, 'cfg-models', 'tiny'), { unet: 'text', vaeEncoder: true, manifest: { name: 'tiny', kind: 'pipeline', family: 'sd' } });
    easel = await startEasel({
      overrides: {
        backends: [{ type: 'onnx', name: 'local', modelsDir: join(root, 'cfg-models'), intraOpThreads: 1 }],
        models: [{ name: 'tiny-sd', backend: 'local', model: 'tiny', default: true }],
      },
    });
  });
  after(() => easel.close());

  test('images.generate through the OpenAI SDK returns real PNGs of the requested size', async () => {
    const res = await client(easel).images.generate({ model: 'tiny-sd', prompt: 'a red fox in snow', size: '96x64' as never, n: 2, response_format: 'b64_json', seed: 3, steps: 2 } as never);
    assert.equal(res.data?.length, 2);
    for (const item of res.data!) {
      const meta = await sharp(Buffer.from(item.b64_json!, 'base64')).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 96, 64]);
    }
  });

  test('images.edit runs img2img on the uploaded image', async () => {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#c86432' } }).png().toBuffer();
    const res = await client(easel).images.edit({ model: 'tiny-sd', prompt: 'make it blue', image: await toFile(png, 'in.png', { type: 'image/png' }), size: '64x64' as never, response_format: 'b64_json' } as never);
    const meta = await sharp(Buffer.from(res.data![0]!.b64_json!, 'base64')).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
  });
});

describe('easel models pull, then the embedded default', () => {
  let hf: HfStandin;
  const dataDir = () => join(root, 'data');

  before(async () => {
    // A tiny model published where the catalog's sd-turbo lives, file for file.
    const src = buildTinyModel(join(root, 'published'), { unet: 'identity', vaeEncoder: true, scheduler: { _class_name: 'EulerDiscreteScheduler' } });
    const files: { repo: string; path: string; data: Uint8Array }[] = [];
    const walk = (dir: string) => {
      for (const name of readdirSync(dir)) {
        const p = join(dir, name);
        if (statSync(p).isDirectory()) walk(p);
        else files.push({ repo: 'jdp8/sd-turbo-onnx', path: relative(src, p), data: readFileSync(p) });
      }
    };
    walk(src);
    hf = await startHfStandin(files);
  });
  after(() => hf.close());

  test('pull downloads, verifies and converts the catalog model; list and rm see it', async () => {
    hf.cutNext('jdp8/sd-turbo-onnx', 'unet/model.onnx', 40);
    const pull = await cli(['models', 'pull', 'sd-turbo', '--endpoint', hf.url, '--data-dir', dataDir()]);
    assert.equal(pull.code, 0, pull.stderr);
    assert.match(pull.stdout, /sd-turbo is ready in/);
    assert.match(pull.stderr, /retrying/);
    assert.match(pull.stderr, /converting unet\/model\.onnx to fp32/);
    assert.match(pull.stderr, /sha256 ok/);
    const manifest = JSON.parse(readFileSync(join(dataDir(), 'models', 'sd-turbo', 'easel-model.json'), 'utf8'));
    assert.equal(manifest.precision, 'fp32');
    assert.equal(manifest.padToken, '!');
    assert.equal(manifest.source.repo, 'jdp8/sd-turbo-onnx');

    const list = await cli(['models', 'list', '--json', '--data-dir', dataDir()]);
    const listed = JSON.parse(list.stdout);
    assert.deepEqual(listed.installed.map((m: { name: string; complete: boolean }) => [m.name, m.complete]), [['sd-turbo', true]]);
    assert.ok(listed.available.includes('taesd'));
  });

  test('easel serves the pulled model by default, with no backend configured', async () => {
    const easel = await startEasel({ dataDir: dataDir(), overrides: { backends: [], models: [] } });
    try {
      assert.equal(easel.runtime.setupHint, undefined);
      const models = await client(easel).models.list();
      assert.deepEqual(models.data.map((m) => m.id), ['sd-turbo']);
      const res = await client(easel).images.generate({ prompt: 'An astronaut riding a horse', size: '64x64' as never, response_format: 'b64_json' } as never);
      const meta = await sharp(Buffer.from(res.data![0]!.b64_json!, 'base64')).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
    } finally {
      await easel.close();
    }
    const rm = await cli(['models', 'rm', 'sd-turbo', '--data-dir', dataDir()]);
    assert.equal(rm.code, 0, rm.stderr);
  });
});

describe('no model and no backend', () => {
  test('with the automatic download off, one line says which command to run; generations answer 503 no_backend', async () => {
    const easel = await startEasel({ overrides: { backends: [], models: [], modelStore: { autoPull: false } } });
    try {
      assert.equal(easel.runtime.autoPull, undefined);
      assert.match(easel.runtime.setupHint ?? '', /^No image model yet and the automatic download is off .*run `npm run easel -- models pull sd-turbo`/);
      const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a cat' } });
      assert.equal(res.status, 503);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'no_backend');
    } finally {
      await easel.close();
    }
  });

  test('`easel serve` with EASEL_AUTO_PULL=0 prints exactly that one line', async () => {
    const dir = mkdtempSync(join(root, 'serve-'));
    const child = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--data-dir', dir], { cwd: childCwd(), env: { PATH: process.env.PATH ?? '', HOME: root, LOG_LEVEL: 'silent', EASEL_AUTO_PULL: '0' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    try {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no hint within 20 s: ${out}`)), 20_000);
        child.stdout.on('data', (d: Buffer) => {
          out += d;
          if (/models pull/.test(out)) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.on('exit', () => reject(new Error(`serve exited: ${out}`)));
      });
    } finally {
      child.kill('SIGTERM');
    }
    const lines = out.split('\n').filter((l) => /model/i.test(l));
    assert.deepEqual(lines, [
      'No image model yet and the automatic download is off (modelStore.autoPull / EASEL_AUTO_PULL): run `npm run easel -- models pull sd-turbo` (about 2.5 GB; or configure a backend, see README), then start easel again.',
    ]);
    // The first-start output names the console and the API docs too.
    assert.match(out, /API docs http:\/\/127\.0\.0\.1:\d+\/docs · OpenAPI http:\/\/127\.0\.0\.1:\d+\/openapi\.json/);
  });
});
