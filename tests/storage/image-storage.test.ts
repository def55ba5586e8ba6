/**
 * One behaviour suite for every ImageStorage: LocalStorage in a temp folder (URLs served by a tiny
 * stand-in for the API's /files/* route) and S3Storage against an in-process s3rver.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { ImageStorage } from '../../src/storage/image-storage.ts';
import {
  LocalStorage,
  signFileKey,
  verifyFileSignature,
  contentTypeForKey,
  freeDiskBytes,
} from '../../src/storage/local-storage.ts';
import { S3Storage } from '../../src/storage/s3-storage.ts';
import { makePng } from '../support/png.ts';
import { startS3 } from '../support/s3.ts';
import type { TestS3 } from '../support/s3.ts';

const SECRET = 'test-signing-secret';

interface Harness {
  storage: ImageStorage;
  /** Every stored key under `prefix` (in storage-key terms), to check overwrites don't duplicate. */
  list(prefix: string): Promise<string[]>;
  /** A URL for `key` that expired a while ago but is otherwise correctly signed. */
  expiredUrl(key: string): Promise<string>;
  /** The same store pointed at a location that does not exist / cannot be written. */
  broken(): ImageStorage;
  close(): Promise<void>;
}

/** Stand-in for the API's /files/* route: verify the signature, then serve from storage. */
async function startFileServer(getStorage: () => LocalStorage): Promise<{ baseUrl: string; server: Server }> {
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      if (!url.pathname.startsWith('/files/')) {
        res.writeHead(404).end();
        return;
      }
      let key: string;
      try {
        key = url.pathname.slice('/files/'.length).split('/').map(decodeURIComponent).join('/');
      } catch {
        res.writeHead(400).end();
        return;
      }
      const ok = verifyFileSignature(SECRET, key, url.searchParams.get('expires'), url.searchParams.get('signature'));
      if (!ok) {
        res.writeHead(403).end('forbidden');
        return;
      }
      const obj = await getStorage().get(key).catch(() => undefined);
      if (!obj) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': obj.contentType, 'content-length': obj.data.byteLength }).end(obj.data);
    })().catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { baseUrl: `http://127.0.0.1:${port}`, server };
}

