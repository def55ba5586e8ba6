/**
 * The web console (console/, built by Vite into console/dist) at `/`, same origin as the API so it
 * needs no CORS: it signs in with an API key and calls the public /v1 API like any client.
 *
 * - `/assets/*` are Vite's content-hashed files: cached for a year, immutable.
 * - Other files at the top of dist (icons) are revalidated; an unknown one is a 404.
 * - Any other GET that asks for HTML (a console page such as /gallery, reloaded or opened from a
 *   bookmark) gets index.html, never cached, so a rebuilt console is picked up at once. API-looking
 *   paths (/v1, /files, /docs, …) never fall back: they keep their JSON 404s.
 * - Without a build (installed with --ignore-scripts or --omit=dev) `/` says how to build it.
 */
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

export const CONSOLE_DIST = fileURLToPath(new URL('../../../console/dist/', import.meta.url));

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.json': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.txt': 'text/plain; charset=utf-8',
  '.woff2': 'font/woff2',
  '.map': 'application/json; charset=utf-8',
};

/** Paths that belong to the API or other routes: never answered with the console's index.html. */
const NOT_CONSOLE = /^\/(v1|files|docs|openapi\.json|health|ready|metrics|hooks|webhooks)(\/|$)/;

// Images may come from the API's origin or an S3/CDN origin (presigned URLs), and partial images are
// data: URLs; everything else the console loads is its own.
const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob: http: https:",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

const NOT_BUILT = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>easel</title></head><body style="font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem">
<h1>easel</h1><p>The web console has not been built on this install. From the checkout, run</p>
<pre>npm run build:console</pre><p>and reload. The API is up: see <a href="/docs">/docs</a>.</p></body></html>`;

export async function consoleRoutes(app: FastifyInstance, opts: { dir?: string } = {}) {
  const dir = opts.dir ?? CONSOLE_DIST;
  const root = normalize(dir.endsWith(sep) ? dir : dir + sep);

  const sendFile = async (reply: FastifyReply, rel: string, cacheControl: string): Promise<boolean> => {
    const path = normalize(join(root, rel));
    if (!path.startsWith(root)) return false;
    try {
      const info = await stat(path);
      if (!info.isFile()) return false;
      const body = await readFile(path);
      reply
        .header('content-type', TYPES[extname(path)] ?? 'application/octet-stream')
        .header('cache-control', cacheControl)
        .header('x-content-type-options', 'nosniff')
        .header('last-modified', info.mtime.toUTCString());
      await reply.send(body);
      return true;
    } catch {
      return false;
    }
  };

  const page = async (_req: FastifyRequest, reply: FastifyReply) => {
    reply
      .header('content-security-policy', CSP)
      .header('referrer-policy', 'no-referrer')
      .header('x-frame-options', 'DENY');
    if (await sendFile(reply, 'index.html', 'no-cache')) return reply;
    return reply.status(503).header('content-type', 'text/html; charset=utf-8').header('cache-control', 'no-store').send(NOT_BUILT);
  };

  // The console's pages and files are not API operations: left out of the OpenAPI document, and their
  // query strings are the page's own (the gallery keeps its filters there).
  const hidden = { schema: { hide: true } };
  app.get('/', hidden, page);
  app.get<{ Params: { '*': string } }>('/assets/*', hidden, async (req, reply) => {
    if (await sendFile(reply, join('assets', req.params['*']), 'public, max-age=31536000, immutable')) return reply;
    return reply.callNotFound();
  });
  app.get<{ Params: { '*': string } }>('/*', hidden, async (req, reply) => {
    const path = '/' + req.params['*'];
    if (NOT_CONSOLE.test(path)) return reply.callNotFound();
    // A file at the top of dist (favicon, manifest).
    if (extname(path) && !path.slice(1).includes('/')) {
      if (await sendFile(reply, path.slice(1), 'public, max-age=3600, must-revalidate')) return reply;
      return reply.callNotFound();
    }
    const accept = req.headers.accept ?? '';
    if (!accept.includes('text/html')) return reply.callNotFound();
    return page(req, reply);
  });
}

/** True when a built console is there to serve. */
export const consoleBuilt = (dir: string = CONSOLE_DIST): boolean => existsSync(join(dir, 'index.html'));
