/**
 * Every backend type easel has, one definition per backend folder. The config schema's backend
 * union, the registry's factories, the price table's defaults and the self-hosted types the cost
 * model times are all derived from this list: adding a backend is adding a folder and a line here.
 * Definitions are light (a config schema and prices); a backend's code loads when one is built.
 */
import type { BackendDefinition } from './definition.ts';
import type { PriceRule } from '../pricing/price-table.ts';
import { openaiDefinition } from './openai/definition.ts';
import { replicateDefinition } from './replicate/definition.ts';
import { falDefinition } from './fal/definition.ts';
import { bflDefinition } from './bfl/definition.ts';
import { stabilityDefinition } from './stability/definition.ts';
import { imagenDefinition } from './imagen/definition.ts';
import { aiSdkDefinition } from './ai-sdk/definition.ts';
import { onnxDefinition } from './onnx/definition.ts';
import { comfyuiDefinition } from './comfyui/definition.ts';
import { a1111Definition } from './a1111/definition.ts';

export const BACKEND_DEFINITIONS = [
  openaiDefinition,
  replicateDefinition,
  falDefinition,
  bflDefinition,
  stabilityDefinition,
  imagenDefinition,
  aiSdkDefinition,
  onnxDefinition,
  comfyuiDefinition,
  a1111Definition,
] as const;

type ConfigSchemas<T extends readonly { configSchema: unknown }[]> = { -readonly [K in keyof T]: T[K]['configSchema'] };

/** Each definition's config schema, in order (the members of the config's discriminated union). */
export const backendConfigSchemas = BACKEND_DEFINITIONS.map((d) => d.configSchema) as unknown as ConfigSchemas<typeof BACKEND_DEFINITIONS>;

const byType = new Map<string, BackendDefinition>(BACKEND_DEFINITIONS.map((d) => [d.type, d as unknown as BackendDefinition]));

/** The definition of a backend type, if easel has one. */
export function backendDefinition(type: string): BackendDefinition | undefined {
  return byType.get(type);
}

/** Backend types costed by GPU time by default (`costModel.selfHostedTypes`). */
export const SELF_HOSTED_TYPES: readonly string[] = BACKEND_DEFINITIONS.filter((d) => d.selfHosted).map((d) => d.type);

/** Every provider's list prices (the price table's defaults). */
export const DEFINITION_PRICES: readonly PriceRule[] = BACKEND_DEFINITIONS.flatMap((d): readonly PriceRule[] => ('prices' in d ? d.prices : []));
