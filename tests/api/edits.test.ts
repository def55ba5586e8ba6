/**
 * POST /v1/images/edits and /v1/images/variations: the official openai SDK unchanged against easel
 * (with the OpenAI stand-in as an edit-capable backend), capability routing, and every bad upload.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import sharp from 'sharp';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { startOpenAIStandin, DEFAULT_STANDIN_KEY } from '../support/openai-standin.ts';
import type { OpenAIStandin, StandinRequest } from '../support/openai-standin.ts';
import { makePng } from '../support/png.ts';

const MAX_FILE_BYTES = 300_000;
const MAX_IMAGES = 4;
const MAX_DIMENSION = 1024;

let standin: OpenAIStandin;
let easel: TestEasel;
let client: OpenAI;

before(async () => {
  standin = await startOpenAIStandin({ strict: false });
  const backend = (name: string, capabilities?: Record<string, unknown>) => ({
    type: 'openai',
    name,
    baseUrl: standin.url,
    apiKey: DEFAULT_STANDIN_KEY,
    extraBodyFields: true,
    ...(capabilities ? { capabilities } : {}),
  });
  easel = await startEasel({
    existingStandin: standin,
    overrides: {
      backends: [backend('standin'), backend('textonly', { edit: false, variation: false }), backend('nomask', { mask: false, maxInputImages: 2 })],
      models: [
        { name: 'test-model', backend: 'standin', model: 'gpt-image-1', default: true },
        { name: 'dall-e-2', backend: 'standin', model: 'dall-e-2' },
        { name: 'text-only', backend: 'textonly', model: 'gpt-image-1' },
        { name: 'no-mask', backend: 'nomask', model: 'gpt-image-1' },
      ],
      uploads: { maxFileBytes: MAX_FILE_BYTES, maxImages: MAX_IMAGES, maxDimension: MAX_DIMENSION },
    },
  });
  client = new OpenAI({ apiKey: easel.adminKey, baseURL: `${easel.url}/v1`, maxRetries: 0 });
});
after(async () => {
  await easel.close();
  await standin.close();
});

/** An RGBA PNG, fully transparent (alpha 0: "edit everything"), as OpenAI wants masks. */
async function makeMask(width: number, height: number): Promise<Buffer> {
  return sharp({ create: { width, height, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
}

const png = (b: Buffer, name = 'image.png') => new File([new Uint8Array(b)], name, { type: 'image/png' });

/** Posts a multipart form built from [name, value] pairs (strings or Buffers). */
async function postForm(path: string, parts: [string, string | Buffer][], headers: Record<string, string> = {}): Promise<Response> {
  const form = new FormData();
  for (const [name, value] of parts) form.append(name, typeof value === 'string' ? value : png(value));
  return easel.api(path, { method: 'POST', body: form, headers });
}

/** The standin requests made while `fn` ran. */
async function sentDuring<T>(fn: () => Promise<T>): Promise<{ result: T; sent: StandinRequest[] }> {
  const from = standin.requests.length;
  const result = await fn();
  return { result, sent: standin.requests.slice(from) };
}

async function expectError(res: Response, status: number, param: string | null, code: string, message?: RegExp) {
  const body = (await res.json()) as any;
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.error.param, param, JSON.stringify(body));
  assert.equal(body.error.code, code, JSON.stringify(body));
  assert.equal(body.error.type, 'invalid_request_error');
  if (message) assert.match(body.error.message, message);
  return body;
}

function inputDirs(): string[] {
  const dir = join(easel.dataDir, 'images', 'inputs');
  return existsSync(dir) ? readdirSync(dir) : [];
}

describe('the official openai SDK, unchanged', () => {
  test('images.edit with one image', async () => {
    const image = await makePng(64, 64, [200, 30, 30]);
    const { result: res, sent } = await sentDuring(() =>
      client.images.edit({ image: png(image, 'in.png'), prompt: 'make it blue', model: 'test-model', response_format: 'b64_json' }),
    );
    assert.equal(typeof res.created, 'number');
    assert.equal(res.data?.length, 1);
    assert.equal((await sharp(Buffer.from(res.data![0]!.b64_json!, 'base64')).metadata()).format, 'png');

    const call = sent.find((r) => r.path === '/v1/images/edits')!;
    assert.ok(call, 'the backend got an edit');
    assert.equal(call.body?.prompt, 'make it blue');
    assert.equal(call.body?.model, 'gpt-image-1');
    assert.deepEqual(
      call.files.map((f) => [f.field, f.type, f.size]),
      [['image', 'image/png', image.length]],
    );
  });

  test('images.edit with several images (sent as image[]) keeps their order and bytes', async () => {
    const images = await Promise.all([makePng(64, 64, [255, 0, 0]), makePng(80, 48, [0, 255, 0]), makePng(32, 32, [0, 0, 255])]);
    const sizes = images.map((b) => b.length);
    assert.equal(new Set(sizes).size, 3, 'distinct sizes make the order checkable');
    const { result: res, sent } = await sentDuring(() =>
      client.images.edit({ image: images.map((b, i) => png(b, `in-${i}.png`)), prompt: 'combine them', model: 'test-model' }),
    );
    assert.equal(res.data?.length, 1);
    const url = res.data![0]!.url!;
    assert.match(url, new RegExp(`^${easel.url}/files/`));
    assert.equal((await fetch(url)).status, 200);

    const call = sent.find((r) => r.path === '/v1/images/edits')!;
    assert.deepEqual(call.files.map((f) => f.field), ['image[]', 'image[]', 'image[]']);
    assert.deepEqual(call.files.map((f) => f.size), sizes);
  });

  test('images.edit with a mask', async () => {
    const image = await makePng(64, 64);
    const mask = await makeMask(64, 64);
    const { result: res, sent } = await sentDuring(() =>
      client.images.edit({ image: png(image), mask: png(mask, 'mask.png'), prompt: 'fill the hole', model: 'test-model', n: 2, input_fidelity: 'high' }),
    );
    assert.equal(res.data?.length, 2);
    const call = sent.find((r) => r.path === '/v1/images/edits')!;
    const maskPart = call.files.find((f) => f.field === 'mask');
    assert.ok(maskPart, 'the mask reached the backend');
    assert.equal(maskPart.type, 'image/png');
    assert.equal(maskPart.size, mask.length);
    assert.equal(call.body?.input_fidelity, 'high');
    assert.equal(call.body?.n, 2);
  });

  test('images.edit with a JPEG and a WebP input', async () => {
    const jpeg = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 9, g: 9, b: 9 } } }).jpeg().toBuffer();
    const webp = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 9, g: 9, b: 9 } } }).webp().toBuffer();
    const { sent } = await sentDuring(() =>
      client.images.edit({
        image: [new File([new Uint8Array(jpeg)], 'a.jpg', { type: 'image/jpeg' }), new File([new Uint8Array(webp)], 'b.webp', { type: 'image/webp' })],
        prompt: 'mix',
      }),
    );
    const call = sent.find((r) => r.path === '/v1/images/edits')!;
    assert.deepEqual(call.files.map((f) => f.type), ['image/jpeg', 'image/webp']);
  });

  test('images.createVariation', async () => {
    const image = await makePng(64, 64, [10, 120, 240]);
    const file = await toFile(image, 'v.png', { type: 'image/png' });
    const { result: res, sent } = await sentDuring(() => client.images.createVariation({ image: file, model: 'dall-e-2', n: 2, size: '256x256' }));
    assert.equal(res.data?.length, 2);
    for (const item of res.data!) {
      const img = await fetch(item.url!);
      assert.equal(img.status, 200);
      assert.equal((await sharp(Buffer.from(await img.arrayBuffer())).metadata()).format, 'png');
    }
    const call = sent.find((r) => r.path === '/v1/images/variations')!;
    assert.ok(call, 'the backend got a variation');
    assert.equal(call.body?.prompt, undefined);
    assert.equal(call.body?.model, 'dall-e-2');
    assert.deepEqual(call.files.map((f) => [f.field, f.size]), [['image', image.length]]);
  });

  test('images.createVariation with b64_json and the default model', async () => {
    const res = await client.images.createVariation({ image: png(await makePng(48, 48)), response_format: 'b64_json' });
    assert.ok(res.data![0]!.b64_json!.length > 100);
  });
});

