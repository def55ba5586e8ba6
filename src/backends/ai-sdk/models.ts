/**
 * What a model behind an `ai-sdk` backend takes. The AI SDK gives every provider the same call
 * (prompt, n, size, seed, images, mask) and leaves the rest to each provider's own options, so what
 * else a model takes is known only for packages easel knows (`@ai-sdk/openai`: OpenAI's per-model
 * rules, its quality/style/background/user fields and its `moderation` / `inputFidelity` options);
 * for any other package it is what the backend's config declares (`requestFields`, `providerOptions`,
 * `sizes`), and otherwise nothing.
 */
import { z } from 'zod';
import type { BackendCapabilities } from '../image-backend.ts';
import type { BackendModelSpec } from '../model-spec.ts';
import { declaredOptionsObject } from '../declared-options.ts';
import type { EaselParam, ParamRow } from '../http/param-table.ts';
import { openaiModelSpec } from '../openai/model-rules.ts';
import type { AiSdkBackendConfig } from './options.ts';

/** easel request fields an AI SDK provider may take under its own options. */
export const MAPPABLE_FIELDS = ['quality', 'style', 'negative_prompt', 'steps', 'guidance_scale', 'background', 'user'] as const;
export type MappableField = (typeof MAPPABLE_FIELDS)[number];

interface KnownPackage {
  requestFields: Partial<Record<MappableField, string>>;
  options: z.ZodRawShape;
  spec?: (model: string, backend: BackendCapabilities) => BackendModelSpec;
}

const KNOWN: Record<string, KnownPackage> = {
  '@ai-sdk/openai': {
    requestFields: { quality: 'quality', style: 'style', background: 'background', user: 'user' },
    options: { moderation: z.enum(['auto', 'low']).optional(), inputFidelity: z.enum(['high', 'low']).optional() },
    spec: (model, backend) => openaiModelSpec(model, backend, true, 'price-table'),
  },
};

/** Where easel's own fields go in the provider's options: the package's known names, then config. */
export function requestFieldsFor(cfg: AiSdkBackendConfig): Partial<Record<MappableField, string>> {
  return { ...KNOWN[cfg.package]?.requestFields, ...cfg.requestFields };
}

/** The strict schema of the provider options a model takes: the package's known ones plus config's. */
export function aiSdkOptionsSchema(cfg: AiSdkBackendConfig): z.ZodObject {
  return declaredOptionsObject(cfg.providerOptions).extend(KNOWN[cfg.package]?.options ?? {});
}

/**
 * The spec of one model: the known package's rules where there are some, else the backend's
 * capabilities and config's sizes; `maxImagesPerCall` from the provider's model once it is loaded.
 */
export function aiSdkModelSpec(
  model: string,
  cfg: AiSdkBackendConfig,
  backend: BackendCapabilities,
  modelMaxImages: number | undefined,
  options: z.ZodObject = aiSdkOptionsSchema(cfg),
): BackendModelSpec {
  const known = KNOWN[cfg.package]?.spec?.(model, backend);
  const maxImagesPerCall = Math.min(backend.maxImagesPerCall, modelMaxImages ?? Infinity);
  const base: BackendModelSpec = known ?? {
    capabilities: { generate: backend.generate, edit: backend.edit, mask: backend.mask, variation: false, maxInputImages: backend.maxInputImages },
    maxImagesPerCall,
    pricing: 'price-table',
    providerOptions: z.object({}).strict(),
  };
  return {
    ...base,
    capabilities: { ...base.capabilities, variation: false },
    maxImagesPerCall: Math.min(base.maxImagesPerCall, maxImagesPerCall),
    ...(cfg.sizes ? { sizes: { kind: 'list', sizes: cfg.sizes, auto: true } } : {}),
    providerOptions: options,
  };
}

/** The table of easel fields that go into the provider's options; the rest are said to be ignored. */
export function aiSdkRows(cfg: AiSdkBackendConfig, backend: string): ParamRow[] {
  const fields = requestFieldsFor(cfg);
  const unmapped = (param: EaselParam): ParamRow => ({
    param,
    unsupported: `${param} is not passed by backend "${backend}" (its config maps no provider option to it: requestFields.${param}); ignored`,
  });
  return MAPPABLE_FIELDS.flatMap((param): ParamRow[] => {
    const field = fields[param];
    if (field) return [{ param, field }];
    // background and user are OpenAI's; other providers simply have no such thing.
    return param === 'background' || param === 'user' ? [] : [unmapped(param)];
  });
}
