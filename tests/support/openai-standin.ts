/**
 * A loopback stand-in for the OpenAI Images API (generations, edits, variations, models), following
 * the model rules real clients trip over: dall-e-2 when no model is named, dall-e-3 only n=1, GPT
 * image models always b64 and never a URL, `revised_prompt` only from dall-e-3, `usage` only from
 * GPT image models, `image` and repeated `image[]` parts on edits, and `stream: true` answered as
 * Server-Sent Events (`partial_images` partials, then the `completed` event) for GPT image models.
 *
 * Built for speed as much as fidelity (a benchmark drives it at ~1,000 req/s): the PNG and its
 * base64 are made once, and nothing per request is heavier than a JSON parse.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { crc32, deflateSync } from 'node:zlib';

export interface StandinFailure {
  /** How many matching requests fail (default 1). */
  count?: number;
  status: number;
  /** JSON body; defaults to an OpenAI-shaped error for the status. */
  body?: unknown;
  headers?: Record<string, string>;
  /** Only requests whose path starts with this fail (default `/v1/images/`). */
  path?: string;
}

export interface OpenAIStandinOptions {
  /** Key required as `Authorization: Bearer <key>` (default `sk-standin`); null accepts any or none. */
  apiKey?: string | null;
  /** Delay before every API answer. */
  latencyMs?: number;
  /** Side of the square PNG returned (default 64), or its exact size. */
  imageSize?: number | { width: number; height: number };
  /**
   * Behave like OpenAI itself (default): unknown parameters, unknown models, sizes a model does not
   * offer and `response_format` on GPT image models are 400/404. Off, it behaves like LocalAI or
   * another easel: extra fields are accepted and any model id works (answering like dall-e-2).
   */
  strict?: boolean;
  /** Keep a log of every request in `requests` (default true). */
  logRequests?: boolean;
  /** Failures queued from the start. */
  failNext?: StandinFailure | StandinFailure[];
  /** Ids listed by `GET /v1/models` and accepted in strict mode. */
  models?: string[];
  /** `stream: true`: the pause before each SSE event (default 0). */
  streamGapMs?: number;
  /**
   * `stream: true`: awaited after the partial images and before the `completed` event, so a test can
   * check that partials reach the client while the answer is still open.
   */
  beforeCompleted?: () => Promise<void>;
  /** `stream: true`: an `error` event with this body takes the place of the `completed` event. */
  streamError?: unknown;
  /**
   * Behave like an endpoint that does not stream: `stream: true` is accepted and ignored, and the
   * answer is the plain JSON images response (as LocalAI and other images-only servers do).
   */
  ignoreStream?: boolean;
  /** Serve `GET /v1/models` (default true); false answers it 404, as some images-only servers do. */
  modelsRoute?: boolean;
  /** `stream: true`: end the event stream after the partial images, without the `completed` event. */
  streamWithoutCompleted?: boolean;
}

export interface StandinFilePart {
  field: string;
  filename: string;
  type: string;
  size: number;
}

export interface StandinRequest {
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** The JSON body, or the multipart text fields (a repeated field becomes an array). */
  body?: Record<string, unknown>;
  files: StandinFilePart[];
  /** Status answered; undefined when the client left first. */
  status?: number;
  aborted?: boolean;
}

export interface OpenAIStandin {
  /** Base URL including `/v1`, ready for an OpenAI client's baseURL. */
  url: string;
  port: number;
  requests: StandinRequest[];
  /** Requests whose client disconnected before the answer was written. */
  aborted(): number;
  /** Makes the next `count` image requests fail with `status` (body defaults to an OpenAI error). */
  failNext(count: number, status: number, body?: unknown, headers?: Record<string, string>): void;
  failNext(failure: StandinFailure): void;
  setLatency(ms: number): void;
  /** Requests that have arrived and not been answered yet (logged or not). */
  inFlight(): number;
  /** The PNG every image is. */
  png: Buffer;
  /** The PNG every streamed partial image is (16×16, so it tells apart from the final one). */
  partialPng: Buffer;
  close(): Promise<void>;
}

export const DEFAULT_STANDIN_KEY = 'sk-standin';
const DEFAULT_MODELS = [
  'dall-e-2',
  'dall-e-3',
  'gpt-image-1',
  'gpt-image-1-mini',
  'gpt-image-1.5',
  'gpt-image-2',
  'chatgpt-image-latest',
];