describe('async edits and stored uploads', () => {
  test('Prefer: respond-async answers 202; the uploads are stored under the job id before it runs', async () => {
    const image = await makePng(64, 64, [1, 2, 3]);
    const mask = await makeMask(64, 64);
    const res = await postForm('/v1/images/edits', [['image', image], ['mask', mask], ['prompt', 'later'], ['metadata[run]', '7']], { prefer: 'respond-async' });
    assert.equal(res.status, 202);
    const job = (await res.json()) as any;
    assert.equal(job.kind, 'edit');
    assert.deepEqual(job.metadata, { run: '7' });
    assert.equal(res.headers.get('location'), `${easel.url}/v1/images/jobs/${job.id}`);

    const storedImage = await easel.runtime.storage.get(`inputs/${job.id}/0.png`);
    assert.ok(storedImage && storedImage.data.equals(image));
    assert.equal(storedImage.contentType, 'image/png');
    const storedMask = await easel.runtime.storage.get(`inputs/${job.id}/mask.png`);
    assert.ok(storedMask && storedMask.data.equals(mask));
    const row = await easel.runtime.store.getJob(job.id);
    assert.deepEqual(row?.request.inputImages, [`inputs/${job.id}/0.png`]);
    assert.equal(row?.request.mask, `inputs/${job.id}/mask.png`);

    const done = await waitForJob(easel, job.id);
    assert.equal(done.status, 'succeeded');
    assert.equal(done.result.data.length, 1);
  });

  test('"async=true" as a form field, metadata as JSON text, on a variation', async () => {
    const res = await postForm('/v1/images/variations', [['image', await makePng(32, 32)], ['async', 'true'], ['metadata', '{"tag":"v"}'], ['n', '1']]);
    assert.equal(res.status, 202);
    const job = (await res.json()) as any;
    assert.equal(job.kind, 'variation');
    assert.deepEqual(job.metadata, { tag: 'v' });
    assert.equal(job.request.prompt, '');
    const done = await waitForJob(easel, job.id);
    assert.equal(done.status, 'succeeded');
  });

  test('uploads stored for a job that could not be created are removed again', async () => {
    const store = easel.runtime.store;
    const original = store.createJob;
    let jobId = '';
    store.createJob = async (job) => {
      jobId = job.id;
      assert.ok(await easel.runtime.storage.get(`inputs/${job.id}/0.png`), 'stored before the job is created');
      throw new Error('database is down');
    };
    try {
      const res = await postForm('/v1/images/edits', [['image', await makePng(32, 32)], ['prompt', 'x']]);
      assert.equal(res.status, 500);
    } finally {
      store.createJob = original;
    }
    assert.match(jobId, /^job_/);
    assert.equal(await easel.runtime.storage.get(`inputs/${jobId}/0.png`), undefined);
  });

  test('a sync edit answers in OpenAI shape with the job id header', async () => {
    const res = await postForm('/v1/images/edits', [['image', await makePng(32, 32)], ['prompt', 'sync'], ['response_format', 'b64_json'], ['output_format', 'webp']]);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('x-easel-job-id') ?? '', /^job_/);
    const body = (await res.json()) as any;
    assert.equal(body.output_format, 'webp');
    assert.equal((await sharp(Buffer.from(body.data[0].b64_json, 'base64')).metadata()).format, 'webp');
  });
});

