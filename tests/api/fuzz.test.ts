/**
 * Property-based fuzzing of the whole HTTP API, driven by the server's own generated API document:
 * every operation it lists is called with random and hostile path parameters, query strings,
 * headers, JSON bodies (wrong types, deep nesting, huge strings, prototype keys, duplicate
 * parameters), raw bytes that are not JSON or not UTF-8, and multipart parts, for a bounded time
 * (EASEL_FUZZ_SECONDS, 45 s by default). Properties, for every answer:
 *   - never a 5xx;
 *   - every 4xx in OpenAI's error shape, `{"error":{"message","type","param","code"}}`;
 *   - nothing of another key's (key A's job id and prompt marker) in what key B is answered;
 * and, at the end, the server is still healthy. Submissions are made asynchronous (`Prefer:
 * respond-async`), so a request the stand-in backend would refuse fails its job, not the answer.
 * The case count and the 5xx count are printed (the closing note of the hardening issue quotes them).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import fc from 'fast-check';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { makePng } from '../support/png.ts';

const SECONDS = Number(process.env.EASEL_FUZZ_SECONDS ?? 45);
const MARKER = 'tenant-a-fuzz-secret';

interface Operation {
  method: string;
  path: string;
  body: string[];
  query: string[];
  security: boolean;
}

interface Sent {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

let easel: TestEasel;
let ops: Operation[] = [];
let keyA: string;
let keyB: string;
let jobA: string;
let png: Buffer;

before(async () => {
  easel = await startEasel({ overrides: { server: { bodyLimitBytes: 2_000_000 }, uploads: { maxFileBytes: 500_000, maxImages: 4, maxDimension: 512 } } });
  keyA = (await createApiKey(easel.runtime.keys, { name: 'fuzz-a' })).secret;
  keyB = (await createApiKey(easel.runtime.keys, { name: 'fuzz-b' })).secret;
  const made = (await (await easel.api('/v1/images/generations', { method: 'POST', key: keyA, json: { prompt: `${MARKER} lighthouse`, async: true, metadata: { who: MARKER } } })).json()) as any;
  jobA = made.id;
  await waitForJob(easel, jobA, { key: keyA });
  png = await makePng(32, 32);
  const doc = (await (await fetch(`${easel.url}/openapi.json`)).json()) as any;
  for (const [path, methods] of Object.entries(doc.paths as Record<string, Record<string, any>>)) {
    for (const [method, op] of Object.entries(methods)) {
      ops.push({
        method: method.toUpperCase(),
        path,
        body: Object.keys(op.requestBody?.content ?? {}),
        query: (op.parameters ?? []).filter((p: any) => p.in === 'query').map((p: any) => p.name),
        security: !(Array.isArray(op.security) && op.security.length === 0),
      });
    }
  }
  assert.ok(ops.length >= 25, `the API document lists ${ops.length} operations`);
});
after(() => easel?.close());

/** Undefined when Node's client itself refuses to send it (a path or header no HTTP client could send). */
function send(s: Sent): Promise<Answer | undefined> {
  const url = new URL(easel.url);
  return new Promise((resolve, reject) => {
    let req;
    try {
      req = request({ host: url.hostname, port: url.port, method: s.method, path: s.path, headers: s.headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        // Event streams stay open: the first bytes are enough.
        if (String(res.headers['content-type']).includes('event-stream')) res.destroy();
      });
      const done = () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') });
      res.on('end', done);
      res.on('close', done);
      res.on('error', done);
    });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ERR_UNESCAPED_CHARACTERS' || (err as NodeJS.ErrnoException).code === 'ERR_INVALID_CHAR' || (err as NodeJS.ErrnoException).code === 'ERR_INVALID_HTTP_TOKEN') return resolve(undefined);
      return reject(err);
    }
    req.on('error', reject);
    req.setTimeout(20_000, () => req.destroy(new Error(`timeout: ${s.method} ${s.path}`)));
    if (s.body) req.end(s.body);
    else req.end();
  });
}

