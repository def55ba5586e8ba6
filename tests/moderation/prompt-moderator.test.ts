import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PromptModerator } from '../../src/moderation/prompt-moderator.ts';
import { DomainError } from '../../src/core/errors.ts';

const base = { blocklist: [] as string[], patterns: [] as string[] };

test('blocklisted words are refused as whole words, any case or width', () => {
  const m = new PromptModerator({ ...base, blocklist: ['gore', 'Ass'] });
  assert.equal(m.checkLocal('a scene full of GORE').flagged, true);
  assert.equal(m.checkLocal('ｇｏｒｅ in full-width letters').flagged, true);
  assert.equal(m.checkLocal('a glass of water').flagged, false);
  assert.equal(m.checkLocal('gorey details').flagged, false);
  assert.deepEqual(m.checkLocal('an ass').reasons, ['blocked word "Ass"']);
});

test('patterns are case-insensitive regular expressions; a bad one names its key', () => {
  const m = new PromptModerator({ ...base, patterns: ['celebrity\\s+\\w+\\s+nude'] });
  assert.equal(m.checkLocal('Celebrity Jane nude').flagged, true);
  assert.equal(m.checkLocal('a nude sculpture').flagged, false);
  assert.throws(() => new PromptModerator({ ...base, patterns: ['ok', '(unclosed'] }), /moderation\.patterns\.1/);
});

test('a refusal is a 400 content_policy_violation naming the field', async () => {
  const m = new PromptModerator({ ...base, blocklist: ['gore'] });
  await assert.rejects(m.assertAllowed('gore', 'negative_prompt'), (err: unknown) => {
    assert.ok(err instanceof DomainError);
    assert.equal(err.kind, 'policy');
    assert.equal(err.code, 'content_policy_violation');
    assert.equal(err.param, 'negative_prompt');
    return true;
  });
  await m.assertAllowed('a sunny meadow');
});

test('the moderation endpoint is asked, and its categories are named', async () => {
  const seen: any[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const parsed = JSON.parse(body);
      seen.push({ path: req.url, auth: req.headers.authorization, body: parsed });
      const flagged = /knife/.test(parsed.input);
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ id: 'modr-1', model: parsed.model, results: [{ flagged, categories: { violence: flagged, hate: false } }] }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  try {
    const m = new PromptModerator({ ...base, endpoint: { url, apiKey: 'sk-mod', model: 'omni-moderation-latest', timeoutSeconds: 5, failClosed: true } });
    await m.assertAllowed('a bowl of fruit');
    await assert.rejects(m.assertAllowed('a bloody knife'), /violence/);
    assert.equal(seen[0].path, '/v1/moderations');
    assert.equal(seen[0].auth, 'Bearer sk-mod');
    assert.equal(seen[0].body.model, 'omni-moderation-latest');
  } finally {
    server.close();
  }
});

test('an unreachable endpoint refuses with 503 when failing closed, allows when failing open', async () => {
  const dead = 'http://127.0.0.1:9/v1';
  const closed = new PromptModerator({ ...base, endpoint: { url: dead, model: 'm', timeoutSeconds: 2, failClosed: true } });
  await assert.rejects(closed.assertAllowed('anything'), (err: any) => err.kind === 'unavailable' && err.code === 'moderation_unavailable');
  const open = new PromptModerator({ ...base, endpoint: { url: dead, model: 'm', timeoutSeconds: 2, failClosed: false } });
  await open.assertAllowed('anything');
});
