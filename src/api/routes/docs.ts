/** /openapi.json (generated from the registered routes: src/api/openapi.ts) and /docs (Swagger UI from the npm package). */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ApiDeps } from '../server.ts';
import { errorResponses, json } from '../schemas/common.ts';
import { noQuery } from '../schemas/compile.ts';

const uiDir = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
const ASSETS: Record<string, string> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
  'swagger-ui-standalone-preset.js': 'application/javascript; charset=utf-8',
};

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>easel API</title><link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div><script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>`;
const INIT = `window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#ui', deepLinking: true, persistAuthorization: false });`;

const text = (description: string, type: string) => ({ description, content: { [type]: { schema: z.string() } } });

export async function docsRoutes(app: FastifyInstance, deps: ApiDeps) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  let doc: Record<string, unknown> | undefined;
  r.get('/openapi.json', {
    schema: {
      summary: 'This document (OpenAPI 3.1), generated from the registered routes',
      operationId: 'openapi',
      tags: ['service'],
      security: [],
      querystring: noQuery,
      response: { 200: json('The OpenAPI document', z.record(z.string(), z.unknown())), ...errorResponses },
    },
  }, async () => {
    // Completed on first request: the server's URL is known only once it listens.
    doc ??= { ...(app.swagger() as unknown as Record<string, unknown>), servers: [{ url: deps.publicUrl() }] };
    return doc;
  });
  r.get('/docs', {
    schema: {
      summary: 'This document, rendered (Swagger UI)',
      operationId: 'docs',
      tags: ['service'],
      security: [],
      querystring: noQuery,
      response: { 200: text('An HTML page', 'text/html'), ...errorResponses },
    },
  }, async (_req, reply) => reply.header('content-type', 'text/html; charset=utf-8').send(PAGE));
  // The page's script and Swagger UI's files: not API operations.
  r.get('/docs/init.js', { schema: { hide: true, querystring: noQuery } }, async (_req, reply) => reply.header('content-type', 'application/javascript; charset=utf-8').send(INIT));
  r.get('/docs/assets/:name', { schema: { hide: true, params: z.object({ name: z.string() }), querystring: noQuery } }, async (req, reply) => {
    const type = ASSETS[req.params.name];
    if (!type) return reply.callNotFound();
    return reply.header('content-type', type).header('cache-control', 'public, max-age=86400').send(readFileSync(join(uiDir, req.params.name)));
  });
}
