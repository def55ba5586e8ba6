/**
 * POST /v1/images/edits and POST /v1/images/variations (multipart/form-data), answered like
 * generations (sync, or async with `Prefer: respond-async` / `async=true`).
 *
 * Order of work: read the whole form within the upload limits; validate the text fields (the
 * generations schema, with multipart's strings turned into numbers, booleans and JSON); refuse a
 * model whose backend lacks the capability; check every upload (decodable PNG/JPEG/WebP, sane size,
 * mask fits); store the uploads under `inputs/<jobId>/` before the job exists, so a worker on
 * another machine can read them; then create and enqueue the job.
 *
 * multipart/form-data is accepted here only: the parser is registered inside this plugin, so
 * /v1/images/generations still answers 415 to it.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import multipart from '@fastify/multipart';
import { DomainError, invalidParam } from '../../core/errors.ts';
import type { JobKind } from '../../core/job.ts';
import { z } from 'zod';
import { generationBodySchema, parseGeneration } from '../generation-request.ts';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { documentedOnly, noQuery } from '../schemas/compile.ts';
import { submissionHeaders } from '../schemas/common.ts';
import { submissionResponses } from '../schemas/job.ts';
import type { ParsedGeneration } from '../generation-request.ts';
import type { JobViews } from '../job-view.ts';
import type { ApiDeps } from '../server.ts';
import { multipartOptions, readUploadForm } from '../upload-form.ts';
import type { UploadLimits } from '../upload-form.ts';
import { prefersAsync, submitAndAnswer } from '../submit-answer.ts';
import { commandOf } from './images.ts';

type Deps = ApiDeps & { views: JobViews };

/** easel's extensions, accepted on both endpoints as on generations. */
const EXTENSIONS = ['seed', 'steps', 'guidance_scale', 'webhook_url', 'metadata', 'async', 'priority', 'loras', 'provider_options'];

/** Text fields each endpoint takes (OpenAI's, then easel's). */
const FIELDS: Record<'edit' | 'variation', ReadonlySet<string>> = {
  edit: new Set([
    'prompt', 'model', 'n', 'size', 'quality', 'response_format', 'output_format', 'output_compression', 'background',
    'moderation', 'input_fidelity', 'stream', 'partial_images', 'user', 'negative_prompt', ...EXTENSIONS,
  ]),
  // Variations have no prompt; output_format/output_compression are easel's (the stored image is converted).
  variation: new Set(['model', 'n', 'size', 'response_format', 'user', 'output_format', 'output_compression', ...EXTENSIONS]),
};

const INTEGER_FIELDS = new Set(['n', 'output_compression', 'partial_images', 'seed', 'steps']);
const NUMBER_FIELDS = new Set(['guidance_scale']);
const BOOLEAN_FIELDS = new Set(['async', 'stream']);
/** Sent as JSON text (`metadata={"a":"b"}`) or bracketed (`metadata[a]=b`, what the openai SDK sends for objects). */
const OBJECT_FIELDS = new Set(['metadata', 'provider_options']);

const show = (v: string) => JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);

/**
 * `loras` as form fields other than JSON text: indexed (`loras[0][name]=a`, `loras[0][weight]=0.8`)
 * or what the openai SDK sends for an array of objects (`loras[][name]=a`, `loras[][weight]=0.8`,
 * `loras[][name]=b`, …: each entry's fields come together, so a field seen again starts the next).
 */
const LORA_PART = /^loras\[(\d{0,2})\]\[(name|weight)\]$/;

function loraParts(sequence: ReadonlyArray<readonly [string, unknown]>): Record<string, unknown>[] | undefined {
  const listed: Record<string, unknown>[] = [];
  const indexed = new Map<number, Record<string, unknown>>();
  for (const [name, value] of sequence) {
    const m = LORA_PART.exec(name);
    if (!m) continue;
    const key = m[2]!;
    const v = key === 'weight' ? coerceNumber(name, value) : value;
    if (m[1] === '') {
      let entry = listed.at(-1);
      if (!entry || key in entry) listed.push((entry = {}));
      entry[key] = v;
    } else {
      const entry = indexed.get(Number(m[1])) ?? {};
      if (key in entry) throw invalidParam(name, `'${name}' was sent more than once; send it once.`);
      entry[key] = v;
      indexed.set(Number(m[1]), entry);
    }
  }
  if (listed.length && indexed.size) throw invalidParam('loras', "Send 'loras' one way: as JSON text, as 'loras[][name]' fields, or as 'loras[0][name]' fields.");
  if (listed.length) return listed;
  if (indexed.size) return [...indexed.entries()].sort((a, b) => a[0] - b[0]).map(([, e]) => e);
  return undefined;
}

