/** The `openai` backend type: any endpoint that speaks the OpenAI Images API, through the official SDK. */
import { loadOptional } from '../../core/optional-module.ts';
import type { BackendDefinition } from '../definition.ts';
import type { ImageBackend } from '../image-backend.ts';
import type { PriceRule } from '../../pricing/price-table.ts';
import { openaiBackendConfigSchema } from './options.ts';

const DALLE3_WIDE = ['1792x1024', '1024x1792'];
const GPT_SQUARE = ['1024x1024'];
const GPT_WIDE = ['1536x1024', '1024x1536'];

function gptFamily(model: string, prices: { sq: [number, number, number]; wide: [number, number, number] }): PriceRule[] {
  const q = ['low', 'medium', 'high'] as const;
  return q.flatMap((quality, i) => [
    { backend: 'openai', model, sizes: GPT_SQUARE, qualities: [quality], usdPerImage: prices.sq[i] },
    { backend: 'openai', model, sizes: GPT_WIDE, qualities: [quality], usdPerImage: prices.wide[i] },
    // Any other size (gpt-image-2 takes free sizes): the square price per megapixel.
    { backend: 'openai', model, qualities: [quality], usdPerMegapixel: prices.sq[i] },
  ]);
}

/** OpenAI's list prices (per image; GPT image models by quality and size). */
export const OPENAI_PRICES: readonly PriceRule[] = [
  { backend: 'openai', model: 'dall-e-3', sizes: GPT_SQUARE, qualities: ['standard'], usdPerImage: 0.04 },
  { backend: 'openai', model: 'dall-e-3', sizes: DALLE3_WIDE, qualities: ['standard'], usdPerImage: 0.08 },
  { backend: 'openai', model: 'dall-e-3', sizes: GPT_SQUARE, qualities: ['hd'], usdPerImage: 0.08 },
  { backend: 'openai', model: 'dall-e-3', sizes: DALLE3_WIDE, qualities: ['hd'], usdPerImage: 0.12 },
  { backend: 'openai', model: 'dall-e-2', sizes: ['256x256'], usdPerImage: 0.016 },
  { backend: 'openai', model: 'dall-e-2', sizes: ['512x512'], usdPerImage: 0.018 },
  { backend: 'openai', model: 'dall-e-2', sizes: ['1024x1024'], usdPerImage: 0.02 },
  ...gptFamily('gpt-image-1-mini*', { sq: [0.005, 0.011, 0.036], wide: [0.006, 0.015, 0.052] }),
  ...gptFamily('gpt-image-*', { sq: [0.011, 0.02, 0.04], wide: [0.016, 0.03, 0.06] }),
  ...gptFamily('chatgpt-image-*', { sq: [0.011, 0.02, 0.04], wide: [0.016, 0.03, 0.06] }),
];

/** The quality OpenAI bills for: DALL·E 2 has one, DALL·E 3 standard/hd, GPT image models low/medium/high. */
export function openaiBilledQuality(model: string, quality: string | undefined): string | undefined {
  const q = quality?.toLowerCase();
  if (model === '' || model.startsWith('dall-e-2')) return 'standard';
  if (model.startsWith('dall-e-3')) return q === 'hd' || q === 'high' ? 'hd' : 'standard';
  if (model.startsWith('gpt-image') || model.startsWith('chatgpt-image')) {
    if (q === 'low' || q === 'medium' || q === 'high') return q;
    if (q === 'hd') return 'high';
    if (q === 'standard') return 'medium';
    // `auto` (and unset) lets OpenAI choose; priced as high so budgets never under-count.
    return 'high';
  }
  return q;
}

export const openaiDefinition = {
  type: 'openai',
  description: 'Any endpoint that speaks the OpenAI Images API (OpenAI, another easel), through the official SDK; presets for the engines on your own GPUs (vLLM-Omni, SGLang Diffusion, LocalAI, stable-diffusion.cpp)',
  configSchema: openaiBackendConfigSchema,
  selfHosted: false,
  prices: OPENAI_PRICES,
  billedQuality: openaiBilledQuality,
  create: (config): ImageBackend => {
    const { OpenAIBackend } = loadOptional<typeof import('./openai-backend.ts')>('./openai-backend.ts', import.meta.url);
    return new OpenAIBackend(config);
  },
} satisfies BackendDefinition<typeof openaiBackendConfigSchema>;