// ---------------------------------------------------------------- arbitraries

const hostileStrings = fc.constantFrom(
  '', ' ', '..', '../..', '%zz', '%', '%00', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'job_01AAAAAAAAAAAAAAAAAAAAAAAA',
  'null', 'undefined', 'NaN', '-1', '1e999', '0x10', '9'.repeat(40), 'x'.repeat(5000), '💥', 'a\u0000b', '<script>', "' OR 1=1 --", '${jndi:x}',
);
const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 20 }), hostileStrings);
const pathSegment = fc.oneof(
  text.map((s) => encodeURIComponent(s)),
  hostileStrings,
  fc.constant(`%2E%2E%2F%2E%2E%2Fsecrets`),
);

/** JSON values of every type, deep and wide, with prototype keys. */
const jsonValue: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double(),
    fc.constantFrom(-1, 0, 1, 2, 10, 1e308, -1e308, 2 ** 53, 0.5),
    text,
    fc.array(tie('value'), { maxLength: 4 }),
    fc.dictionary(fc.oneof(text, fc.constantFrom('__proto__', 'constructor', 'prompt', 'n', 'model', 'size', 'provider_options')), tie('value'), { maxKeys: 5 }),
  ),
})).value;

/** A generations-shaped body with some fields plausible and some hostile. */
const FIELDS = ['prompt', 'model', 'n', 'size', 'quality', 'style', 'response_format', 'output_format', 'output_compression', 'background', 'user', 'seed', 'negative_prompt', 'steps', 'guidance_scale', 'webhook_url', 'metadata', 'priority', 'provider_options', 'async', 'stream', 'partial_images', 'requests', 'job_id', 'index', 'strength', 'name', 'admin', 'loras', 'moderation'];
const plausible: Record<string, fc.Arbitrary<unknown>> = {
  prompt: fc.oneof(fc.constant('a red fox'), text),
  model: fc.constantFrom('test-model', 'dall-e-2', 'dall-e-3', 'preview', 'premium', 'constructor', '__proto__', 'nope'),
  n: fc.oneof(fc.integer({ min: -2, max: 12 }), fc.constant('2')),
  size: fc.constantFrom('256x256', '1024x1024', 'auto', '0x0', '99999x99999', 'big', 1024),
  async: fc.constant(true),
  provider_options: jsonValue,
  metadata: jsonValue,
  requests: fc.array(jsonValue, { maxLength: 3 }),
  job_id: fc.oneof(fc.constant('JOB_A'), text),
};
/** A valid request for the routes that take JSON, with one or two fields changed to something hostile. */
const VALID: Record<string, unknown>[] = [
  { prompt: 'a red fox in the snow', model: 'dall-e-2', size: '256x256' },
  { requests: [{ prompt: 'a batch request', model: 'dall-e-2', size: '256x256' }] },
  { job_id: 'JOB_A', index: 0 },
  { name: 'fuzzed-key' },
];
const nearlyValid = fc
  .tuple(fc.constantFrom(...VALID), fc.dictionary(fc.constantFrom(...FIELDS), fc.oneof(jsonValue, ...Object.values(plausible)), { maxKeys: 2 }))
  .map(([base, changes]) => ({ ...base, ...changes }));
const body = fc.oneof(
  { weight: 3, arbitrary: nearlyValid },
  { weight: 1, arbitrary: fc.constantFrom(...VALID) },
  {
    weight: 2,
    arbitrary: fc.dictionary(fc.constantFrom(...FIELDS), fc.constant(undefined)).chain((shape) =>
      fc.record(Object.fromEntries(Object.keys(shape).map((k) => [k, plausible[k] ?? jsonValue]))),
    ),
  },
  { weight: 1, arbitrary: jsonValue },
);

/** Nesting far past any bound, as raw JSON text. */
const deepJson = fc.integer({ min: 50, max: 20_000 }).chain((depth) =>
  fc.constantFrom(`{"prompt":"deep","provider_options":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`, `${'['.repeat(depth)}${']'.repeat(depth)}`, `{"prompt":"x","metadata":${'['.repeat(depth)}${']'.repeat(depth)}}`),
);

