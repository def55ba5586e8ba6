/**
 * The route schema compilers (src/api/schemas/compile.ts) on a bare Fastify: request failures become
 * OpenAI-shaped errors; answers are sent unchecked in production and checked (unknown keys and
 * undeclared statuses included) when `validateResponses` is on, as the test harness runs easel.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import Fastify from 'fastify';
import type { FastifyError } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { asDomainError } from '../../src/api/fastify-errors.ts';
import { toHttp } from '../../src/api/http-errors.ts';
import { checkDeclaredStatuses, documentedOnly, idParam, mismatch, noQuery, serializerCompiler, validatorCompiler } from '../../src/api/schemas/compile.ts';
import { errorResponses, json, queryInt } from '../../src/api/schemas/common.ts';

const thing = z.object({ id: z.string(), size: z.int(), tags: z.array(z.object({ name: z.string() })) });

async function app(validateResponses: boolean, answer: unknown, status = 200) {
  const f = Fastify();
  f.setValidatorCompiler(validatorCompiler);
  f.setSerializerCompiler(serializerCompiler(validateResponses));
  if (validateResponses) checkDeclaredStatuses(f);
  f.setErrorHandler((err: FastifyError, req, reply) => {
    const http = toHttp(asDomainError(err, req, 1024));
    return reply.status(http.status).send(http.body);
  });
  const r = f.withTypeProvider<ZodTypeProvider>();
  r.get('/things/:id', {
    schema: {
      params: z.object({ id: idParam('thing', /^thing_\d+$/) }),
      querystring: z.object({ limit: queryInt(1, 10, 5, 'Page size') }).strict(),
      response: { 200: json('A thing', thing), ...errorResponses },
    },
  }, async (_req, reply) => reply.status(status).send(answer as any));
  r.post('/raw', { schema: { querystring: noQuery, body: documentedOnly(z.object({ must: z.string() })), response: { 200: json('Echo', z.object({ body: z.unknown() })) } } }, async (req) => ({ body: req.body }));
  await f.ready();
  return f;
}

const good = { id: 'thing_1', size: 3, tags: [{ name: 'a' }] };

describe('requests', () => {
  test('a query failure is a 400 naming the parameter; an id that cannot exist is a 404 for that thing', async () => {
    const f = await app(false, good);
    const bad = await f.inject('/things/thing_1?limit=11');
    assert.equal(bad.statusCode, 400);
    assert.deepEqual(bad.json().error, { message: "Invalid value for 'limit': expected an integer from 1 to 10.", type: 'invalid_request_error', param: 'limit', code: 'invalid_value' });
    const unknown = await f.inject('/things/thing_1?x=1');
    assert.equal(unknown.json().error.code, 'unknown_parameter');
    const missing = await f.inject('/things/nope');
    assert.equal(missing.statusCode, 404);
    assert.deepEqual(missing.json().error, { message: "No thing with id 'nope'.", type: 'not_found_error', param: 'id', code: 'thing_not_found' });
    assert.equal((await f.inject('/things/thing_1?limit=2')).statusCode, 200);
  });

  test('a documentedOnly schema is never run: the handler gets the part as it came', async () => {
    const f = await app(false, good);
    const res = await f.inject({ method: 'POST', url: '/raw', payload: { other: 1 } });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), { body: { other: 1 } });
    assert.equal((await f.inject({ method: 'POST', url: '/raw?a=1', payload: {} })).json().error.param, 'a');
  });
});

describe('responses', () => {
  test('production sends what the route returns, unchecked', async () => {
    const f = await app(false, { ...good, secret: 'x' });
    const res = await f.inject('/things/thing_1');
    assert.equal(res.statusCode, 200);
    assert.equal(res.json().secret, 'x');
  });

  test('with validateResponses, an answer that fits goes out unchanged', async () => {
    const f = await app(true, good);
    const res = await f.inject('/things/thing_1');
    assert.equal(res.statusCode, 200);
    assert.deepEqual(res.json(), good);
  });

  for (const [name, answer, status, pattern] of [
    ['an undeclared key', { ...good, secret: 'x' }, 200, /secret: not in the schema/],
    ['an undeclared nested key', { ...good, tags: [{ name: 'a', colour: 'red' }] }, 200, /tags\[0\]\.colour: not in the schema/],
    ['a field of the wrong type', { ...good, size: 'big' }, 200, /size:/],
    ['a missing field', { id: 'thing_1', tags: [] }, 200, /size:/],
    ['a status the route does not declare', good, 201, /answered 201, which its schema does not declare/],
  ] as const) {
    test(`with validateResponses, ${name} is a 500 that names it`, async (t) => {
      t.mock.method(console, 'error', () => {});
      const f = await app(true, answer, status);
      const res = await f.inject('/things/thing_1');
      assert.equal(res.statusCode, 500);
      assert.equal(res.json().error.code, 'response_schema_mismatch');
      assert.match(res.json().error.message, pattern);
    });
  }

  test('mismatch() reads the answer as the client does (JSON)', () => {
    assert.equal(mismatch(z.object({ at: z.string() }), JSON.parse(JSON.stringify({ at: new Date(0) }))), undefined);
    assert.match(mismatch(z.object({ a: z.number() }), { a: 1, b: 2 })!, /^b: not in the schema/);
    assert.equal(mismatch(z.record(z.string(), z.number()), { a: 1, b: 2 }), undefined);
  });
});