describe('routing by capability', () => {
  test('a model whose backend cannot edit answers 400 naming it, before anything runs', async () => {
    const before = inputDirs().length;
    const { result: res, sent } = await sentDuring(() => postForm('/v1/images/edits', [['image', Buffer.from('not even looked at')], ['prompt', 'x'], ['model', 'text-only']]));
    await expectError(res, 400, 'model', 'unsupported_capability', /Model 'text-only' cannot do edits/);
    assert.equal(sent.length, 0);
    assert.equal(inputDirs().length, before, 'nothing stored');
  });

  test('the SDK sees a BadRequestError', async () => {
    await assert.rejects(
      client.images.edit({ image: png(await makePng(32, 32)), prompt: 'x', model: 'text-only' }),
      (err: any) => err instanceof OpenAI.BadRequestError && err.param === 'model' && err.code === 'unsupported_capability',
    );
  });

  test('variations on a backend without them', async () => {
    const res = await postForm('/v1/images/variations', [['image', await makePng(32, 32)], ['model', 'text-only']]);
    await expectError(res, 400, 'model', 'unsupported_capability', /Model 'text-only' cannot do variations/);
  });

  test('a mask on a backend without masks', async () => {
    const res = await postForm('/v1/images/edits', [['image', await makePng(32, 32)], ['mask', await makeMask(32, 32)], ['prompt', 'x'], ['model', 'no-mask']]);
    await expectError(res, 400, 'model', 'unsupported_capability', /Model 'no-mask' cannot do edits with a mask/);
  });

  test('more input images than the backend takes', async () => {
    const img = await makePng(32, 32);
    const res = await postForm('/v1/images/edits', [['image[]', img], ['image[]', img], ['image[]', img], ['prompt', 'x'], ['model', 'no-mask']]);
    await expectError(res, 400, 'model', 'unsupported_capability', /3 input images \(at most 2\)/);
    const ok = await postForm('/v1/images/edits', [['image[]', img], ['image[]', img], ['prompt', 'x'], ['model', 'no-mask']]);
    assert.equal(ok.status, 200);
  });

  test('an unknown model is a 404 as on generations', async () => {
    const res = await postForm('/v1/images/edits', [['image', await makePng(32, 32)], ['prompt', 'x'], ['model', 'nope']]);
    assert.equal(res.status, 404);
    assert.equal(((await res.json()) as any).error.param, 'model');
  });
});