const rawBody = fc.oneof(
  { weight: 6, arbitrary: body.map((b) => ({ type: 'application/json', data: Buffer.from(JSON.stringify(b) ?? 'null') })) },
  { weight: 1, arbitrary: deepJson.map((t) => ({ type: 'application/json', data: Buffer.from(t) })) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => ({ type: 'application/json', data: Buffer.from(b) })) },
  { weight: 1, arbitrary: fc.constantFrom('', '{', 'null', '[]', '"x"', '{"prompt":"x"', '\u00ff\u00fe').map((t) => ({ type: 'application/json', data: Buffer.from(t, 'latin1') })) },
  { weight: 1, arbitrary: fc.constantFrom('text/plain', 'application/xml', 'application/jsonl', 'multipart/form-data', 'application/x-www-form-urlencoded').map((type) => ({ type, data: Buffer.from('{"prompt":"x"}\nnot json\n') })) },
);

/** A multipart form with random text parts and images (real, empty, garbage) under random names. */
const multipart = fc
  .record({
    fields: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...FIELDS, 'image', 'mask', 'image[]', 'metadata[a]', 'provider_options[n]'), text), fc.oneof(text, jsonValue.map((v) => JSON.stringify(v) ?? ''))), { maxLength: 6 }),
    files: fc.array(fc.tuple(fc.constantFrom('image', 'image[]', 'mask', 'other', '__proto__'), fc.constantFrom('png', 'empty', 'garbage')), { maxLength: 3 }),
  })
  .map(({ fields, files }) => {
    const boundary = `----easelfuzz${Math.random().toString(16).slice(2)}`;
    const parts: Buffer[] = [];
    for (const [name, value] of fields) parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name.replace(/["\r\n]/g, '')}"\r\n\r\n${value}\r\n`));
    for (const [name, kind] of files) {
      const data = kind === 'png' ? png : kind === 'empty' ? Buffer.alloc(0) : Buffer.from('not an image at all');
      parts.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="f.png"\r\nContent-Type: image/png\r\n\r\n`), data, Buffer.from('\r\n'));
    }
    parts.push(Buffer.from(`--${boundary}--\r\n`));
    return { type: `multipart/form-data; boundary=${boundary}`, data: Buffer.concat(parts) };
  });