async function walk(root: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  let entries;
  try {
    entries = await readdir(path.join(root, rel), { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...(await walk(root, r)));
    else out.push(r);
  }
  return out.sort();
}

async function localHarness(): Promise<Harness> {
  const dir = await mkdtemp(path.join(tmpdir(), 'easel-local-storage-'));
  await writeFile(path.join(dir, 'not-a-dir.txt'), 'x');
  let storage!: LocalStorage;
  const { baseUrl, server } = await startFileServer(() => storage);
  // Trailing slash on purpose: URLs must not come out as //files/.
  storage = new LocalStorage({ dir, publicBaseUrl: `${baseUrl}/`, signingSecret: SECRET });
  return {
    storage,
    list: (prefix) => walk(dir).then((all) => all.filter((k) => k.startsWith(prefix))),
    async expiredUrl(key) {
      const expires = Math.floor(Date.now() / 1000) - 60;
      return `${baseUrl}/files/${key}?expires=${expires}&signature=${signFileKey(SECRET, key, expires)}`;
    },
    broken: () => {
      // A folder "inside" a regular file can never be created, whoever runs the tests (even root).
      return new LocalStorage({ dir: path.join(dir, 'not-a-dir.txt', 'sub'), publicBaseUrl: baseUrl, signingSecret: SECRET });
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function s3Harness(s3: TestS3, prefix?: string): Promise<Harness> {
  const storage = new S3Storage({ ...s3.options, prefix });
  const objectPrefix = prefix ? `${prefix.replace(/\/+$/, '')}/` : '';
  return {
    storage,
    async list(p) {
      const res = await storage.client.send(
        new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: objectPrefix + p }),
      );
      return (res.Contents ?? []).map((o) => (o.Key ?? '').slice(objectPrefix.length)).sort();
    },
    async expiredUrl(key) {
      return getSignedUrl(storage.client, new GetObjectCommand({ Bucket: s3.bucket, Key: objectPrefix + key }), {
        expiresIn: 60,
        signingDate: new Date(Date.now() - 3600_000),
      });
    },
    broken: () => new S3Storage({ ...s3.options, bucket: 'no-such-bucket-here' }),
    async close() {
      await storage.close();
    },
  };
}

function storageSuite(
  name: string,
  make: () => Promise<Harness>,
  expectedKind: 'local' | 's3',
  caps: { verifiesSignatures: boolean },
): void {
  const noSigCheck = caps.verifiesSignatures ? false : 's3rver only checks SigV4 expiry, not the signature itself';
  describe(name, () => {
    let h: Harness;
    let png: Buffer;
    let png2: Buffer;

    before(async () => {
      h = await make();
      png = await makePng(8, 6, [255, 0, 0]);
      png2 = await makePng(4, 4, [0, 0, 255]);
    });
    after(async () => {
      await h?.close();
    });

    it('reports its kind', () => {
      assert.equal(h.storage.kind, expectedKind);
    });

    it('round-trips bytes and content type', async () => {
      await h.storage.put('images/job_rt/0.png', png, 'image/png');
      const got = await h.storage.get('images/job_rt/0.png');
      assert.ok(got);
      assert.ok(Buffer.isBuffer(got.data));
      assert.deepEqual(got.data, png);
      assert.equal(got.contentType, 'image/png');
    });

    it('accepts a plain Uint8Array and keeps jpeg/webp content types', async () => {
      const bytes = new Uint8Array([1, 2, 3, 4, 5]);
      await h.storage.put('images/job_ct/0.jpeg', bytes, 'image/jpeg');
      await h.storage.put('images/job_ct/1.webp', bytes, 'image/webp');
      assert.equal((await h.storage.get('images/job_ct/0.jpeg'))?.contentType, 'image/jpeg');
      const webp = await h.storage.get('images/job_ct/1.webp');
      assert.equal(webp?.contentType, 'image/webp');
      assert.deepEqual(new Uint8Array(webp!.data), bytes);
    });

    it('returns undefined for a missing key', async () => {
      assert.equal(await h.storage.get('images/job_missing/0.png'), undefined);
      assert.equal(await h.storage.get('never/was/here.png'), undefined);
    });

    it('overwrites the same key instead of duplicating it', async () => {
      await h.storage.put('images/job_ow/0.png', png, 'image/png');
      await h.storage.put('images/job_ow/0.png', png2, 'image/png');
      const got = await h.storage.get('images/job_ow/0.png');
      assert.deepEqual(got?.data, png2);
      assert.deepEqual(await h.list('images/job_ow/'), ['images/job_ow/0.png']);
    });

    it('deletes, and deleting a missing key is not an error', async () => {
      await h.storage.put('images/job_del/0.png', png, 'image/png');
      await h.storage.delete('images/job_del/0.png');
      assert.equal(await h.storage.get('images/job_del/0.png'), undefined);
      await h.storage.delete('images/job_del/0.png');
      await h.storage.delete('images/job_never/0.png');
    });

    it('hands out an absolute URL that plain fetch can download', async () => {
      await h.storage.put('images/job_url/0.png', png, 'image/png');
      const url = await h.storage.url('images/job_url/0.png', 300);
      const parsed = new URL(url);
      assert.match(parsed.protocol, /^https?:$/);
      assert.ok(!parsed.pathname.includes('//'), `no doubled slash in ${url}`);
      const res = await fetch(url);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'image/png');
      assert.deepEqual(Buffer.from(await res.arrayBuffer()), png);
    });

    it('refuses a forged signature', { skip: noSigCheck }, async () => {
      await h.storage.put('images/job_forge/0.png', png, 'image/png');
      const url = new URL(await h.storage.url('images/job_forge/0.png', 300));
      const sigParam = url.searchParams.has('signature') ? 'signature' : 'X-Amz-Signature';
      const sig = url.searchParams.get(sigParam)!;
      url.searchParams.set(sigParam, (sig[0] === 'A' ? 'B' : 'A') + sig.slice(1));
      const res = await fetch(url);
      await res.arrayBuffer();
      assert.equal(res.status, 403);
    });

    it('refuses a URL signed for another key', { skip: noSigCheck }, async () => {
      await h.storage.put('images/job_other/0.png', png, 'image/png');
      await h.storage.put('images/job_other/1.png', png2, 'image/png');
      const url = new URL(await h.storage.url('images/job_other/0.png', 300));
      url.pathname = url.pathname.replace(/0\.png$/, '1.png');
      const res = await fetch(url);
      await res.arrayBuffer();
      assert.equal(res.status, 403);
    });

    it('refuses an expired URL', async () => {
      await h.storage.put('images/job_exp/0.png', png, 'image/png');
      const res = await fetch(await h.expiredUrl('images/job_exp/0.png'));
      await res.arrayBuffer();
      assert.equal(res.status, 403);
    });

    it('rejects unsafe keys', async () => {
      for (const key of ['../x', '/abs', 'images/../x', 'a//b', 'a\\b', 'a\0b', '', 'images/', './x', 'a/./b']) {
        await assert.rejects(h.storage.put(key, png, 'image/png'), /Invalid storage key/, `put ${JSON.stringify(key)}`);
        await assert.rejects(h.storage.get(key), /Invalid storage key/, `get ${JSON.stringify(key)}`);
        await assert.rejects(h.storage.url(key, 60), /Invalid storage key/, `url ${JSON.stringify(key)}`);
        await assert.rejects(h.storage.delete(key), /Invalid storage key/, `delete ${JSON.stringify(key)}`);
      }
    });

    it('rejects a non-positive URL lifetime', async () => {
      await assert.rejects(h.storage.url('images/job_url/0.png', 0), RangeError);
      await assert.rejects(h.storage.url('images/job_url/0.png', Number.NaN), RangeError);
    });

    it('pings a healthy store', async () => {
      await h.storage.ping();
    });

    it('ping fails for a missing or unusable location', async () => {
      const broken = h.broken();
      try {
        await assert.rejects(broken.ping());
      } finally {
        await broken.close?.();
      }
    });
  });
}

storageSuite('LocalStorage', localHarness, 'local', { verifiesSignatures: true });

describe('S3Storage (s3rver)', () => {
  let s3: TestS3;
  before(async () => {
    s3 = await startS3();
  });
  after(async () => {
    await s3?.stop();
  });

  // Real S3/MinIO verify SigV4 signatures; the embedded fake does not, so those two cases skip here.
  storageSuite('S3Storage', () => s3Harness(s3), 's3', { verifiesSignatures: false });
  storageSuite('S3Storage with prefix', () => s3Harness(s3, 'tenant-a/'), 's3', { verifiesSignatures: false });

  it('stores objects under the prefix with Cache-Control', async () => {
    const storage = new S3Storage({ ...s3.options, prefix: '/easel/' });
    try {
      await storage.put('images/job_pfx/0.png', await makePng(2, 2), 'image/png');
      const head = await storage.client.send(new GetObjectCommand({ Bucket: s3.bucket, Key: 'easel/images/job_pfx/0.png' }));
      assert.equal(head.CacheControl, 'public, max-age=31536000, immutable');
      assert.equal(head.ContentType, 'image/png');
      await head.Body?.transformToByteArray();
    } finally {
      await storage.close();
    }
  });

  it('ensureBucket creates a missing bucket once', async () => {
    const storage = new S3Storage({ ...s3.options, bucket: 'created-by-ensure' });
    try {
      await assert.rejects(storage.ping(), /created-by-ensure/);
      assert.equal(await storage.ensureBucket(), true);
      await storage.ping();
      assert.equal(await storage.ensureBucket(), false);
      await storage.put('x/0.png', await makePng(2, 2), 'image/png');
      assert.equal((await storage.get('x/0.png'))?.contentType, 'image/png');
    } finally {
      await storage.close();
    }
  });

  it('get on a missing bucket throws rather than pretending the image is gone', async () => {
    const storage = new S3Storage({ ...s3.options, bucket: 'no-such-bucket-either' });
    try {
      await assert.rejects(storage.get('images/job/0.png'));
    } finally {
      await storage.close();
    }
  });

  it('signs URLs for publicEndpoint when given', async () => {
    const storage = new S3Storage({ ...s3.options, publicEndpoint: 'https://cdn.example.com' });
    try {
      const url = new URL(await storage.url('images/job_pub/0.png', 60));
      assert.equal(url.origin, 'https://cdn.example.com');
      assert.equal(url.pathname, `/${s3.bucket}/images/job_pub/0.png`);
      assert.ok(url.searchParams.get('X-Amz-Signature'));
    } finally {
      await storage.close();
    }
  });

  it('refuses presigned lifetimes beyond seven days', async () => {
    const storage = new S3Storage(s3.options);
    try {
      await assert.rejects(storage.url('images/job/0.png', 8 * 24 * 3600), RangeError);
    } finally {
      await storage.close();
    }
  });
});

describe('LocalStorage specifics', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'easel-local-extra-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('builds /files/ URLs with expiry and signature, without doubling slashes', async () => {
    const storage = new LocalStorage({ dir, publicBaseUrl: 'https://img.example.com/base//', signingSecret: SECRET });
    const before = Math.floor(Date.now() / 1000);
    const url = new URL(await storage.url('images/job_X/0.png', 600));
    assert.equal(url.origin + url.pathname, 'https://img.example.com/base/files/images/job_X/0.png');
    const expires = Number(url.searchParams.get('expires'));
    assert.ok(expires >= before + 600 && expires <= before + 602, `expires ${expires}`);
    const signature = url.searchParams.get('signature')!;
    assert.match(signature, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(verifyFileSignature(SECRET, 'images/job_X/0.png', url.searchParams.get('expires'), signature), true);
    assert.equal(storage.verify('images/job_X/0.png', expires, signature), true);
  });

  it('verifyFileSignature rejects expiry, tampering, other secrets and junk', () => {
    const key = 'images/job_v/0.png';
    const exp = 2_000_000_000;
    const sig = signFileKey(SECRET, key, exp);
    assert.equal(verifyFileSignature(SECRET, key, exp, sig, exp), true);
    assert.equal(verifyFileSignature(SECRET, key, String(exp), sig, exp - 100), true);
    assert.equal(verifyFileSignature(Buffer.from(SECRET), key, exp, sig, exp), true);
    assert.equal(verifyFileSignature(SECRET, key, exp, sig, exp + 1), false, 'expired');
    assert.equal(verifyFileSignature(SECRET, key, exp + 1, sig, exp), false, 'expiry changed');
    assert.equal(verifyFileSignature(SECRET, 'images/job_v/1.png', exp, sig, exp), false, 'other key');
    assert.equal(verifyFileSignature('other-secret', key, exp, sig, exp), false, 'other secret');
    assert.equal(verifyFileSignature(SECRET, key, exp, sig.slice(0, -1), exp), false, 'truncated');
    assert.equal(verifyFileSignature(SECRET, key, exp, sig + '=', exp), false, 'padded');
    assert.equal(verifyFileSignature(SECRET, key, exp, '', exp), false);
    assert.equal(verifyFileSignature(SECRET, key, exp, null, exp), false);
    assert.equal(verifyFileSignature(SECRET, key, null, sig, exp), false);
    assert.equal(verifyFileSignature(SECRET, key, `${exp}.0`, sig, exp), false);
    assert.equal(verifyFileSignature(SECRET, key, ` ${exp}`, sig, exp), false);
    assert.equal(verifyFileSignature(SECRET, key, '-1', sig, 0), false);
  });

  it('writes atomically: no temp files left behind, even when the rename fails', async () => {
    const storage = new LocalStorage({ dir, publicBaseUrl: 'http://localhost:1', signingSecret: SECRET });
    await storage.put('images/job_a/0.png', await makePng(3, 3), 'image/png');
    await storage.put('images/job_a/0.png', await makePng(5, 5), 'image/png');
    // A directory where the file should go makes the final rename fail.
    await mkdir(path.join(dir, 'images/job_a/1.png'), { recursive: true });
    await assert.rejects(storage.put('images/job_a/1.png', await makePng(3, 3), 'image/png'));
    const files = await readdir(path.join(dir, 'images/job_a'));
    assert.deepEqual(files.sort(), ['0.png', '1.png']);
    assert.equal(await storage.get('images/job_a/1.png'), undefined, 'a directory is not an object');
  });

  it('derives content type from the extension', async () => {
    assert.equal(contentTypeForKey('a/b.PNG'), 'image/png');
    assert.equal(contentTypeForKey('a/b.jpg'), 'image/jpeg');
    assert.equal(contentTypeForKey('a/b.jpeg'), 'image/jpeg');
    assert.equal(contentTypeForKey('a/b.webp'), 'image/webp');
    assert.equal(contentTypeForKey('a/b.bin'), 'application/octet-stream');
    assert.equal(contentTypeForKey('a/noext'), 'application/octet-stream');
    const storage = new LocalStorage({ dir, publicBaseUrl: 'http://localhost:1', signingSecret: SECRET });
    await storage.put('misc/blob', new Uint8Array([9]), 'image/png');
    assert.equal((await storage.get('misc/blob'))?.contentType, 'application/octet-stream');
  });

  it('ping creates a missing folder and fails under a regular file', async () => {
    const fresh = new LocalStorage({ dir: path.join(dir, 'fresh', 'nested'), publicBaseUrl: 'http://x', signingSecret: SECRET });
    await fresh.ping();
    await writeFile(path.join(dir, 'plain-file'), 'x');
    const bad = new LocalStorage({ dir: path.join(dir, 'plain-file', 'sub'), publicBaseUrl: 'http://x', signingSecret: SECRET });
    await assert.rejects(bad.ping());
    assert.deepEqual(await readdir(path.join(dir, 'fresh', 'nested')), [], 'ping leaves no probe file');
  });

  it('reports free disk space', async () => {
    const storage = new LocalStorage({ dir, publicBaseUrl: 'http://x', signingSecret: SECRET });
    const free = await storage.freeDiskBytes();
    assert.ok(Number.isSafeInteger(free) && free > 0, `free=${free}`);
    assert.equal(typeof (await freeDiskBytes(dir)), 'number');
  });

  it('validates its options', () => {
    assert.throws(() => new LocalStorage({ dir, publicBaseUrl: 'not a url', signingSecret: SECRET }), /publicBaseUrl/);
    assert.throws(() => new LocalStorage({ dir, publicBaseUrl: 'http://x', signingSecret: '' }), /signingSecret/);
  });
});
