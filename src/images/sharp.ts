/**
 * sharp (libvips), loaded on first use. A server whose backends return the format the client asked
 * for never decodes an image, and sharp with libvips costs ~8 MB of memory from the moment it loads.
 */
import type SharpModule from 'sharp';
import { loadOptional } from '../core/optional-module.ts';

let loaded: typeof SharpModule | undefined;

export function sharp(): typeof SharpModule {
  if (!loaded) {
    loaded = loadOptional<typeof SharpModule>('sharp', import.meta.url);
    // Every image is seen once; sharp's operation cache would only hold memory.
    loaded.cache(false);
  }
  return loaded;
}
