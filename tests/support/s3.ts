/**
 * An in-process S3-compatible server (s3rver) on a random loopback port, backed by a temp folder.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import S3rver from 's3rver';
import { S3Client } from '@aws-sdk/client-s3';
import type { S3StorageOptions } from '../../src/storage/s3-storage.ts';

export interface TestS3 {
  endpoint: string;
  bucket: string;
  /** Ready to pass to `new S3Storage(...)`. */
  options: S3StorageOptions & { endpoint: string; accessKeyId: string; secretAccessKey: string };
  /** The environment that points an easel process's image storage here. */
  env: Record<string, string>;
  /** An SDK client for looking into the bucket directly (the caller destroys it). */
  client(): S3Client;
  stop(): Promise<void>;
}

export async function startS3(bucket = 'easel-test'): Promise<TestS3> {
  const directory = await mkdtemp(path.join(tmpdir(), 'easel-s3rver-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: [{ name: bucket }],
  });
  let address;
  try {
    address = await server.run();
  } catch (err) {
    await rm(directory, { recursive: true, force: true });
    throw err;
  }
  const endpoint = `http://127.0.0.1:${address.port}`;
  let stopped = false;
  const options = { bucket, endpoint, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true };
  return {
    endpoint,
    bucket,
    options,
    env: {
      EASEL_STORAGE: 's3',
      S3_BUCKET: bucket,
      S3_ENDPOINT: endpoint,
      S3_REGION: options.region,
      S3_ACCESS_KEY_ID: options.accessKeyId,
      S3_SECRET_ACCESS_KEY: options.secretAccessKey,
      S3_FORCE_PATH_STYLE: 'true',
    },
    client: () =>
      new S3Client({
        region: options.region,
        endpoint,
        forcePathStyle: true,
        credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey },
      }),
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await server.close();
      } finally {
        await rm(directory, { recursive: true, force: true });
      }
    },
  };
}
