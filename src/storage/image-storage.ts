/**
 * Where image bytes live: a local folder by default, any S3-compatible store at scale.
 * Keys are chosen by the caller and are deterministic per job and index, so a job that runs twice
 * overwrites rather than duplicates.
 */
export interface StoredObject {
  data: Buffer;
  contentType: string;
}

export interface ImageStorage {
  readonly kind: 'local' | 's3';
  put(key: string, data: Uint8Array, contentType: string): Promise<void>;
  get(key: string): Promise<StoredObject | undefined>;
  delete(key: string): Promise<void>;
  /** Local storage: the file itself (path, size, type), for serving straight from disk. */
  file?(key: string): Promise<{ path: string; size: number; contentType: string } | undefined>;
  /** An absolute URL a client can GET without an API key, valid for `expiresInSeconds`. */
  url(key: string, expiresInSeconds: number): Promise<string>;
  /** Throws when the store is unreachable. */
  ping(): Promise<void>;
  close?(): Promise<void>;
}
