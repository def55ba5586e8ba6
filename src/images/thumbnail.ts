/**
 * Gallery thumbnails: a small WebP of each stored image, made once at store time so a page of
 * thumbnails costs a few kilobytes each instead of the full images.
 */
import { sharp } from './sharp.ts';

/**
 * Longest side of a thumbnail, in pixels (sharp on a ~3× dense phone grid of ~128 px tiles). An image
 * no larger than this gets no thumbnail: it is its own (and stays free for small-image workloads).
 */
export const THUMB_MAX_SIDE = 384;

export { thumbKey } from './keys.ts';

/** A WebP no larger than THUMB_MAX_SIDE on either side (never enlarged), flattened EXIF orientation. */
export async function makeThumbnail(image: Uint8Array): Promise<Buffer> {
  return sharp()(image)
    .autoOrient()
    .resize(THUMB_MAX_SIDE, THUMB_MAX_SIDE, { fit: 'inside', withoutEnlargement: true })
    .webp({ quality: 72, effort: 2 })
    .toBuffer();
}