/** OpenAI's error body. */
export function openaiError(
  message: string,
  opts: { type?: string; param?: string | null; code?: string | null } = {},
): { error: { message: string; type: string; param: string | null; code: string | null } } {
  return {
    error: { message, type: opts.type ?? 'invalid_request_error', param: opts.param ?? null, code: opts.code ?? null },
  };
}

/** The refusal GPT image models answer with (observed shape). */
export const MODERATION_BLOCKED = openaiError(
  'Your request was rejected by the safety system. If you believe this is an error, contact us.',
  { type: 'image_generation_user_error', code: 'moderation_blocked' },
);

const SIZES: Record<string, Set<string>> = {
  'dall-e-2': new Set(['256x256', '512x512', '1024x1024']),
  'dall-e-3': new Set(['1024x1024', '1792x1024', '1024x1792']),
  'gpt-image': new Set(['1024x1024', '1536x1024', '1024x1536', 'auto']),
};
const GPT_ONLY = ['output_format', 'output_compression', 'background', 'moderation', 'stream', 'partial_images', 'input_fidelity'];
const KNOWN_FIELDS: Record<Endpoint, Set<string>> = {
  generations: new Set(['prompt', 'model', 'n', 'size', 'quality', 'response_format', 'style', 'user', ...GPT_ONLY]),
  edits: new Set(['prompt', 'model', 'n', 'size', 'quality', 'response_format', 'user', ...GPT_ONLY]),
  variations: new Set(['model', 'n', 'size', 'response_format', 'user']),
};

type Endpoint = 'generations' | 'edits' | 'variations';
type Family = 'dall-e-2' | 'dall-e-3' | 'gpt-image' | 'other';

class HttpError extends Error {
  readonly status: number;
  readonly body: unknown;
  constructor(status: number, body: ReturnType<typeof openaiError>) {
    super(body.error.message);
    this.status = status;
    this.body = body;
  }
}

const bad = (message: string, param: string | null, code: string | null = 'invalid_value') =>
  new HttpError(400, openaiError(message, { param, code }));

const pngCache = new Map<string, { png: Buffer; b64: string }>();

