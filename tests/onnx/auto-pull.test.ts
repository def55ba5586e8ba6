/**
 * The first start with nothing configured: easel downloads its default model (TAESD + SD-Turbo, here
 * tiny stand-ins published under the catalog's repositories on the Hugging Face stand-in) in the
 * background, says how far it is (log lines, GET /v1/system, 503 `model_loading` with Retry-After on
 * generations), and serves the model as soon as it is in, without a restart. A stalled transfer is
 * resumed; an unreachable or silent hub is one log line with the cause while the server keeps serving;
 * two servers on one data folder download once, and the survivor resumes when the downloader dies.
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import sharp from 'sharp';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { refusedUrl, startHfStandin, startSilentServer } from '../support/hf-standin.ts';
import type { HfStandin } from '../support/hf-standin.ts';
import { spawnEasel, writeConfig } from '../support/processes.ts';
import type { EaselProcess } from '../support/processes.ts';
import { until } from '../support/until.ts';
import { childCwd, childEnv } from '../support/child-env.ts';
import { PADDING_PATH, TURBO_REPO, publishedDefaultModels } from './support/published.ts';

const BIN = fileURLToPath(new URL('../../bin/easel.js', import.meta.url));
let root: string;
before(() => {
  root = mkdtempSync(join(tmpdir(), 'easel-autopull-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

/** A logger whose JSON lines the test reads. */
function memoryLog() {
  const lines: { level: number; msg: string; [k: string]: unknown }[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      for (const l of String(chunk).split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

const noBackend = (modelStore: Record<string, unknown>) => ({ backends: [], models: [], modelStore: { idleTimeoutSeconds: 1, ...modelStore } });

async function system(easel: { api: TestEasel['api'] }) {
  return ((await (await easel.api('/v1/system')).json()) as { model_download: any }).model_download;
}

describe('first start with no backend and no model', () => {
  let hf: HfStandin;
  before(async () => {
    hf = await startHfStandin(publishedDefaultModels(root, { padding: 1_000_000 }));
  });
  after(() => hf.close());

  test('downloads the default model in the background, answers 503 model_loading meanwhile, then serves it without a restart; a stalled transfer resumes', async () => {
    // The big file stops after 150 KB with the connection left open: the idle timeout (1 s) gives up
    // on it and the retry continues with a Range request.
    hf.stallNext(TURBO_REPO, PADDING_PATH, 150_000);
    hf.throttle(32 * 1024, 40);
    const { log, lines } = memoryLog();
    const mark = hf.requests.length;
    const easel = await startEasel({ overrides: noBackend({ endpoint: hf.url }), log });
    try {
      assert.match(easel.runtime.setupHint ?? '', /^No image model yet: downloading the default model \(taesd \+ sd-turbo, about [\d.]+ GB\) from http:\/\/127\.0\.0\.1:\d+ into .* in the background\. Generations answer 503 model_loading/);
      // Stalled part-way: the state says how far, generations say to come back.
      const stalled = await until('the download to stall at 150 KB', async () => {
        const d = await system(easel);
        return d?.status === 'downloading' && d.received_bytes >= 150_000 ? d : undefined;
      }, 20_000, 100);
      assert.ok(stalled.percent > 0 && stalled.percent < 100, JSON.stringify(stalled));
      assert.ok(stalled.total_bytes > 1_000_000);
      assert.deepEqual(stalled.models, ['taesd', 'sd-turbo']);
      assert.equal(stalled.model, 'sd-turbo');
      const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a lighthouse at dawn', size: '64x64' } });
      assert.equal(res.status, 503);
      const retryAfter = Number(res.headers.get('retry-after'));
      assert.ok(retryAfter >= 5 && retryAfter <= 60, `Retry-After ${res.headers.get('retry-after')}`);
      const body = (await res.json()) as { error: { message: string; type: string; param: null; code: string } };
      assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type']);
      assert.equal(body.error.code, 'model_loading');
      assert.equal(body.error.param, null);
      assert.match(body.error.message, /^The default model \(taesd \+ sd-turbo\) is downloading: \d+(\.\d)?% \([\d.]+ [KM]B of [\d.]+ [KM]B\).*Generations start as soon as it is ready; retry in \d+ s\.$/);
      const ready = await fetch(`${easel.url}/ready`);
      assert.equal(ready.status, 503);
      assert.match(((await ready.json()) as any).checks.model.message, /^the default model is downloading: \d+/);
      assert.equal((await fetch(`${easel.url}/health`)).status, 200);

      // Resumed and finished: the same server now generates with it.
      await until('the model to be ready', async () => ((await system(easel))?.status === 'ready' ? true : undefined), 30_000, 100);
      const models = (await (await easel.api('/v1/models')).json()) as { data: { id: string }[] };
      assert.deepEqual(models.data.map((m) => m.id), ['sd-turbo']);
      const gen = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'a lighthouse at dawn', size: '64x64', response_format: 'b64_json' } });
      assert.equal(gen.status, 200, await gen.clone().text());
      const png = Buffer.from(((await gen.json()) as any).data[0].b64_json, 'base64');
      assert.deepEqual([(await sharp(png).metadata()).width, (await sharp(png).metadata()).height], [64, 64]);

      const padding = hf.requests.slice(mark).filter((r) => r.method === 'GET' && r.path.endsWith(PADDING_PATH));
      assert.equal(padding.length, 2, JSON.stringify(padding));
      assert.equal(padding[1]!.range, 'bytes=150000-');
      assert.equal(padding[1]!.status, 206);
      // Log lines: the start, the retry with its cause, progress with percent, speed and time left, ready.
      const msgs = lines.map((l) => l.msg);
      assert.ok(msgs.some((m) => /^downloading the default model \(taesd \+ sd-turbo, [\d.]+ MB\) from http/.test(m)), msgs.join('\n'));
      assert.ok(msgs.some((m) => /model\.onnx_data: .*no data for 1 s \(idle timeout\); retrying$/.test(m)), msgs.join('\n'));
      assert.ok(msgs.some((m) => /^downloading the default model: \d+% \([\d.]+ [KM]B of [\d.]+ MB\), [\d.]+ [KM]B\/s, about \d+ s left$/.test(m)), msgs.join('\n'));
      assert.ok(msgs.some((m) => /^the default model is ready \(downloaded in \d+ s\): serving sd-turbo$/.test(m)), msgs.join('\n'));
      const progress = lines.filter((l) => /^downloading the default model: /.test(l.msg));
      assert.ok(progress.length >= 3 && progress.every((l) => typeof l.percent === 'number'), `${progress.length} progress lines`);
    } finally {
      hf.throttle(0, 0);
      await easel.close();
    }
  });

  test("the README's `easel generate` right after the first start waits for the model, then saves the image", async () => {
    hf.stallNext(TURBO_REPO, PADDING_PATH, 50_000);
    const easel = await startEasel({ overrides: noBackend({ endpoint: hf.url, idleTimeoutSeconds: 120 }) });
    const out = join(root, 'out');
    try {
      await until('the download to stall', async () => ((await system(easel))?.received_bytes >= 50_000 ? true : undefined), 20_000, 100);
      let stderr = '';
      const child = spawn(process.execPath, [BIN, 'generate', 'a red fox in snow', '--out', out, '--url', easel.url, '--key', easel.adminKey], { cwd: childCwd(), env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      child.stdout.on('data', (d: Buffer) => (stdout += d));
      child.stderr.on('data', (d: Buffer) => (stderr += d));
      const exited = new Promise<number>((r) => child.on('close', (code) => r(code ?? 1)));
      await until('generate to say it waits', () => /waiting: The default model \(taesd \+ sd-turbo\) is downloading: \d+/.test(stderr), 30_000, 100);
      hf.releaseStalls();
      assert.equal(await exited, 0, stderr);
      const files = stdout.trim().split('\n');
      assert.equal(files.length, 1);
      assert.equal((await sharp(files[0]!).metadata()).format, 'png');
    } finally {
      await easel.close();
    }
  });

  test('a configured backend, an installed model or modelStore.autoPull: false means no download', async () => {
    const mark = hf.requests.length;
    const configured = await startEasel({ overrides: { modelStore: { endpoint: hf.url } } });
    const off = await startEasel({ overrides: noBackend({ endpoint: hf.url, autoPull: false }) });
    try {
      assert.equal(configured.runtime.autoPull, undefined);
      assert.equal(off.runtime.autoPull, undefined);
      assert.equal(await system(configured), null);
      const res = await off.api('/v1/images/generations', { method: 'POST', json: { prompt: 'x' } });
      assert.equal(((await res.json()) as any).error.code, 'no_backend');
    } finally {
      await configured.close();
      await off.close();
    }
    assert.equal(hf.requests.length, mark, 'nothing was asked of the hub');
  });
});

describe('a hub that cannot be reached', () => {
  for (const kind of ['refuses connections', 'accepts and never answers'] as const) {
    test(`one log line with the cause and the mirror setting when it ${kind}; the server keeps serving`, async () => {
      const silent = kind === 'accepts and never answers' ? await startSilentServer() : undefined;
      const endpoint = silent?.url ?? (await refusedUrl());
      const { log, lines } = memoryLog();
      const easel = await startEasel({ overrides: noBackend({ endpoint, retries: 1 }), log });
      try {
        const failed = await until('the download to fail', async () => {
          const d = await system(easel);
          return d?.status === 'failed' ? d : undefined;
        }, 20_000, 100);
        const cause = silent ? /no data for 1 s \(idle timeout\)/ : /connect ECONNREFUSED 127\.0\.0\.1:\d+/;
        assert.match(failed.error, cause);
        const errors = lines.filter((l) => l.level >= 50);
        assert.equal(errors.length, 1, JSON.stringify(errors));
        assert.match(errors[0]!.msg, cause);
        assert.match(errors[0]!.msg, /set HF_ENDPOINT \(or modelStore\.endpoint\) to a mirror of the Hub/);
        assert.match(errors[0]!.msg, /easel keeps serving/);
        // Still serving: health, the API, and a clear answer to generations.
        assert.equal((await fetch(`${easel.url}/health`)).status, 200);
        assert.equal((await easel.api('/v1/keys/current')).status, 200);
        const res = await easel.api('/v1/images/generations', { method: 'POST', json: { prompt: 'x' } });
        assert.equal(res.status, 503);
        const err = ((await res.json()) as any).error;
        assert.equal(err.code, 'no_backend');
        assert.match(err.message, cause);
        // No empty model folder left behind.
        const models = join(easel.dataDir, 'models');
        assert.deepEqual(existsSync(models) ? readdirSync(models).filter((n) => !n.startsWith('.')) : [], []);
      } finally {
        await easel.close();
        await silent?.close();
      }
    });
  }
});

describe('two servers on one data folder', () => {
  let hf: HfStandin;
  const procs: EaselProcess[] = [];
  before(async () => {
    hf = await startHfStandin(publishedDefaultModels(join(root, 'two'), { padding: 1_000_000 }));
  });
  after(async () => {
    await Promise.all(procs.map((p) => (p.alive() ? p.kill9() : undefined)));
    await hf.close();
  });

  test('one downloads while the other waits and shows its progress; when the downloader dies the other resumes its files', async () => {
    const dataDir = join(root, 'shared-data');
    const adminKey = 'easel_sk_test_admin_key_0123456789abcdef';
    const configFile = writeConfig(join(root, 'two.yaml'), { dataDir, auth: { adminKey }, logging: { level: 'info' }, modelStore: { endpoint: hf.url, idleTimeoutSeconds: 120 } });
    const api = (p: EaselProcess) => ({ api: (path: string, init: RequestInit & { json?: unknown } = {}) => fetch(`${p.url}${path}`, { ...init, headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' }, body: init.json === undefined ? undefined : JSON.stringify(init.json) }) });
    // A gets 300 KB of the big file, then the hub goes quiet (A's idle timeout is longer than the test).
    hf.stallNext(TURBO_REPO, PADDING_PATH, 300_000);
    const a = await spawnEasel('serve', { configFile, port: 0, name: 'A' });
    procs.push(a);
    const part = join(dataDir, 'models', 'sd-turbo', '.download', PADDING_PATH + '.part');
    await until('A to have 300 KB of the big file on disk', () => existsSync(part) && statSync(part).size === 300_000, 30_000, 100);
    const b = await spawnEasel('serve', { configFile, port: 0, name: 'B' });
    procs.push(b);
    const waiting = await until('B to wait on A', async () => {
      const d = await system(api(b));
      return d?.status === 'waiting' && d.percent > 0 ? d : undefined;
    }, 20_000, 100);
    assert.match(waiting.owner, new RegExp(`^easel serve \\(pid ${a.pid}, since `));
    const refused = await api(b).api('/v1/images/generations', { method: 'POST', json: { prompt: 'x' } });
    assert.equal(refused.status, 503);
    assert.match(((await refused.json()) as any).error.message, new RegExp(`is being downloaded by easel serve \\(pid ${a.pid}`));
    assert.match(b.logs(), new RegExp(`easel serve \\(pid ${a.pid}, since [^)]*\\) is downloading the default model into .*; waiting for it`));

    await a.kill9();
    const before = hf.requests.filter((r) => r.method === 'GET').length;
    await until('B to be ready', async () => ((await system(api(b)))?.status === 'ready' ? true : undefined), 30_000, 100);
    const gen = await api(b).api('/v1/images/generations', { method: 'POST', json: { prompt: 'a red fox', size: '64x64', response_format: 'b64_json' } });
    assert.equal(gen.status, 200, await gen.clone().text());

    // B fetched only what A had not finished, and continued A's half-done file where it stopped.
    const gets = hf.requests.filter((r) => r.method === 'GET');
    const afterA = gets.slice(before);
    const resumed = afterA.find((r) => r.path.endsWith(PADDING_PATH));
    assert.ok(resumed, JSON.stringify(afterA.map((r) => r.path)));
    assert.equal(resumed.range, 'bytes=300000-');
    assert.equal(resumed.status, 206);
    const perFile = new Map<string, number>();
    for (const r of gets.filter((r) => !r.path.endsWith(PADDING_PATH))) perFile.set(r.path, (perFile.get(r.path) ?? 0) + 1);
    assert.ok([...perFile.values()].every((n) => n === 1), `each small file fetched once: ${JSON.stringify([...perFile])}`);
  });
});