const queryString = (names: string[]) =>
  fc
    .array(fc.tuple(fc.oneof(fc.constantFrom(...(names.length ? names : ['x'])), text), fc.oneof(text, fc.constantFrom('1', '0', '-5', '101', '2026-02-31', 'all', 'JOB_A'))), { maxLength: 5 })
    .map((pairs) => pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&'));

const whoArb = fc.constantFrom('b', 'b', 'b', 'wrong', 'none', 'garbled');

const caseArb = fc.record({
  op: fc.integer({ min: 0, max: 1_000 }),
  segments: fc.array(pathSegment, { minLength: 1, maxLength: 3 }),
  useJobA: fc.boolean(),
  query: fc.integer({ min: 0, max: 1_000 }).chain(() => fc.boolean()),
  who: whoArb,
  extraHeaders: fc.dictionary(fc.constantFrom('easel-cache', 'idempotency-key', 'prefer', 'last-event-id', 'accept', 'x-request-id'), text.map((s) => s.replace(/[^\x20-\x7e]/g, '').slice(0, 300)), { maxKeys: 3 }),
  body: rawBody,
  form: multipart,
  queryArb: fc.constant(null),
});

// ---------------------------------------------------------------- the property

const stats = { cases: 0, fiveHundreds: 0, statuses: new Map<number, number>() };

test(`fuzz every operation of the API document for ${SECONDS} s: no 5xx, OpenAI's error shape, nothing of another key's`, { timeout: (SECONDS + 120) * 1000 }, async () => {
  const failures: string[] = [];
  await fc.assert(
    fc.asyncProperty(caseArb, fc.integer({ min: 0, max: 1_000_000 }), async (c, seed) => {
      const op = ops[c.op % ops.length]!;
      // Path parameters: hostile segments, or key A's job id (key B must get a 404, never A's job).
      let i = 0;
      let path = op.path.replace(/\{[^}]+\}/g, () => (c.useJobA ? jobA : c.segments[i++ % c.segments.length]!));
      if (op.query.length || c.query) {
        const q = fc.sample(queryString(op.query), { numRuns: 1, seed })[0]!.replace(/JOB_A/g, jobA);
        if (q) path += `?${q}`;
      }
      const headers: Record<string, string> = { ...c.extraHeaders };
      if (c.who === 'b') headers.authorization = `Bearer ${keyB}`;
      else if (c.who === 'wrong') headers.authorization = 'Bearer easel_sk_not_a_key';
      else if (c.who === 'garbled') headers.authorization = 'Basic ::::';
      // Submissions run asynchronously: a job the backend refuses fails, the answer does not.
      if (op.method === 'POST') headers.prefer = 'respond-async';
      let data: Buffer | undefined;
      if (op.method === 'POST' || op.method === 'PUT') {
        const chosen = op.body.includes('multipart/form-data') && seed % 3 !== 0 ? c.form : c.body;
        data = Buffer.from(chosen.data.toString('latin1').replace(/JOB_A/g, jobA), 'latin1');
        headers['content-type'] = chosen.type;
        headers['content-length'] = String(data.length);
      }
      const ans = await send({ method: op.method, path, headers, body: data }).catch((err) => {
        failures.push(`${op.method} ${path.slice(0, 200)}: the request failed: ${(err as Error).message}`);
        throw err;
      });
      if (!ans) return true;
      stats.cases++;
      stats.statuses.set(ans.status, (stats.statuses.get(ans.status) ?? 0) + 1);
      const where = `${op.method} ${path.slice(0, 200)} → ${ans.status}`;
      if (ans.status >= 500) {
        stats.fiveHundreds++;
        failures.push(`${where}: ${ans.text.slice(0, 300)}`);
        return false;
      }
      if (ans.status >= 400 && String(ans.headers['content-type'] ?? '').includes('json')) {
        const parsed = JSON.parse(ans.text) as { error?: Record<string, unknown> };
        const e = parsed.error;
        const shaped = !!e && typeof e.message === 'string' && typeof e.type === 'string' && 'param' in e && 'code' in e;
        if (!shaped) {
          failures.push(`${where}: not OpenAI's error shape: ${ans.text.slice(0, 300)}`);
          return false;
        }
      } else if (ans.status >= 400) {
        failures.push(`${where}: a ${ans.status} that is not JSON (${String(ans.headers['content-type'])})`);
        return false;
      }
      if (c.who === 'b' && ans.text.includes(MARKER)) {
        failures.push(`${where}: key B was answered with key A's data: ${ans.text.slice(0, 300)}`);
        return false;
      }
      return true;
    }),
    { numRuns: 1_000_000, interruptAfterTimeLimit: SECONDS * 1000, markInterruptAsFailure: false, endOnFailure: true },
  ).catch((err) => {
    failures.push(String(err).slice(0, 2000));
  });
  const spread = [...stats.statuses.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`).join(' ');
  process.stdout.write(`# fuzz: ${stats.cases} cases over ${ops.length} operations, ${stats.fiveHundreds} answers with a 5xx; statuses ${spread}\n`);
  assert.deepEqual(failures, [], failures.join('\n'));
  assert.ok(stats.cases > 200, `only ${stats.cases} cases ran`);
  // Still serving, and A's job is intact.
  assert.equal((await fetch(`${easel.url}/health`)).status, 200);
  const mine = (await (await easel.api(`/v1/images/jobs/${jobA}`, { key: keyA })).json()) as any;
  assert.equal(mine.status, 'succeeded');
});
