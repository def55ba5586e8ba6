/**
 * `easel models pull` when things go wrong, as a user sees it: the real cause of an unreachable hub
 * (not `fetch failed`) with the mirror option, a silent or stalled host given up on after the idle
 * timeout (seconds) and retried with bounded backoff, no empty model folder left behind, plain
 * progress lines with percent, speed and time left when stderr is not a terminal, and a redrawn bar
 * when it is (run under `script`, which gives the command a terminal).
 */
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { childCwd, childEnv } from '../support/child-env.ts';
import { refusedUrl, startHfStandin, startSilentServer } from '../support/hf-standin.ts';
import type { HfStandin } from '../support/hf-standin.ts';
import { PADDING_PATH, TURBO_REPO, publishedDefaultModels } from './support/published.ts';

const BIN = fileURLToPath(new URL('../../bin/easel.js', import.meta.url));
let root: string;
let n = 0;
const dataDir = () => join(root, `data${n++}`);

before(() => {
  root = mkdtempSync(join(tmpdir(), 'easel-pull-cli-'));
});
after(() => rmSync(root, { recursive: true, force: true }));

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: childCwd(), env: childEnv({ HOME: root, ...env }), timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** No model folder (and nothing that `models list` shows) after a failed first pull. */
async function assertNoHusk(dir: string) {
  const models = join(dir, 'models');
  assert.deepEqual(existsSync(models) ? readdirSync(models).filter((f) => !f.startsWith('.')) : [], []);
  const list = await cli(['models', 'list', '--json', '--data-dir', dir]);
  assert.deepEqual(JSON.parse(list.stdout).installed, []);
}

describe('a hub that cannot be reached', () => {
  test('a host name that does not resolve: the resolver error, the mirror options, no retries and no folder left', async () => {
    const dir = dataDir();
    const r = await cli(['models', 'pull', 'sd-turbo', '--endpoint', 'http://huggingface.invalid', '--data-dir', dir]);
    assert.equal(r.code, 1);
    const errors = r.stderr.split('\n').filter((l) => l.startsWith('easel: '));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0]!, /getaddrinfo (ENOTFOUND|EAI_AGAIN) huggingface\.invalid/);
    assert.match(errors[0]!, /--endpoint URL or HF_ENDPOINT=URL/);
    assert.doesNotMatch(r.stderr, /fetch failed|retrying/);
    await assertNoHusk(dir);
  });

  test('connections refused: each retry names ECONNREFUSED, backoff is bounded, then one line with the cause', async () => {
    const dir = dataDir();
    const endpoint = await refusedUrl();
    const r = await cli(['models', 'pull', 'sd-turbo', '--endpoint', endpoint, '--data-dir', dir], { EASEL__MODEL_STORE__RETRIES: '2' });
    assert.equal(r.code, 1);
    const retries = r.stderr.split('\n').filter((l) => /retrying/.test(l));
    assert.equal(retries.length, 2, r.stderr);
    for (const l of retries) assert.match(l, /connect ECONNREFUSED 127\.0\.0\.1:\d+; retrying/);
    assert.match(r.stderr, /^easel: .*connect ECONNREFUSED 127\.0\.0\.1:\d+ \(gave up after 3 attempts\)\. http:\/\/127\.0\.0\.1:\d+ could not be reached or stopped answering: check the network or proxy, or point easel at a mirror of the Hub with --endpoint URL or HF_ENDPOINT=URL$/m);
    // 0.5 s + 1 s of backoff, not minutes (before: 302 s per attempt; the bound leaves room for a loaded machine).
    assert.ok(r.ms < 60_000, `${r.ms} ms`);
    await assertNoHusk(dir);
  });

  test('a host that accepts the connection and never answers is given up on after the idle timeout, in seconds', async () => {
    const silent = await startSilentServer();
    try {
      const dir = dataDir();
      const r = await cli(['models', 'pull', 'sd-turbo', '--endpoint', silent.url, '--idle-timeout', '1', '--data-dir', dir], { EASEL__MODEL_STORE__RETRIES: '1' });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /no data for 1 s \(idle timeout\); retrying \(attempt 2\)/);
      assert.match(r.stderr, /^easel: .*no data for 1 s \(idle timeout\) \(gave up after 2 attempts\)\..*HF_ENDPOINT=URL$/m);
      assert.ok(silent.connections() >= 2, `${silent.connections()} connections`);
      assert.ok(r.ms < 60_000, `${r.ms} ms`);
      await assertNoHusk(dir);
    } finally {
      await silent.close();
    }
  });
});

