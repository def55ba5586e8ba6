/**
 * /openapi.json is generated from the routes as they are registered: every registered route is in it
 * with its method, path, path parameters and query parameters, nothing else is, and each operation
 * says what it answers. Routes that are deliberately not API operations are listed here by name, so
 * hiding a new route is a decision this file records.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import type { RouteOptions } from 'fastify';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { WILDCARD_NAME } from '../../src/api/openapi.ts';

/** Registered on purpose and left out of the document: the web console, the docs page's own files, CORS preflight. */
const HIDDEN = new Set(['GET /', 'GET /assets/*', 'GET /*', 'GET /docs/init.js', 'GET /docs/assets/:name', 'OPTIONS *']);

interface Registered {
  method: string;
  url: string;
  schema: Record<string, any> | undefined;
}

let easel: TestEasel;
let doc: any;
const routes: Registered[] = [];

before(async () => {
  easel = await startEasel({
    beforeStart: (runtime) => {
      runtime.server!.addHook('onRoute', (route: RouteOptions) => {
        for (const method of [route.method].flat()) {
          // Fastify adds a HEAD twin of every GET; it is not an operation of its own.
          if (method !== 'HEAD') routes.push({ method, url: route.url, schema: route.schema as Record<string, any> | undefined });
        }
      });
    },
  });
  const res = await fetch(`${easel.url}/openapi.json`);
  assert.equal(res.status, 200);
  doc = await res.json();
});
after(() => easel.close());

/** `/v1/images/jobs/:id` → `/v1/images/jobs/{id}`; a trailing wildcard is documented by name. */
const docPath = (url: string) => url.replace(/:(\w+)/g, '{$1}').replace(/\*$/, `{${WILDCARD_NAME}}`);
const pathParams = (url: string) => [...url.matchAll(/:(\w+)/g)].map((m) => m[1]!).concat(url.endsWith('*') ? [WILDCARD_NAME] : []);
const key = (r: Registered) => `${r.method} ${r.url}`;
const documented = () => routes.filter((r) => !HIDDEN.has(key(r)));
const operation = (r: Registered) => doc.paths[docPath(r.url)]?.[r.method.toLowerCase()];
const names = (op: any, where: string) => (op.parameters ?? []).filter((p: any) => p.in === where).map((p: any) => p.name).sort();

describe('the OpenAPI document and the registered routes', () => {
  test('the routes were collected (the harness registers the API, the console and the docs)', () => {
    assert.ok(routes.length > 30, `only ${routes.length} routes seen`);
    for (const r of ['POST /v1/images/generations', 'GET /v1/images/jobs/:id', 'GET /files/*', 'GET /']) {
      assert.ok(routes.some((x) => key(x) === r), r);
    }
  });

  test('every registered route is documented, except the listed hidden ones', () => {
    const missing = documented().filter((r) => !operation(r)).map(key);
    assert.deepEqual(missing, [], 'registered but missing from /openapi.json');
    for (const r of routes.filter((x) => HIDDEN.has(key(x)))) {
      assert.equal(operation(r), undefined, `${key(r)} is listed as hidden but documented`);
    }
    const hiddenSeen = new Set(routes.filter((r) => HIDDEN.has(key(r))).map(key));
    assert.deepEqual([...HIDDEN].filter((h) => !hiddenSeen.has(h)), [], 'a hidden route listed here is no longer registered');
  });

  test('nothing is documented that is not registered', () => {
    const registered = new Set(documented().map((r) => `${r.method.toLowerCase()} ${docPath(r.url)}`));
    const stale: string[] = [];
    for (const [path, ops] of Object.entries<any>(doc.paths)) {
      for (const method of Object.keys(ops)) if (!registered.has(`${method} ${path}`)) stale.push(`${method} ${path}`);
    }
    assert.deepEqual(stale, []);
  });

  test('path parameters are the route’s', () => {
    for (const r of documented()) {
      assert.deepEqual(names(operation(r), 'path'), pathParams(r.url).sort(), key(r));
    }
  });

  test('every route declares its query parameters (none is a declaration too), and the document lists the same', () => {
    for (const r of documented()) {
      const query = r.schema?.querystring;
      assert.ok(query instanceof z.ZodObject, `${key(r)} declares no querystring schema`);
      assert.deepEqual(names(operation(r), 'query'), Object.keys(query.shape).sort(), key(r));
    }
  });

  test('every operation has an id, a summary, a tag, a success answer and the error shape', () => {
    const ids = new Set<string>();
    const tags = new Set(doc.tags.map((t: any) => t.name));
    for (const r of documented()) {
      const op = operation(r);
      assert.ok(op.operationId && !ids.has(op.operationId), `${key(r)}: operationId ${op.operationId}`);
      ids.add(op.operationId);
      assert.ok(op.summary, `${key(r)}: summary`);
      assert.ok(op.tags?.length && op.tags.every((t: string) => tags.has(t)), `${key(r)}: tags ${op.tags}`);
      const codes = Object.keys(op.responses);
      assert.ok(codes.some((c) => /^2/.test(c)), `${key(r)}: no success answer (${codes})`);
      assert.ok(!Object.values<any>(op.responses).some((x) => x.description === 'Default Response'), `${key(r)}: an undescribed answer`);
      assert.equal(op.responses['4XX']?.content['application/json'].schema.$ref, '#/components/schemas/Error', `${key(r)}: 4XX`);
    }
  });

  test('the bearer scheme covers /v1; the public routes say they need no key', () => {
    assert.deepEqual(doc.security, [{ bearer: [] }]);
    assert.equal(doc.components.securitySchemes.bearer.scheme, 'bearer');
    for (const r of documented()) {
      const op = operation(r);
      if (r.url.startsWith('/v1/')) assert.equal(op.security, undefined, key(r));
      else assert.deepEqual(op.security, [], key(r));
    }
  });

  test('the document names this server and keeps only the components it uses', () => {
    assert.equal(doc.openapi, '3.1.0');
    assert.deepEqual(doc.servers, [{ url: easel.url }]);
    for (const name of ['Error', 'Job', 'ImagesResponse']) assert.ok(doc.components.schemas[name], name);
    assert.ok(!Object.keys(doc.components.schemas).some((n) => n.endsWith('Input')), Object.keys(doc.components.schemas).join(', '));
  });

  test('what the hand-kept document got wrong is right now: GET /v1/images reads created_after / created_before', () => {
    const q = names(doc.paths['/v1/images'].get, 'query');
    assert.ok(q.includes('created_after') && q.includes('created_before'), q.join(', '));
    assert.ok(!q.includes('created_from'));
  });

  test('multipart, SSE and the several bodies of a batch are described', () => {
    const edit = doc.paths['/v1/images/edits'].post.requestBody.content['multipart/form-data'].schema;
    assert.equal(edit.properties.image.format, 'binary');
    assert.equal(edit.properties['image[]'].items.format, 'binary');
    assert.ok(doc.paths['/v1/images/jobs/{id}/events'].get.responses['200'].content['text/event-stream']);
    assert.ok(doc.paths['/v1/images/generations'].post.responses['200'].content['text/event-stream']);
    const batch = doc.paths['/v1/images/batches'].post.requestBody.content;
    assert.ok(batch['application/json'].schema.anyOf?.length === 2, 'object or array');
    assert.equal(batch['application/jsonl'].schema.type, 'string');
  });
});