describe('bad uploads: a 400 naming the field, and no job', () => {
  let key: string;
  let storedBefore: number;
  before(async () => {
    const { createApiKey } = await import('../../src/auth/api-keys.ts');
    key = (await createApiKey(easel.runtime.keys, { name: 'bad-uploads' })).secret;
    storedBefore = inputDirs().length;
  });
  after(async () => {
    const list = (await (await easel.api('/v1/images/jobs?limit=100', { key })).json()) as any;
    assert.deepEqual(list.data, [], 'no bad upload created a job');
    assert.equal(inputDirs().length, storedBefore, 'no bad upload stored anything');
  });

  const edit = (parts: [string, string | Buffer][]) => {
    const form = new FormData();
    for (const [name, value] of parts) form.append(name, typeof value === 'string' ? value : png(value));
    return easel.api('/v1/images/edits', { method: 'POST', body: form, key });
  };
  const withFile = (field: string, data: Buffer, type: string, extra: [string, string | Buffer][] = [['prompt', 'x']]) => {
    const form = new FormData();
    form.append(field, new File([new Uint8Array(data)], 'f', { type }));
    for (const [name, value] of extra) form.append(name, typeof value === 'string' ? value : png(value));
    return easel.api('/v1/images/edits', { method: 'POST', body: form, key });
  };

  test('no image', async () => {
    await expectError(await edit([['prompt', 'x']]), 400, 'image', 'missing_required_parameter');
  });

  test('no prompt on an edit', async () => {
    await expectError(await edit([['image', await makePng(32, 32)]]), 400, 'prompt', 'missing_required_parameter');
  });

  test('a file over the size limit', async () => {
    const big = Buffer.alloc(MAX_FILE_BYTES + 1000, 7);
    await expectError(await edit([['image', big], ['prompt', 'x']]), 400, 'image', 'file_too_large', new RegExp(`${MAX_FILE_BYTES} bytes`));
    // Far over: the whole body is still read, so the client gets the 400 rather than a reset.
    const huge = Buffer.alloc(20 * MAX_FILE_BYTES, 7);
    await expectError(await edit([['image[]', await makePng(32, 32)], ['image[]', huge], ['prompt', 'x']]), 400, 'image[1]', 'file_too_large');
  });

  test('a mask over the size limit', async () => {
    const big = Buffer.alloc(MAX_FILE_BYTES + 1, 7);
    await expectError(await edit([['image', await makePng(32, 32)], ['mask', big], ['prompt', 'x']]), 400, 'mask', 'file_too_large');
  });

  test('more images than the server takes', async () => {
    const img = await makePng(32, 32);
    const parts: [string, Buffer][] = Array.from({ length: MAX_IMAGES + 1 }, () => ['image[]', img]);
    await expectError(await edit([...parts, ['prompt', 'x']]), 400, 'image', 'too_many_images');
    // Far more than the parser's own limit: still our 400, not a reset or a 413.
    const many: [string, Buffer][] = Array.from({ length: MAX_IMAGES + 6 }, () => ['image[]', img]);
    await expectError(await edit([...many, ['prompt', 'x']]), 400, 'image', 'too_many_images');
  });

  test('bytes that are not an image', async () => {
    await expectError(await edit([['image', Buffer.from('hello, this is text')], ['prompt', 'x']]), 400, 'image', 'invalid_image');
  });

  test('an empty file', async () => {
    await expectError(await edit([['image', Buffer.alloc(0)], ['prompt', 'x']]), 400, 'image', 'invalid_image');
  });

  test('a format other than PNG, JPEG or WebP', async () => {
    const gif = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 1, g: 2, b: 3 } } }).gif().toBuffer();
    await expectError(await withFile('image', gif, 'image/gif'), 400, 'image', 'invalid_image', /GIF/);
  });

  test('a truncated PNG whose header still reads', async () => {
    const noisy = await sharp(Buffer.from(Array.from({ length: 128 * 128 * 3 }, (_, i) => (i * 7919) % 251)), { raw: { width: 128, height: 128, channels: 3 } }).png().toBuffer();
    const cut = noisy.subarray(0, Math.floor(noisy.length / 2));
    await expectError(await edit([['image', cut], ['prompt', 'x']]), 400, 'image', 'invalid_image', /decoded/);
  });

  test('the second of several images is bad: image[1]', async () => {
    await expectError(await edit([['image[]', await makePng(32, 32)], ['image[]', Buffer.from('junk')], ['prompt', 'x']]), 400, 'image[1]', 'invalid_image');
  });

  test('an image too small', async () => {
    await expectError(await edit([['image', await makePng(8, 64)], ['prompt', 'x']]), 400, 'image', 'invalid_image_dimensions', /8x64/);
  });

  test('an image too large', async () => {
    await expectError(await edit([['image', await makePng(MAX_DIMENSION + 1, 16)], ['prompt', 'x']]), 400, 'image', 'invalid_image_dimensions');
  });

  test('a mask that is not a PNG', async () => {
    const jpeg = await sharp({ create: { width: 32, height: 32, channels: 3, background: { r: 0, g: 0, b: 0 } } }).jpeg().toBuffer();
    await expectError(await withFile('mask', jpeg, 'image/jpeg', [['image', await makePng(32, 32)], ['prompt', 'x']]), 400, 'mask', 'invalid_image', /PNG/);
  });

  test('a mask without an alpha channel', async () => {
    await expectError(await edit([['image', await makePng(32, 32)], ['mask', await makePng(32, 32)], ['prompt', 'x']]), 400, 'mask', 'invalid_image', /alpha/);
  });

  test('a mask of another size than the first image', async () => {
    // The mask may come first in the form (the SDK sends it before image[] parts).
    await expectError(
      await edit([['mask', await makeMask(32, 32)], ['image[]', await makePng(48, 48)], ['image[]', await makePng(32, 32)], ['prompt', 'x']]),
      400,
      'mask',
      'invalid_image_dimensions',
      /32x32 but 'image\[0\]' is 48x48/,
    );
  });

  test('an unreadable mask', async () => {
    await expectError(await edit([['image', await makePng(32, 32)], ['mask', Buffer.from('nope')], ['prompt', 'x']]), 400, 'mask', 'invalid_image');
  });

  test('two masks', async () => {
    const m = await makeMask(32, 32);
    await expectError(await edit([['image', await makePng(32, 32)], ['mask', m], ['mask', m], ['prompt', 'x']]), 400, 'mask', 'invalid_value');
  });

  test('an image sent as a text field', async () => {
    await expectError(await edit([['image', 'data:image/png;base64,AAAA'], ['prompt', 'x']]), 400, 'image', 'invalid_image', /as a file/);
  });

  test('an unknown file field', async () => {
    await expectError(await edit([['image', await makePng(32, 32)], ['picture', await makePng(32, 32)], ['prompt', 'x']]), 400, 'picture', 'unknown_parameter');
  });

  test('text fields: unknown, malformed number, out of range, bad JSON, repeated, invalid enum', async () => {
    const img = await makePng(32, 32);
    await expectError(await edit([['image', img], ['prompt', 'x'], ['style', 'vivid']]), 400, 'style', 'unknown_parameter');
    await expectError(await edit([['image', img], ['prompt', 'x'], ['n', 'two']]), 400, 'n', 'invalid_value');
    await expectError(await edit([['image', img], ['prompt', 'x'], ['n', '99']]), 400, 'n', 'invalid_value');
    await expectError(await edit([['image', img], ['prompt', 'x'], ['metadata', '{oops']]), 400, 'metadata', 'invalid_value');
    await expectError(await edit([['image', img], ['prompt', 'x'], ['prompt', 'y']]), 400, 'prompt', 'invalid_value');
    await expectError(await edit([['image', img], ['prompt', 'x'], ['size', 'huge']]), 400, 'size', 'invalid_value');
    await expectError(await edit([['image', img], ['prompt', 'x'], ['input_fidelity', 'max']]), 400, 'input_fidelity', 'invalid_value');
    await expectError(await edit([['image', img], ['prompt', 'x'], ['async', 'maybe']]), 400, 'async', 'invalid_value');
  });

  test('variations: exactly one image, no mask, no prompt', async () => {
    const img = await makePng(32, 32);
    const variation = (parts: [string, string | Buffer][]) => {
      const form = new FormData();
      for (const [name, value] of parts) form.append(name, typeof value === 'string' ? value : png(value));
      return easel.api('/v1/images/variations', { method: 'POST', body: form, key });
    };
    await expectError(await variation([]), 400, 'image', 'missing_required_parameter');
    await expectError(await variation([['image[]', img], ['image[]', img]]), 400, 'image', 'invalid_value', /exactly one/);
    await expectError(await variation([['image', img], ['mask', await makeMask(32, 32)]]), 400, 'mask', 'unknown_parameter');
    await expectError(await variation([['image', img], ['prompt', 'x']]), 400, 'prompt', 'unknown_parameter');
    await expectError(await variation([['image', Buffer.from('junk')]]), 400, 'image', 'invalid_image');
  });

  test('the SDK gets a BadRequestError naming the field', async () => {
    const bad = new OpenAI({ apiKey: key, baseURL: `${easel.url}/v1`, maxRetries: 0 });
    await assert.rejects(
      bad.images.edit({ image: png(await makePng(32, 32)), mask: png(await makePng(32, 32)), prompt: 'x' }),
      (err: any) => err instanceof OpenAI.BadRequestError && err.param === 'mask' && err.code === 'invalid_image',
    );
  });
});

