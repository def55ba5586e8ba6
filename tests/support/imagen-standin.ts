/**
 * A loopback stand-in for Google Imagen on the Gemini API (PROTOCOLS.md §8) with its quirks:
 * `POST /v1beta/models/{model}:predict` with `x-goog-api-key`; `sampleCount` defaults to **four**
 * when left out (four images, billed); filtered images are silently missing from `predictions`
 * (with `includeRaiReason` an entry holds only `raiFilteredReason`), and when everything is
 * filtered the `predictions` key is missing altogether; `includeSafetyAttributes` adds a
 * "Positive Prompt" entry with no image; a bad key is a **400** `API_KEY_INVALID`; errors are
 * Google's `{error:{code,message,status}}`.
 *
 * Prompts steer outcomes: `filter-one` drops one image, `filter-all` drops them all, `unsafe` is a
 * 400 about sensitive words.
 */
import sharp from 'sharp';
import { standinPng } from './openai-standin.ts';
import { startStandinServer } from '../providers/standin-kit.ts';
import type { Injected, Recorded, StandinServer } from '../providers/standin-kit.ts';

export const IMAGEN_KEY = 'AIza-standin-key';
const MODELS = new Set(['imagen-3.0-generate-002', 'imagen-4.0-generate-001', 'imagen-4.0-ultra-generate-001', 'imagen-4.0-fast-generate-001']);

export interface ImagenStandin {
  url: string;
  server: StandinServer;
  requests: Recorded[];
  predicts(): Recorded[];
  /** Images answered in total (what Google would bill). */
  imagesServed: number;
  inject(f: Injected): void;
  close(): Promise<void>;
}

const gerr = (code: number, status: string, message: string, details?: unknown[]) => ({ error: { code, message, status, ...(details ? { details } : {}) } });

export async function startImagenStandin(opts: { key?: string } = {}): Promise<ImagenStandin> {
  const key = opts.key ?? IMAGEN_KEY;
  const png = standinPng(64, 64).png;
  const jpeg = await sharp(png).jpeg().toBuffer();
  const state = { imagesServed: 0 };
  const server = await startStandinServer(async (req, reply) => {
    const m = /^\/v1beta\/models\/([\w.-]+):predict$/.exec(req.path);
    if (req.method !== 'POST' || !m) return reply.json(404, gerr(404, 'NOT_FOUND', `no route ${req.method} ${req.path}`));
    if (req.headers['x-goog-api-key'] !== key && req.query.get('key') !== key) {
      return reply.json(400, gerr(400, 'INVALID_ARGUMENT', 'API key not valid. Please pass a valid API key.', [
        { '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID', domain: 'googleapis.com' },
      ]));
    }
    if (!MODELS.has(m[1]!)) return reply.json(404, gerr(404, 'NOT_FOUND', `models/${m[1]} is not found for API version v1beta, or is not supported for predict.`));
    const body = req.json;
    const prompt = body?.instances?.[0]?.prompt;
    if (typeof prompt !== 'string' || !prompt) return reply.json(400, gerr(400, 'INVALID_ARGUMENT', 'instances[0].prompt is required'));
    const params = body.parameters ?? {};
    for (const vertexOnly of ['seed', 'negativePrompt', 'addWatermark', 'enhancePrompt']) {
      if (vertexOnly in params) return reply.json(400, gerr(400, 'INVALID_ARGUMENT', `${vertexOnly} parameter is not supported in Gemini API.`));
    }
    // The quirk: no sampleCount means four.
    const count = params.sampleCount === undefined ? 4 : Number(params.sampleCount);
    if (!Number.isInteger(count) || count < 1 || count > 4) return reply.json(400, gerr(400, 'INVALID_ARGUMENT', 'sampleCount must be between 1 and 4'));
    if (params.aspectRatio !== undefined && !['1:1', '3:4', '4:3', '9:16', '16:9'].includes(params.aspectRatio)) {
      return reply.json(400, gerr(400, 'INVALID_ARGUMENT', `aspectRatio ${params.aspectRatio} is not supported`));
    }
    if (/\bunsafe\b/.test(prompt)) {
      return reply.json(400, gerr(400, 'INVALID_ARGUMENT', "Image generation failed with the following error: The prompt could not be submitted. This prompt contains sensitive words that violate Google's Responsible AI practices."));
    }
    const asJpeg = params.outputOptions?.mimeType === 'image/jpeg';
    const image = () => ({ bytesBase64Encoded: (asJpeg ? jpeg : png).toString('base64'), mimeType: asJpeg ? 'image/jpeg' : 'image/png' });
    if (/\bfilter-all\b/.test(prompt)) return reply.json(200, {});
    const kept = /\bfilter-one\b/.test(prompt) ? count - 1 : count;
    const predictions: unknown[] = Array.from({ length: kept }, () => ({
      ...image(),
      ...(params.includeSafetyAttributes ? { safetyAttributes: { categories: ['Porn', 'Violence'], scores: [0, 0] } } : {}),
    }));
    if (kept < count && params.includeRaiReason) predictions.push({ raiFilteredReason: 'Unable to show generated images. Violence filter.' });
    if (params.includeSafetyAttributes) predictions.push({ contentType: 'Positive Prompt', safetyAttributes: { categories: ['Porn'], scores: [0] } });
    state.imagesServed += kept;
    return reply.json(200, { predictions });
  });
  return {
    url: `${server.url}/v1beta`,
    server,
    requests: server.requests,
    predicts: () => server.requests.filter((r) => r.method === 'POST' && r.status === 200),
    get imagesServed() {
      return state.imagesServed;
    },
    inject: server.inject,
    close: server.close,
  };
}
