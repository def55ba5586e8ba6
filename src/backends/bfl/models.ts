/**
 * What each Black Forest Labs model takes (PROTOCOLS.md §6.2), as a model spec and a parameter
 * table. FLUX.1 pro/dev take pixels (multiples of 32 within 256–1440), ultra and kontext an aspect
 * ratio; kontext also edits one input image, fill inpaints (image + mask), canny and depth take a
 * control image, FLUX.2 takes up to eight input images and sizes in multiples of 16 up to 4 MP.
 * BFL reports each task's cost, so the price table is only the estimate.
 */
import { z } from 'zod';
import type { BackendCapabilities } from '../image-backend.ts';
import type { BackendModelSpec, SizeRule } from '../model-spec.ts';
import { aspectRatioSizes, snapSide } from '../http/media.ts';
import { aspectRatioRow, notTaken } from '../http/param-table.ts';
import type { ParamRow } from '../http/param-table.ts';
import type { ImageSize } from '../../core/image-request.ts';
import { perModel } from '../per-model.ts';

export const ULTRA_RATIOS = ['21:9', '16:9', '3:2', '4:3', '5:4', '1:1', '4:5', '3:4', '2:3', '9:16', '9:21'];

export interface ModelShape {
  /** How the size is sent. */
  size: 'width_height' | 'aspect_ratio';
  step: number;
  min: number;
  max: number;
  maxPixels?: number;
  /** Makes an image from the prompt alone (fill and the control models need an input image). */
  generate: boolean;
  steps: boolean;
  guidance: boolean;
  /** The input-image field (kontext / FLUX.2 `input_image`, fill `image`, canny/depth `control_image`). */
  image?: 'input_image' | 'image' | 'control_image';
  /** Input images one task takes (FLUX.2: `input_image` … `input_image_8`). */
  maxImages: number;
  mask: boolean;
  /** Request fields beyond easel's own that change neither price, moderation nor limits. */
  options: z.ZodObject;
}

/** `prompt_upsampling`: BFL rewrites the prompt with more detail before generating. */
const upsampling = { prompt_upsampling: z.boolean().optional() };
const flux1Options = z.object(upsampling).strict();

/** What a model takes (remembered per id). */
export const modelShape = perModel(classify);

function classify(model: string): ModelShape {
  const m = model.toLowerCase();
  const flux1 = { size: 'width_height', step: 32, min: 256, max: 1440, generate: true, steps: false, guidance: false, maxImages: 0, mask: false, options: flux1Options } as const;
  if (m.startsWith('flux-2')) {
    const flex = m.includes('flex');
    return { ...flux1, step: 16, min: 64, max: 4096, maxPixels: 4_194_304, steps: flex, guidance: flex, image: 'input_image', maxImages: 8, options: z.object({}).strict() };
  }
  if (m.startsWith('flux-kontext')) return { ...flux1, size: 'aspect_ratio', image: 'input_image', maxImages: 1 };
  if (m.includes('ultra')) {
    // `raw`: less processed, more natural-looking images.
    return { ...flux1, size: 'aspect_ratio', options: z.object({ ...upsampling, raw: z.boolean().optional() }).strict() };
  }
  if (m.includes('fill')) return { ...flux1, generate: false, steps: true, guidance: true, image: 'image', maxImages: 1, mask: true };
  if (m.includes('canny') || m.includes('depth')) return { ...flux1, generate: false, steps: true, guidance: true, image: 'control_image', maxImages: 1 };
  if (m === 'flux-pro') {
    // `interval`: output variety (higher is more varied).
    return { ...flux1, steps: true, guidance: true, options: z.object({ ...upsampling, interval: z.number().min(1).max(4).optional() }).strict() };
  }
  if (m === 'flux-dev') return { ...flux1, steps: true, guidance: true };
  return flux1;
}

export function bflModelSpec(model: string, backend: BackendCapabilities): BackendModelSpec {
  const shape = modelShape(model);
  const sizes: SizeRule =
    shape.size === 'aspect_ratio'
      ? aspectRatioSizes(ULTRA_RATIOS)
      : { kind: 'range', minSide: shape.min, maxSide: shape.max, multipleOf: shape.step, ...(shape.maxPixels ? { maxPixels: shape.maxPixels } : {}) };
  const edit = shape.maxImages > 0;
  return {
    capabilities: { generate: shape.generate, edit, mask: shape.mask, variation: false, maxInputImages: shape.maxImages },
    maxImagesPerCall: backend.maxImagesPerCall,
    sizes,
    pricing: 'provider-reported',
    providerOptions: shape.options,
  };
}

/** A size on the model's grid (and within its pixel budget). */
export function snapSize(size: ImageSize, shape: ModelShape): ImageSize {
  let w = snapSide(size.width, shape.step, shape.min, shape.max);
  let h = snapSide(size.height, shape.step, shape.min, shape.max);
  if (shape.maxPixels && w * h > shape.maxPixels) {
    const scale = Math.sqrt(shape.maxPixels / (w * h));
    w = Math.floor((w * scale) / shape.step) * shape.step;
    h = Math.floor((h * scale) / shape.step) * shape.step;
  }
  return { width: w, height: h };
}

/** The table of one task of `model`. */
export function bflRows(model: string, backend: string): ParamRow[] {
  const shape = modelShape(model);
  const sizeRows: ParamRow[] =
    shape.size === 'aspect_ratio'
      ? [aspectRatioRow(ULTRA_RATIOS, model)]
      : [
          {
            param: 'size',
            field: 'width',
            // BFL's FLUX.1 default height is 768; easel's default is square.
            default: 1024,
            transform: (size: ImageSize, t) => {
              const s = snapSize(size, shape);
              if (s.width !== size.width || s.height !== size.height) {
                t.warn(`size ${size.width}x${size.height} sent as ${s.width}x${s.height} (${model} takes multiples of ${shape.step} within ${shape.min}–${shape.max})`);
              }
              return s.width;
            },
          },
          { param: 'size', field: 'height', default: 1024, transform: (size: ImageSize) => snapSize(size, shape).height },
        ];
  return [
    { param: 'prompt', field: 'prompt' },
    ...sizeRows,
    { param: 'seed', field: 'seed' },
    shape.steps ? { param: 'steps', field: 'steps' } : notTaken('steps', model, backend),
    shape.guidance ? { param: 'guidance_scale', field: 'guidance' } : notTaken('guidance_scale', model, backend),
    notTaken('negative_prompt', model, backend),
    notTaken('quality', model, backend),
    notTaken('style', model, backend),
    { param: 'output_format', field: 'output_format', transform: (f: string) => (f === 'jpeg' ? 'jpeg' : 'png') },
  ];
}