function coerceNumber(name: string, value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const n = Number(value.trim());
  if (value.trim() === '' || !Number.isFinite(n)) throw invalidParam(name, `Invalid value for '${name}': expected a number, got ${show(value)}.`);
  return n;
}

/** Turns multipart's text fields into the JSON-typed body the generations schema validates. */
export function formToBody(fields: Map<string, unknown[]>, allowed: ReadonlySet<string>, sequence?: ReadonlyArray<readonly [string, unknown]>): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  const bracketed = new Map<string, Record<string, unknown>>();
  if (allowed.has('loras')) {
    const parts = loraParts(sequence ?? [...fields].flatMap(([name, values]) => values.map((v) => [name, v] as const)));
    if (parts) {
      if (fields.has('loras')) throw invalidParam('loras', "'loras' was sent both as JSON and as 'loras[…][…]' fields; use one.");
      body.loras = parts;
    }
  }
  for (const [name, values] of fields) {
    if (LORA_PART.test(name) && allowed.has('loras')) continue;
    const m = /^([a-z_]+)\[([^\]]+)\]$/.exec(name);
    if (m && OBJECT_FIELDS.has(m[1]!) && allowed.has(m[1]!)) {
      if (values.length > 1) throw invalidParam(name, `'${name}' was sent ${values.length} times; send it once.`);
      const obj = bracketed.get(m[1]!) ?? {};
      obj[m[2]!] = values[0];
      bracketed.set(m[1]!, obj);
      continue;
    }
    if (!allowed.has(name)) throw invalidParam(name, `Unrecognized request argument supplied: ${name}`, 'unknown_parameter');
    if (values.length > 1) throw invalidParam(name, `'${name}' was sent ${values.length} times; send it once.`);
    body[name] = coerce(name, values[0]);
  }
  for (const [name, obj] of bracketed) {
    if (name in body) throw invalidParam(name, `'${name}' was sent both as JSON and as '${name}[key]' fields; use one.`);
    body[name] = obj;
  }
  return body;
}

function coerce(name: string, value: unknown): unknown {
  if (typeof value !== 'string') return value; // a part sent as application/json arrives parsed
  const v = value.trim();
  if (INTEGER_FIELDS.has(name)) {
    if (!/^-?\d+$/.test(v)) throw invalidParam(name, `Invalid value for '${name}': expected an integer, got ${show(value)}.`);
    return Number(v);
  }
  if (NUMBER_FIELDS.has(name)) {
    const n = Number(v);
    if (v === '' || !Number.isFinite(n)) throw invalidParam(name, `Invalid value for '${name}': expected a number, got ${show(value)}.`);
    return n;
  }
  if (BOOLEAN_FIELDS.has(name)) {
    const lower = v.toLowerCase();
    if (lower === 'true' || lower === '1') return true;
    if (lower === 'false' || lower === '0') return false;
    throw invalidParam(name, `Invalid value for '${name}': expected true or false, got ${show(value)}.`);
  }
  if (name === 'loras') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      throw invalidParam(name, `Invalid value for 'loras': expected a JSON array such as [{"name":"style","weight":0.8}].`);
    }
    if (!Array.isArray(parsed)) throw invalidParam(name, `Invalid value for 'loras': expected a JSON array such as [{"name":"style","weight":0.8}].`);
    return parsed;
  }
  if (OBJECT_FIELDS.has(name)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch {
      throw invalidParam(name, `Invalid value for '${name}': expected a JSON object.`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw invalidParam(name, `Invalid value for '${name}': expected a JSON object.`);
    }
    return parsed;
  }
  return value;
}

/** The text fields of an edit or variation, validated with the generations rules. */
export function parseImageForm(kind: 'edit' | 'variation', fields: Map<string, unknown[]>, deps: Deps, preferAsync: boolean, sequence?: ReadonlyArray<readonly [string, unknown]>): ParsedGeneration {
  const body = formToBody(fields, FIELDS[kind], sequence);
  const fidelity = body.input_fidelity;
  delete body.input_fidelity;
  if (fidelity !== undefined && fidelity !== 'high' && fidelity !== 'low') {
    throw invalidParam('input_fidelity', `Invalid value for 'input_fidelity': expected "high" or "low", got ${show(String(fidelity))}.`);
  }
  // Variations take no prompt; the shared schema wants one, so it gets a stand-in that is dropped.
  const parsed = parseGeneration(kind === 'variation' ? { ...body, prompt: 'variation' } : body, deps.config.limits, preferAsync);
  if (kind === 'variation') parsed.request.prompt = '';
  if (fidelity !== undefined) parsed.request.inputFidelity = fidelity;
  return parsed;
}