/** A small RGB gradient PNG, built by hand so the stand-in needs nothing but node:zlib. */
export function standinPng(width: number, height: number): { png: Buffer; b64: string } {
  const key = `${width}x${height}`;
  const hit = pngCache.get(key);
  if (hit) return hit;
  const stride = width * 3 + 1;
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    raw[y * stride] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const o = y * stride + 1 + x * 3;
      raw[o] = Math.round((x * 255) / Math.max(1, width - 1));
      raw[o + 1] = Math.round((y * 255) / Math.max(1, height - 1));
      raw[o + 2] = 128;
    }
  }
  const chunk = (type: string, data: Buffer) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, 'latin1');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
    return Buffer.concat([head, data, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  const png = Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
  const made = { png, b64: png.toString('base64') };
  pngCache.set(key, made);
  return made;
}

function familyOf(model: string): Family {
  if (model.startsWith('dall-e-2')) return 'dall-e-2';
  if (model.startsWith('dall-e-3')) return 'dall-e-3';
  if (model.startsWith('gpt-image') || model.startsWith('chatgpt-image')) return 'gpt-image';
  return 'other';
}

export async function startOpenAIStandin(opts: OpenAIStandinOptions = {}): Promise<OpenAIStandin> {
  const apiKey = opts.apiKey === undefined ? DEFAULT_STANDIN_KEY : opts.apiKey;
  const expectedAuth = apiKey === null ? null : `Bearer ${apiKey}`;
  const strict = opts.strict ?? true;
  const logRequests = opts.logRequests ?? true;
  const models = opts.models ?? DEFAULT_MODELS;
  const modelSet = new Set(models);
  const size = typeof opts.imageSize === 'number' || opts.imageSize === undefined
    ? { width: opts.imageSize ?? 64, height: opts.imageSize ?? 64 }
    : opts.imageSize;
  const { png, b64 } = standinPng(size.width, size.height);
  const { png: partialPng, b64: partialB64 } = standinPng(16, 16);
  const streamGapMs = opts.streamGapMs ?? 0;
  const pngLength = String(png.length);
  const modelsBody = JSON.stringify({
    object: 'list',
    data: models.map((id) => ({ id, object: 'model', created: 1_700_000_000, owned_by: 'system' })),
  });

  let latencyMs = opts.latencyMs ?? 0;
  let aborted = 0;
  let seq = 0;
  const failures: Required<StandinFailure>[] = [];
  const queueFailure = (f: StandinFailure) =>
    failures.push({
      count: f.count ?? 1,
      status: f.status,
      body: f.body ?? openaiError(`Injected failure ${f.status}`, { type: f.status >= 500 ? 'server_error' : 'invalid_request_error' }),
      headers: f.headers ?? {},
      path: f.path ?? '/v1/images/',
    });
  for (const f of [opts.failNext ?? []].flat()) queueFailure(f);

  /** Issued file ids; bounded so a long benchmark does not grow it without end. */
  const files = new Set<string>();
  const requests: StandinRequest[] = [];
  let open = 0;
  let origin = '';

  const send = (res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) => {
    if (res.destroyed) return;
    res.writeHead(status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      ...headers,
    });
    res.end(body);
  };

  const takeFailure = (path: string): Required<StandinFailure> | undefined => {
    const i = failures.findIndex((f) => path.startsWith(f.path));
    if (i < 0) return undefined;
    const f = failures[i];
    if (--f.count <= 0) failures.splice(i, 1);
    return f;
  };

  const readBody = (req: IncomingMessage): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)));
      req.on('error', reject);
      req.on('close', () => {
        if (!req.complete) reject(new Error('client left during the body'));
      });
    });

  async function parseRequest(req: IncomingMessage, entry: StandinRequest, endpoint: Endpoint) {
    const raw = await readBody(req);
    const type = req.headers['content-type'] ?? '';
    const images: File[] = [];
    let mask: File | undefined;
    if (endpoint === 'generations') {
      if (!type.startsWith('application/json')) throw bad('Content-Type must be application/json', null, null);
      try {
        entry.body = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
      } catch {
        throw bad('We could not parse the JSON body of your request.', null, null);
      }
      return { body: entry.body, images, mask };
    }
    if (!type.startsWith('multipart/form-data')) throw bad('Content-Type must be multipart/form-data', null, null);
    let form: FormData;
    try {
      form = await new Request('http://standin/', { method: 'POST', headers: { 'content-type': type }, body: raw }).formData();
    } catch {
      throw bad('Could not parse multipart form', null, null);
    }
    const body: Record<string, unknown> = {};
    for (const [field, value] of form) {
      if (typeof value === 'string') {
        const prev = body[field];
        body[field] = prev === undefined ? value : [prev, value].flat();
        continue;
      }
      entry.files.push({ field, filename: value.name, type: value.type, size: value.size });
      if (field === 'image' || field === 'image[]') images.push(value);
      else if (field === 'mask') mask = value;
      else if (strict) throw bad(`Unknown parameter: '${field}'.`, field, 'unknown_parameter');
    }
    for (const key of ['n', 'output_compression', 'partial_images']) {
      if (typeof body[key] === 'string') body[key] = Number(body[key]);
    }
    entry.body = body;
    return { body, images, mask };
  }

  /** A JSON answer, or (`stream: true`) the SSE events to send in order. */
  type Answer = { json: string } | { events: { name: string; data: string; completed: boolean }[] };

  function imagesResponse(endpoint: Endpoint, body: Record<string, unknown>, imageCount: number): Answer {
    const gptOnly = GPT_ONLY.some((k) => body[k] !== undefined);
    const model =
      typeof body.model === 'string' && body.model
        ? body.model
        : endpoint === 'edits' && (imageCount > 1 || gptOnly)
          ? 'gpt-image-1'
          : endpoint === 'generations' && gptOnly
            ? 'gpt-image-1'
            : 'dall-e-2';
    const family = familyOf(model);

    if (strict) {
      for (const key of Object.keys(body)) {
        if (!KNOWN_FIELDS[endpoint].has(key)) throw bad(`Unknown parameter: '${key}'.`, key, 'unknown_parameter');
      }
      if (!modelSet.has(model)) {
        throw new HttpError(404, openaiError(`The model '${model}' does not exist.`, { param: 'model', code: 'model_not_found' }));
      }
      if (endpoint === 'variations' && family !== 'dall-e-2') {
        throw bad(`Invalid model ${model}. The model must be dall-e-2.`, 'model');
      }
      if (endpoint === 'edits' && family === 'dall-e-3') throw bad('dall-e-3 does not support edits.', 'model');
      if (family === 'gpt-image' && body.response_format !== undefined) {
        throw bad(`Unknown parameter: 'response_format'.`, 'response_format', 'unknown_parameter');
      }
      const sizes = SIZES[family];
      if (typeof body.size === 'string' && sizes && !sizes.has(body.size) && model !== 'gpt-image-2') {
        throw bad(`Invalid value: '${body.size}'. Supported values are: ${[...sizes].map((s) => `'${s}'`).join(', ')}.`, 'size');
      }
    }
    if (endpoint !== 'variations' && (typeof body.prompt !== 'string' || body.prompt === '')) {
      throw bad("Missing required parameter: 'prompt'.", 'prompt', 'missing_required_parameter');
    }
    if (endpoint !== 'generations' && imageCount === 0) {
      throw bad("Missing required parameter: 'image'.", 'image', 'missing_required_parameter');
    }
    if (family === 'dall-e-2' && imageCount > 1) throw bad('dall-e-2 takes a single image.', 'image');
    if (imageCount > 16) throw bad('At most 16 images.', 'image');
    const stream = !opts.ignoreStream && (body.stream === true || body.stream === 'true');
    if (stream && family !== 'gpt-image' && strict) throw bad(`Streaming is not supported for ${model}.`, 'stream', null);
    const partials = body.partial_images === undefined ? 0 : body.partial_images;
    if (typeof partials !== 'number' || !Number.isInteger(partials) || partials < 0 || partials > 3) {
      throw bad(`Invalid 'partial_images': integer between 0 and 3 expected.`, 'partial_images');
    }
    const n = body.n === undefined ? 1 : body.n;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 10) {
      throw bad(`Invalid 'n': integer between 1 and 10 expected.`, 'n');
    }
    if (family === 'dall-e-3' && n !== 1) {
      throw bad('You must provide n=1 for this model.', 'n', null);
    }

    const asB64 = family === 'gpt-image' || body.response_format === 'b64_json';
    const data: string[] = [];
    for (let i = 0; i < n; i++) {
      let item: string;
      if (asB64) {
        item = `{"b64_json":"${b64}"`;
      } else {
        const id = `img-${++seq}`;
        files.add(id);
        if (files.size > 10_000) files.delete(files.values().next().value as string);
        item = `{"url":${JSON.stringify(`${origin}/files/${id}.png`)}`;
      }
      if (family === 'dall-e-3') item += `,"revised_prompt":${JSON.stringify(`A detailed rendering of: ${String(body.prompt)}`)}`;
      data.push(item + '}');
    }
    const echo = {
      output_format: body.output_format ?? 'png',
      size: body.size ?? '1024x1024',
      quality: body.quality ?? 'medium',
      background: body.background === 'transparent' ? 'transparent' : 'opaque',
    };
    const usageFor = (images: number) => ({ total_tokens: 100 + 272 * images, input_tokens: 100, output_tokens: 272 * images, input_tokens_details: { text_tokens: 100, image_tokens: 0 } });
    if (stream) {
      // PROTOCOLS.md §1.6: `partial_images` partial events, then one `completed` event per image;
      // events are told apart by `type`, which repeats the event name.
      const prefix = endpoint === 'edits' ? 'image_edit' : 'image_generation';
      const createdAt = Math.floor(Date.now() / 1000);
      const events: { name: string; data: string; completed: boolean }[] = [];
      for (let i = 0; i < n; i++) {
        for (let k = 0; k < partials; k++) {
          const name = `${prefix}.partial_image`;
          events.push({ name, completed: false, data: JSON.stringify({ type: name, b64_json: partialB64, created_at: createdAt, ...echo, partial_image_index: k }) });
        }
        const name = `${prefix}.completed`;
        events.push({ name, completed: true, data: JSON.stringify({ type: name, b64_json: b64, created_at: createdAt, ...echo, usage: usageFor(1) }) });
      }
      return { events };
    }
    let extra = '';
    if (family === 'gpt-image') {
      extra =
        `,"usage":${JSON.stringify(usageFor(n))}` +
        `,"output_format":${JSON.stringify(echo.output_format)}` +
        `,"size":${JSON.stringify(echo.size)}` +
        `,"quality":${JSON.stringify(echo.quality)}` +
        `,"background":${JSON.stringify(echo.background)}`;
    }
    return { json: `{"created":${Math.floor(Date.now() / 1000)},"data":[${data.join(',')}]${extra}}` };
  }

  async function sendEvents(res: ServerResponse, events: { name: string; data: string; completed: boolean }[]) {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    let gated = false;
    for (const event of events) {
      if (streamGapMs > 0) await new Promise((r) => setTimeout(r, streamGapMs));
      if (event.completed && !gated && opts.beforeCompleted) {
        gated = true;
        await opts.beforeCompleted();
      }
      if (res.destroyed) return;
      if (event.completed && opts.streamWithoutCompleted) break;
      if (event.completed && opts.streamError !== undefined) {
        res.write(`event: error\ndata: ${JSON.stringify(opts.streamError)}\n\n`);
        break;
      }
      res.write(`event: ${event.name}\ndata: ${event.data}\n\n`);
    }
    res.end();
  }

  async function handle(req: IncomingMessage, res: ServerResponse, entry: StandinRequest) {
    const path = entry.path;
    if (req.method === 'GET' && path.startsWith('/files/')) {
      const m = /^\/files\/([\w-]+)\.png$/.exec(path);
      if (!m || !files.has(m[1])) return send(res, 404, JSON.stringify(openaiError('No such file', { code: 'not_found' })));
      res.writeHead(200, { 'content-type': 'image/png', 'content-length': pngLength });
      res.end(png);
      return;
    }
    if (expectedAuth !== null && req.headers.authorization !== expectedAuth) {
      req.resume();
      return send(
        res,
        401,
        JSON.stringify(openaiError('Incorrect API key provided.', { type: 'invalid_request_error', code: 'invalid_api_key' })),
      );
    }
    const endpoint: Endpoint | undefined =
      req.method !== 'POST'
        ? undefined
        : path === '/v1/images/generations'
          ? 'generations'
          : path === '/v1/images/edits'
            ? 'edits'
            : path === '/v1/images/variations'
              ? 'variations'
              : undefined;
    const parsed = endpoint ? await parseRequest(req, entry, endpoint) : (req.resume(), undefined);
    if (latencyMs > 0) {
      await new Promise((r) => setTimeout(r, latencyMs));
      if (res.destroyed) return;
    }
    const failure = takeFailure(path);
    if (failure) return send(res, failure.status, JSON.stringify(failure.body), failure.headers);
    if (req.method === 'GET' && path === '/v1/models' && opts.modelsRoute !== false) return send(res, 200, modelsBody);
    if (!endpoint || !parsed) {
      return send(res, 404, JSON.stringify(openaiError(`Unknown request URL: ${req.method} ${path}.`, { code: 'unknown_url' })));
    }
    const answer = imagesResponse(endpoint, parsed.body, parsed.images.length);
    if ('events' in answer) await sendEvents(res, answer.events);
    else send(res, 200, answer.json);
  }

  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const entry: StandinRequest = {
      method: req.method ?? 'GET',
      path: q < 0 ? url : url.slice(0, q),
      headers: req.headers,
      files: [],
    };
    if (logRequests) requests.push(entry);
    open++;
    res.setHeader('x-request-id', `req_standin_${++seq}`);
    res.on('close', () => {
      open--;
      if (res.writableFinished) entry.status = res.statusCode;
      else {
        aborted++;
        entry.aborted = true;
      }
    });
    handle(req, res, entry).catch((err: unknown) => {
      if (err instanceof HttpError) return send(res, err.status, JSON.stringify(err.body));
      send(res, 500, JSON.stringify(openaiError(`stand-in error: ${String(err)}`, { type: 'server_error' })));
    });
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  origin = `http://127.0.0.1:${port}`;

  function failNext(countOrFailure: number | StandinFailure, status?: number, body?: unknown, headers?: Record<string, string>) {
    if (typeof countOrFailure === 'number') queueFailure({ count: countOrFailure, status: status ?? 500, body, headers });
    else queueFailure(countOrFailure);
  }

  return {
    url: `${origin}/v1`,
    port,
    requests,
    aborted: () => aborted,
    failNext,
    setLatency(ms: number) {
      latencyMs = ms;
    },
    inFlight: () => open,
    png,
    partialPng,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      }),
  };
}