describe('content types', () => {
  test('JSON to /v1/images/edits is a 415', async () => {
    const res = await easel.api('/v1/images/edits', { method: 'POST', json: { prompt: 'x' } });
    assert.equal(res.status, 415);
    const body = (await res.json()) as any;
    assert.equal(body.error.code, 'unsupported_media_type');
    assert.match(body.error.message, /multipart\/form-data/);
  });

  test('text/plain to /v1/images/variations is a 415', async () => {
    const res = await easel.api('/v1/images/variations', { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } });
    assert.equal(res.status, 415);
  });

  test('multipart to /v1/images/generations is still a 415', async () => {
    const form = new FormData();
    form.append('prompt', 'x');
    const res = await easel.api('/v1/images/generations', { method: 'POST', body: form });
    assert.equal(res.status, 415);
    assert.equal(((await res.json()) as any).error.code, 'unsupported_media_type');
  });

  test('a malformed multipart body is a 400', async () => {
    const res = await easel.api('/v1/images/edits', {
      method: 'POST',
      body: '--XYZ\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nunterminated',
      headers: { 'content-type': 'multipart/form-data; boundary=XYZ' },
    });
    assert.equal(res.status, 400);
  });

  test('edits need an API key', async () => {
    const res = await fetch(`${easel.url}/v1/images/edits`, { method: 'POST', body: new FormData() });
    assert.equal(res.status, 401);
  });
});
