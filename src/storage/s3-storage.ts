/**
 * ImageStorage on any S3-compatible store (AWS S3, MinIO, R2, Ceph, s3rver in tests).
 *
 * URLs are presigned GetObject URLs, so clients fetch straight from the store without an API key.
 * Checksums are only computed/validated when an operation requires them: several S3-compatible
 * servers reject or mishandle the SDK's default CRC headers.
 */
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { BucketLocationConstraint, S3ClientConfig } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { ImageStorage, StoredObject } from './image-storage.ts';
import { assertValidKey, contentTypeForKey } from './local-storage.ts';

export interface S3StorageOptions {
  bucket: string;
  /** Defaults to AWS_REGION / AWS_DEFAULT_REGION, then us-east-1. */
  region?: string;
  /** For S3-compatible servers, e.g. `http://minio:9000`. */
  endpoint?: string;
  /**
   * Endpoint to put in presigned URLs when clients reach the store under another address than
   * the service does (compose: `http://minio:9000` inside, `https://s3.example.com` outside).
   * The signature covers the host, so URLs are signed for this endpoint. Defaults to `endpoint`.
   */
  publicEndpoint?: string;
  /** Both or neither; without them the SDK's default credential chain is used. */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** Path-style addressing (`endpoint/bucket/key`); defaults to true when `endpoint` is set. */
  forcePathStyle?: boolean;
  /** Prepended to every key, e.g. `easel/` (a trailing slash is added when missing). */
  prefix?: string;
  /**
   * Cache-Control stored with each object; defaults to `public, max-age=31536000, immutable` since a
   * key names one job's image (only a re-run of the same job rewrites it).
   */
  cacheControl?: string;
}

/** SigV4 presigned URLs cannot outlive one week. */
export const MAX_PRESIGN_SECONDS = 7 * 24 * 60 * 60;

function httpStatus(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const meta = (err as { $metadata?: { httpStatusCode?: number } }).$metadata;
  return meta?.httpStatusCode;
}

function errName(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null ? (err as { name?: string }).name : undefined;
}

function isNotFound(err: unknown): boolean {
  const name = errName(err);
  return name === 'NoSuchKey' || name === 'NotFound' || name === 'NoSuchBucket' || httpStatus(err) === 404;
}

function describe(err: unknown): string {
  const name = errName(err);
  const status = httpStatus(err);
  const message = err instanceof Error ? err.message : String(err);
  const parts = [name && name !== 'Error' ? name : undefined, status ? `HTTP ${status}` : undefined, message || undefined];
  return parts.filter(Boolean).join(': ');
}

export class S3Storage implements ImageStorage {
  readonly kind = 's3' as const;
  readonly bucket: string;
  readonly prefix: string;
  readonly cacheControl: string;
  readonly region: string;
  readonly client: S3Client;
  /** Signs URLs; the same client unless `publicEndpoint` differs from `endpoint`. */
  readonly presignClient: S3Client;

  constructor(options: S3StorageOptions) {
    if (!options.bucket) throw new Error('S3Storage: bucket is required');
    if (Boolean(options.accessKeyId) !== Boolean(options.secretAccessKey)) {
      throw new Error('S3Storage: accessKeyId and secretAccessKey must be given together');
    }
    this.bucket = options.bucket;
    const prefix = (options.prefix ?? '').replace(/^\/+/, '').replace(/\/+$/, '');
    this.prefix = prefix ? `${prefix}/` : '';
    this.cacheControl = options.cacheControl ?? 'public, max-age=31536000, immutable';
    this.region = options.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION ?? 'us-east-1';
    const config: S3ClientConfig = {
      region: this.region,
      forcePathStyle: options.forcePathStyle ?? Boolean(options.endpoint),
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    };
    if (options.endpoint) config.endpoint = options.endpoint;
    if (options.accessKeyId && options.secretAccessKey) {
      config.credentials = { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey };
    }
    this.client = new S3Client(config);
    this.presignClient =
      options.publicEndpoint && options.publicEndpoint !== options.endpoint
        ? new S3Client({ ...config, endpoint: options.publicEndpoint })
        : this.client;
  }

  /** The object key in the bucket for a storage key. */
  objectKey(key: string): string {
    assertValidKey(key);
    return this.prefix + key;
  }

  async put(key: string, data: Uint8Array, contentType: string): Promise<void> {
    await this.client.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: this.objectKey(key),
        Body: data,
        ContentLength: data.byteLength,
        ContentType: contentType || contentTypeForKey(key),
        CacheControl: this.cacheControl,
      }),
    );
  }

  async get(key: string): Promise<StoredObject | undefined> {
    const objectKey = this.objectKey(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }));
      if (!res.Body) return { data: Buffer.alloc(0), contentType: res.ContentType ?? contentTypeForKey(key) };
      const bytes = await res.Body.transformToByteArray();
      return {
        data: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        contentType: res.ContentType || contentTypeForKey(key),
      };
    } catch (err) {
      // NoSuchBucket is a misconfiguration, not a missing image: let it surface.
      if (errName(err) === 'NoSuchBucket') throw err;
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    // S3 answers 204 for a key that does not exist, so this is idempotent.
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
  }

  async url(key: string, expiresInSeconds: number): Promise<string> {
    const objectKey = this.objectKey(key);
    if (!Number.isFinite(expiresInSeconds) || expiresInSeconds <= 0) {
      throw new RangeError(`S3Storage.url: expiresInSeconds must be a positive number, got ${expiresInSeconds}`);
    }
    const expiresIn = Math.ceil(expiresInSeconds);
    if (expiresIn > MAX_PRESIGN_SECONDS) {
      throw new RangeError(
        `S3Storage.url: presigned URLs cannot be valid for more than ${MAX_PRESIGN_SECONDS}s (7 days), got ${expiresIn}`,
      );
    }
    return getSignedUrl(this.presignClient, new GetObjectCommand({ Bucket: this.bucket, Key: objectKey }), { expiresIn });
  }

  async ping(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      throw new Error(`S3 bucket ${JSON.stringify(this.bucket)} is not reachable: ${describe(err)}`, { cause: err });
    }
  }

  /** Creates the bucket when it does not exist (embedded/compose setups). Returns true if created. */
  async ensureBucket(): Promise<boolean> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return false;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    try {
      await this.client.send(
        new CreateBucketCommand({
          Bucket: this.bucket,
          ...(this.region !== 'us-east-1'
            ? { CreateBucketConfiguration: { LocationConstraint: this.region as BucketLocationConstraint } }
            : {}),
        }),
      );
      return true;
    } catch (err) {
      // Someone else (another replica) created it in the meantime.
      if (errName(err) === 'BucketAlreadyOwnedByYou') return false;
      throw err;
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
    if (this.presignClient !== this.client) this.presignClient.destroy();
  }
}
