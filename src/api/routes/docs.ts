/** /openapi.json (generated from the request schemas) and /docs (Swagger UI from the npm package). */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildOpenApi } from '../openapi.ts';
import { editOperations } from './edits.ts';
import type { ApiDeps } from '../server.ts';

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

export async function docsRoutes(app: FastifyInstance, deps: ApiDeps) {
  let doc: string | undefined;
  app.get('/openapi.json', async (_req, reply) => {
    doc ??= JSON.stringify(buildOpenApi(deps.config.limits, deps.publicUrl(), editOperations(deps.config.limits)));
    return reply.header('content-type', 'application/json; charset=utf-8').send(doc);
  });
  app.get('/docs', async (_req, reply) => reply.header('content-type', 'text/html; charset=utf-8').send(PAGE));
  app.get('/docs/init.js', async (_req, reply) => reply.header('content-type', 'application/javascript; charset=utf-8').send(INIT));
  app.get<{ Params: { name: string } }>('/docs/assets/:name', async (req, reply) => {
    const type = ASSETS[req.params.name];
    if (!type) return reply.callNotFound();
    return reply.header('content-type', type).header('cache-control', 'public, max-age=86400').send(readFileSync(join(uiDir, req.params.name)));
  });
}