async function handle(kind: Extract<JobKind, 'edit' | 'variation'>, deps: Deps, limits: UploadLimits, req: FastifyRequest, reply: FastifyReply) {
  if (!req.isMultipart()) {
    throw new DomainError('unsupported_media', `Unsupported Content-Type "${String(req.headers['content-type'] ?? '').slice(0, 100)}"; this endpoint takes multipart/form-data.`, { code: 'unsupported_media_type' });
  }
  const form = await readUploadForm(req, limits, { allowMask: kind === 'edit' });
  if (form.images.length === 0) {
    throw invalidParam('image', "Missing required parameter: 'image'.", 'missing_required_parameter');
  }
  if (kind === 'variation' && form.images.length > 1) {
    throw invalidParam('image', `A variation takes exactly one image; got ${form.images.length}.`);
  }
  const parsed = parseImageForm(kind, form.fields, deps, prefersAsync(req), form.sequence);
  const cmd = commandOf(req, kind === 'edit' ? 'edits' : 'variations', kind, parsed);
  return submitAndAnswer(deps, req, reply, { ...cmd, inputs: { kind: 'uploads', images: form.images, ...(form.mask ? { mask: form.mask } : {}) } }, parsed);
}

export async function editRoutes(app: FastifyInstance, deps: Deps) {
  const limits: UploadLimits = deps.config.uploads;
  await app.register(multipart, multipartOptions(limits));
  // JSON and anything else is a clear 415 here (generations keep their JSON parser: this plugin is encapsulated).
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('*', (req, _payload, done) => {
    done(new DomainError('unsupported_media', `Unsupported Content-Type "${String(req.headers['content-type'] ?? '').slice(0, 100)}"; this endpoint takes multipart/form-data.`, { code: 'unsupported_media_type' }), undefined);
  });

  const r = app.withTypeProvider<ZodTypeProvider>();
  const forms = formSchemas(deps.config.limits);
  const common = { querystring: noQuery, headers: documentedOnly(submissionHeaders), consumes: ['multipart/form-data'], response: submissionResponses };
  r.post('/images/edits', {
    config: { limitGroup: 'generations' },
    schema: { summary: 'Edit images with a prompt, optionally inside a mask (OpenAI-compatible, multipart)', operationId: 'createImageEdit', tags: ['images'], body: forms.edit, ...common },
  }, (req, reply) => handle('edit', deps, limits, req, reply));
  r.post('/images/variations', {
    config: { limitGroup: 'generations' },
    schema: { summary: 'Variations of one image (OpenAI-compatible, multipart)', operationId: 'createImageVariation', tags: ['images'], body: forms.variation, ...common },
  }, (req, reply) => handle('variation', deps, limits, req, reply));
}

const file = (description: string) => z.string().meta({ format: 'binary' }).describe(description);

/**
 * The forms for the document, from the same field lists and the generations schema. Documentation
 * only: the handler reads the multipart body itself (readUploadForm, then parseImageForm).
 */
function formSchemas(limits: ApiDeps['config']['limits']) {
  const base = generationBodySchema(limits);
  const pick = (names: ReadonlySet<string>) => base.pick(Object.fromEntries([...names].filter((n) => n in base.shape).map((n) => [n, true])) as any) as z.ZodObject;
  return {
    edit: documentedOnly(
      pick(FIELDS.edit).extend({
        input_fidelity: z.enum(['high', 'low']).optional().describe("How closely the output keeps the input's details (models that take it)"),
        image: file('One PNG, JPEG or WebP image').optional(),
        'image[]': z.array(file('An image')).optional().describe('Several images (what the openai SDK sends for an array)'),
        mask: file('PNG with alpha; transparent pixels mark where to edit; same size as the first image').optional(),
      }),
    ),
    variation: documentedOnly(pick(FIELDS.variation).extend({ image: file('One PNG, JPEG or WebP image') })),
  };
}
