import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config/load.ts';

const yaml = (text: string): string => {
  const dir = mkdtempSync(join(tmpdir(), 'easel-config-'));
  const file = join(dir, 'easel.yaml');
  writeFileSync(file, text);
  return file;
};

const problems = (fn: () => unknown): string[] => {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail('expected a ConfigError');
};

test('defaults describe the embedded setup', () => {
  const c = loadConfig({ env: {} });
  assert.equal(c.server.port, 8080);
  assert.equal(c.storage.type, 'local');
  assert.equal(c.database.url, undefined);
  assert.equal(c.redis.url, undefined);
  assert.deepEqual(c.backends, []);
});

test('the file is read and environment variables override it', () => {
  const file = yaml('server:\n  port: 9000\n  host: 0.0.0.0\nworker:\n  concurrency: 3\n');
  const c = loadConfig({ file, env: { PORT: '9100', DATABASE_URL: 'postgres://u@h/db', EASEL__SERVER__SYNC_TIMEOUT_SECONDS: '42', EASEL__WORKER__CONCURRENCY: '5' } });
  assert.equal(c.server.port, 9100);
  assert.equal(c.server.host, '0.0.0.0');
  assert.equal(c.database.url, 'postgres://u@h/db');
  assert.equal(c.server.syncTimeoutSeconds, 42);
  assert.equal(c.worker.concurrency, 5);
});

test('a bad value names its key', () => {
  const p = problems(() => loadConfig({ file: yaml('server:\n  port: "eighty"\n'), env: {} }));
  assert.match(p[0]!, /^server\.port: /);
});

test('a bad environment value names the key it sets', () => {
  const p = problems(() => loadConfig({ env: { PORT: 'abc' } }));
  assert.match(p[0]!, /^server\.port: /);
});

test('an unknown key is an error naming it', () => {
  const p = problems(() => loadConfig({ file: yaml('server:\n  prot: 80\n'), env: {} }));
  assert.match(p.join('\n'), /server.*prot/);
});

test('models must point at a configured backend, names must be unique', () => {
  const file = yaml(`
backends:
  - { name: a, type: openai, baseUrl: "http://127.0.0.1:1/v1" }
  - { name: a, type: openai, baseUrl: "http://127.0.0.1:2/v1" }
models:
  - { name: m, backend: nope }
`);
  const p = problems(() => loadConfig({ file, env: {} }));
  assert.ok(p.some((x) => x.startsWith('backends.1.name: duplicate backend name')), p.join('\n'));
  assert.ok(p.some((x) => x.startsWith('models.0.backend: no backend named "nope"')), p.join('\n'));
});

test('an unknown backend type is named', () => {
  const p = problems(() => loadConfig({ file: yaml('backends:\n  - { name: x, type: magic }\n'), env: {} }));
  assert.match(p[0]!, /^backends\.0\.type/);
});

test('s3 storage needs its settings', () => {
  const p = problems(() => loadConfig({ env: { EASEL_STORAGE: 's3' } }));
  assert.match(p.join('\n'), /storage\.s3/);
  const c = loadConfig({ env: { EASEL_STORAGE: 's3', S3_BUCKET: 'imgs', S3_ENDPOINT: 'http://127.0.0.1:9000', S3_FORCE_PATH_STYLE: 'true' } });
  assert.equal(c.storage.s3?.bucket, 'imgs');
  assert.equal(c.storage.s3?.forcePathStyle, true);
});

test('a missing or unparsable file is a clear error', () => {
  assert.match(problems(() => loadConfig({ file: '/nonexistent/easel.yaml', env: {} }))[0]!, /not found/);
  assert.match(problems(() => loadConfig({ file: yaml('server: [unclosed'), env: {} }))[0]!, /YAML/);
});
