/**
 * The OpenAPI 3.1 document, generated from the routes as they are registered (@fastify/swagger, with
 * fastify-type-provider-zod turning each route's zod schemas into JSON Schema). What is not in a
 * route lives here: the title and description, the bearer security scheme, the tags. Served at
 * /openapi.json and rendered at /docs (src/api/routes/docs.ts); tests/api/openapi.test.ts fails when
 * a registered route is missing from it or differs.
 */
import type { FastifyDynamicSwaggerOptions, SwaggerTransform } from '@fastify/swagger';
import { createJsonSchemaTransform, jsonSchemaTransformObject } from 'fastify-type-provider-zod';
import { emptyBody } from './schemas/compile.ts';

export const TAGS = [
  { name: 'images', description: 'Generations, edits and variations (OpenAI-compatible), drafts and refinement' },
  { name: 'jobs', description: 'The async job API: fetch, list, follow, cancel, retry' },
  { name: 'batches', description: 'Many generation requests in one call' },
  { name: 'models', description: 'The models this server serves' },
  { name: 'usage', description: 'Spend, budgets and cost reports' },
  { name: 'keys', description: 'API keys' },
  { name: 'system', description: 'Backends, GPU hosts and queue depth' },
  { name: 'service', description: 'Health, readiness, metrics and this document' },
  { name: 'files', description: 'Signed links to stored images' },
  { name: 'webhooks', description: "Hosted providers' signed callbacks" },
] as const;

export type Tag = (typeof TAGS)[number]['name'];

/** What the document says about routes whose URL ends in a wildcard: `/files/*` is `/files/{key}`. */
export const WILDCARD_NAME = 'key';

// Every route is documented unless it says `hide: true`: the library's default skip list names
// @fastify/swagger-ui's pages, which easel does not serve.
const zodTransform = createJsonSchemaTransform({ skipList: [] });

type Doc = Parameters<SwaggerTransform>[0];

const transform: SwaggerTransform = (doc: Doc) => {
  const schema = doc.schema as Record<string, any> | undefined;
  if (!schema) return zodTransform(doc);
  let body = schema.body;
  // An action that takes no body is documented without one (an empty JSON object is tolerated).
  if (body === emptyBody) body = undefined;
  // A body accepted in several content types (batches: JSON or JSONL), each with its own schema.
  const perType: Record<string, any> | undefined = body && typeof body === 'object' && 'content' in body && !('_zod' in body) ? body.content : undefined;
  const out = zodTransform({ ...doc, schema: { ...schema, body: perType ? undefined : body } } as Doc) as { schema: Record<string, any>; url: string };
  if (perType) {
    const content: Record<string, unknown> = {};
    for (const [type, entry] of Object.entries(perType)) {
      const one = zodTransform({ ...doc, schema: { body: (entry as { schema: unknown }).schema } } as Doc) as { schema: Record<string, any> };
      content[type] = { schema: one.schema.body };
    }
    out.schema.body = { content };
  }
  let url = out.url;
  if (url.endsWith('*')) {
    url = `${url.slice(0, -1)}{${WILDCARD_NAME}}`;
    const params = out.schema.params as { properties?: Record<string, unknown>; required?: string[] } | undefined;
    if (params?.properties?.['*']) {
      params.properties = Object.fromEntries(Object.entries(params.properties).map(([k, v]) => [k === '*' ? WILDCARD_NAME : k, v]));
      params.required = params.required?.map((k) => (k === '*' ? WILDCARD_NAME : k));
    }
  }
  return { ...out, url };
};

/** Registered components (the library emits every one, as input and output); only those referenced are kept. */
const transformObject: FastifyDynamicSwaggerOptions['transformObject'] = (doc) => {
  const object = jsonSchemaTransformObject(doc) as Record<string, any>;
  const schemas: Record<string, unknown> = object.components?.schemas ?? {};
  const used = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (!node || typeof node !== 'object') return;
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string' && value.startsWith('#/components/schemas/')) {
        const name = value.slice('#/components/schemas/'.length);
        if (!used.has(name)) {
          used.add(name);
          visit(schemas[name]);
        }
      } else visit(value);
    }
  };
  visit(object.paths);
  object.components.schemas = Object.fromEntries(Object.entries(schemas).filter(([name]) => used.has(name)));
  return object;
};

export function swaggerOptions(): FastifyDynamicSwaggerOptions {
  return {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'easel',
        version: '1',
        description:
          'Self-hosted image generation with the OpenAI Images API, durable async jobs, progress streams and signed webhooks.\n\n' +
          'Every error has OpenAI\'s shape (`{"error": {"message", "type", "param", "code"}}`), with `param` naming the field at fault. ' +
          'Query parameters follow the same rules as bodies: one a route does not take is refused (`unknown_parameter`), one sent twice is refused, ' +
          'numbers are read from their text, and an empty value counts as absent (provider webhooks ignore theirs).',
      },
      tags: TAGS.map((t) => ({ ...t })),
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An easel API key (`easel_sk_…`)' } } },
      security: [{ bearer: [] }],
    },
    transform,
    transformObject,
  };
}
