/**
 * How the zod schemas every route declares are used at run time (the OpenAPI document is the other
 * use: src/api/openapi.ts).
 *
 * Requests: params, querystring, headers and body are parsed with the route's schema before the
 * handler runs, and a failure is the same OpenAI-shaped 400 as any other (`zodToDomainError`: it names
 * `param` and says what was wrong). Two exceptions:
 * - path params that are ids (`idParam`) answer 404 `<thing>_not_found`, as an unknown id does: an id
 *   that cannot exist is just not found, and never reaches the store;
 * - a schema marked `documentedOnly` is never run: the handler reads that part itself (a multipart
 *   form, a batch that may be JSON or JSONL, a body whose defaults depend on the route), so it is
 *   validated once, there.
 *
 * Responses are sent with plain JSON.stringify, as before routes had schemas: nothing is re-checked on
 * the hot path. With `server.validateResponses` (tests turn it on) every JSON answer is checked
 * against the schema its route declares for that status, unknown keys included, and a route that
 * answers a status it does not declare fails: drift between a route and its document fails a test.
 */
import type { FastifyInstance, FastifySchemaCompiler, FastifySerializerCompiler } from 'fastify';
import { z } from 'zod';
import { DomainError } from '../../core/errors.ts';
import { paramPath, zodToDomainError } from '../../core/zod-errors.ts';

const documentation = new WeakSet<object>();

/** Marks a schema as documentation only: the route's handler validates that part itself. */
export function documentedOnly<T extends z.ZodType>(schema: T): T {
  documentation.add(schema);
  return schema;
}

interface IdRule {
  what: string;
  code: string;
}
const idRules = new WeakMap<object, IdRule>();

/** A path param that is an id of `what`: one that does not match `pattern` is a 404 `code`, like an unknown one. */
export function idParam(what: string, pattern: RegExp, code = `${what}_not_found`, description?: string) {
  const schema = z.string().regex(pattern).describe(description ?? `The ${what}'s id`);
  idRules.set(schema, { what, code });
  return schema;
}

/** Querystring of a route that takes none: any parameter is refused, like an unknown body field. */
export const noQuery = z.object({}).strict();

/**
 * The body of an action that takes none (`/cancel`, `/retry`, `/revoke`): nothing, or an empty JSON
 * object. An empty body sent as `application/json` counts as `{}` on these routes (see `jsonParser`).
 */
export const emptyBody = z.object({}).strict().nullish().describe('No body, or an empty JSON object');

const unknownQuery = (name: string) =>
  new DomainError('invalid', `Unrecognized request argument supplied: ${name}`, { param: name, code: 'unknown_parameter' });

export const validatorCompiler: FastifySchemaCompiler<z.ZodType> = ({ schema, httpPart }) => {
  // An empty result ({}) leaves the part as it arrived.
  if (documentation.has(schema)) return () => ({});
  if (schema === noQuery) {
    // The common case on the hot path (POST /v1/images/generations): no zod call for an empty query.
    return (query: unknown) => {
      for (const name in query as object) return { error: unknownQuery(name) };
      return {};
    };
  }
  const ids = httpPart === 'params' ? paramIds(schema) : undefined;
  return (data: unknown) => {
    const parsed = schema.safeParse(data, { reportInput: true });
    if (parsed.success) return { value: parsed.data };
    if (ids) {
      const issue = parsed.error.issues[0]!;
      const name = issue.path[0];
      const rule = typeof name === 'string' ? ids.get(name) : undefined;
      if (rule) {
        const id = String((data as Record<string, unknown>)[name as string] ?? '');
        return { error: new DomainError('not_found', `No ${rule.what} with id '${id.length > 80 ? `${id.slice(0, 80)}…` : id}'.`, { param: name as string, code: rule.code }) };
      }
    }
    return { error: zodToDomainError(parsed.error) };
  };
};

function paramIds(schema: z.ZodType): Map<string, IdRule> | undefined {
  if (!(schema instanceof z.ZodObject)) return undefined;
  const out = new Map<string, IdRule>();
  for (const [name, field] of Object.entries(schema.shape as Record<string, z.ZodType>)) {
    const rule = idRules.get(field);
    if (rule) out.set(name, rule);
  }
  return out.size ? out : undefined;
}

/** Production: what Fastify does for a route without response schemas. */
const plainJson: FastifySerializerCompiler<unknown> = () => (data) => JSON.stringify(data);

/** Tests: every answer checked against its declared schema before it is sent. */
const checkedJson: FastifySerializerCompiler<unknown> = ({ schema, method, url, httpStatus }) => {
  const zod = schema instanceof z.ZodType ? schema : undefined;
  return (data) => {
    const text = JSON.stringify(data);
    if (zod) {
      const problem = mismatch(zod, text === undefined ? undefined : JSON.parse(text));
      if (problem) throw responseDrift(`${method} ${url} answered ${httpStatus} with a body its schema does not describe: ${problem}`);
    }
    return text;
  };
};

export function serializerCompiler(validate: boolean): FastifySerializerCompiler<unknown> {
  return validate ? checkedJson : plainJson;
}

/** What is wrong with `sent` (as the client reads it) for `schema`, or undefined when it fits. */
export function mismatch(schema: z.ZodType, sent: unknown): string | undefined {
  const parsed = schema.safeParse(sent);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return `${paramPath(issue.path) || '(body)'}: ${issue.message}`;
  }
  // zod drops keys its objects do not declare: whatever the parse dropped, the schema does not describe.
  const extra = droppedKey(sent, JSON.parse(JSON.stringify(parsed.data ?? null)), []);
  return extra ? `${extra}: not in the schema` : undefined;
}

function droppedKey(sent: unknown, kept: unknown, path: PropertyKey[]): string | undefined {
  if (Array.isArray(sent)) {
    if (!Array.isArray(kept)) return undefined;
    for (let i = 0; i < sent.length; i++) {
      const found = droppedKey(sent[i], kept[i], [...path, i]);
      if (found) return found;
    }
    return undefined;
  }
  if (!sent || typeof sent !== 'object' || !kept || typeof kept !== 'object') return undefined;
  for (const [key, value] of Object.entries(sent)) {
    if (!Object.hasOwn(kept, key)) return paramPath([...path, key]);
    const found = droppedKey(value, (kept as Record<string, unknown>)[key], [...path, key]);
    if (found) return found;
  }
  return undefined;
}

function responseDrift(message: string): DomainError {
  // Loud in test output, where logs are off: the 500 alone would not say which field drifted.
  console.error(`[easel] response schema drift: ${message}`);
  return new DomainError('internal', message, { code: 'response_schema_mismatch' });
}

/** Tests: a JSON answer with a status its route does not declare is drift too. */
export function checkDeclaredStatuses(app: FastifyInstance): void {
  app.addHook('preSerialization', async (req, reply, payload) => {
    const responses = req.routeOptions.schema?.response as Record<string, unknown> | undefined;
    if (!responses) return payload;
    const status = String(reply.statusCode);
    if (status in responses || `${status[0]}xx` in responses || 'default' in responses) return payload;
    throw responseDrift(`${req.method} ${req.routeOptions.url} answered ${status}, which its schema does not declare`);
  });
}