describe('progress and a stalled transfer', () => {
  let hf: HfStandin;
  before(async () => {
    hf = await startHfStandin(publishedDefaultModels(root, { padding: 600_000 }));
  });
  after(() => hf.close());

  test('without a terminal: plain percent lines with speed and time left; a stall is retried with Range and the pull completes', async () => {
    hf.stallNext(TURBO_REPO, PADDING_PATH, 100_000);
    hf.throttle(24 * 1024, 40);
    const mark = hf.requests.length;
    try {
      const dir = dataDir();
      const r = await cli(['models', 'pull', 'sd-turbo', '--endpoint', hf.url, '--idle-timeout', '1', '--data-dir', dir]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /sd-turbo is ready in/);
      assert.match(r.stderr, /file\(s\) to download, [\d.]+ [KM]B in all/);
      assert.match(r.stderr, /unet\/model\.onnx_data: .*no data for 1 s \(idle timeout\); retrying \(attempt 2\), resuming where it stopped/);
      const lines = r.stderr.split('\n').filter((l) => /^ {2}sd-turbo: \d+%/.test(l));
      assert.ok(lines.length >= 5, r.stderr);
      assert.match(lines.at(-1)!, /^ {2}sd-turbo: 100% \([\d.]+ [KM]B of [\d.]+ [KM]B\)/);
      assert.ok(lines.some((l) => /, [\d.]+ [KM]B\/s, about \d+ s left$/.test(l)), lines.join('\n'));
      assert.doesNotMatch(r.stderr, /\x1b\[/, 'no terminal control sequences in a log');
      const padding = hf.requests.slice(mark).filter((q) => q.method === 'GET' && q.path.endsWith(PADDING_PATH));
      assert.deepEqual(padding.map((q) => [q.range ?? null, q.status]), [[null, 200], ['bytes=100000-', 206]]);
    } finally {
      hf.throttle(0, 0);
    }
  });

  test('on a terminal: one redrawn bar with percent, bytes, speed and ETA', { skip: hasScript() ? false : 'no `script` (util-linux) to give the command a terminal' }, async () => {
    hf.throttle(24 * 1024, 40);
    try {
      const dir = dataDir();
      const command = [process.execPath, BIN, 'models', 'pull', 'sd-turbo', '--endpoint', hf.url, '--data-dir', dir].map((a) => `'${a}'`).join(' ');
      const out = await new Promise<string>((resolve) => {
        execFile('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd: childCwd(), env: childEnv({ HOME: root, COLUMNS: '160' }), timeout: 120_000 }, (_err, stdout) => resolve(stdout));
      });
      assert.match(out, /sd-turbo is ready in/);
      const frames = out.split('\r\x1b[2K').map((f) => f.trim());
      const bars = frames.filter((f) => /^\[[#-]{24}\]\s+\d+%/.test(f));
      assert.ok(bars.length >= 3, `bar frames: ${bars.length}\n${out.slice(0, 2000)}`);
      assert.ok(bars.some((f) => /^\[[#-]{24}\]\s+\d+% {2}[\d.]+ [KM]B \/ [\d.]+ [KM]B {2}[\d.]+ [KM]B\/s {2}ETA \d+ s/.test(f)), bars.join('\n'));
      assert.ok(bars.some((f) => /^\[#{24}\]\s+100%/.test(f)), 'the bar reaches 100%');
    } finally {
      hf.throttle(0, 0);
    }
  });
});

function hasScript(): boolean {
  try {
    execFileSync('script', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
