/**
 * Provider options a generic backend takes because its config says so (an AI SDK provider easel
 * knows nothing about, a ComfyUI workflow's extra node inputs). Config declares each option's name
 * and type; the declaration becomes the model's strict schema, so anything undeclared is refused.
 * A guarded name (the model, count, size, prompt, input images, moderation…) cannot be declared.
 */
import { z } from 'zod';
import { isGuardedOption } from './model-spec.ts';

const OPTION_TYPES = ['string', 'number', 'integer', 'boolean'] as const;

/** One option's type: a word, or `{type, min?, max?, values?}`. */
export const declaredOptionTypeFields = {
  type: z.enum(OPTION_TYPES),
  min: z.number().optional(),
  max: z.number().optional(),
  /** The only values allowed. */
  values: z.array(z.union([z.string(), z.number(), z.boolean()])).min(1).optional(),
};

export const declaredOptionSchema = z.union([z.enum(OPTION_TYPES), z.object(declaredOptionTypeFields).strict()]);
export type DeclaredOption = z.infer<typeof declaredOptionSchema>;

/** Provider names of easel's own request fields: set at the top level, so never declared twice. */
const EASEL_FIELDS = new Set(['seed', 'guidance_scale', 'guidancescale', 'guidance', 'cfg', 'cfg_scale', 'cfgscale', 'style', 'background', 'user']);

/** A name a request may use for a declared option: a plain identifier that is neither guarded nor one of easel's own fields. */
export const declaredOptionName = z
  .string()
  .regex(/^[A-Za-z_][\w-]*$/, 'an option name (letters, digits, _ and -)')
  .refine((name) => !isGuardedOption(name) && !['__proto__', 'constructor', 'prototype'].includes(name), {
    message: 'is set from the request itself (it would change what easel prices, moderates or limits) and cannot be a provider option',
  })
  .refine((name) => !EASEL_FIELDS.has(name.toLowerCase()), { message: "is one of easel's own request fields (seed, guidance_scale, style, …); requests set it there" });

/** `{name: type}`: the provider options a config declares. */
export const declaredOptionsSchema = z.record(declaredOptionName, declaredOptionSchema);
export type DeclaredOptions = z.infer<typeof declaredOptionsSchema>;

/** The zod type of one declared option. */
export function declaredOptionType(decl: DeclaredOption | { type: (typeof OPTION_TYPES)[number]; min?: number; max?: number; values?: readonly (string | number | boolean)[] }): z.ZodType {
  const d = typeof decl === 'string' ? { type: decl } : decl;
  if (d.values) {
    const [first, ...rest] = d.values.map((v) => z.literal(v));
    return rest.length ? z.union([first!, ...rest]) : first!;
  }
  if (d.type === 'boolean') return z.boolean();
  if (d.type === 'string') return z.string();
  let n = d.type === 'integer' ? z.number().int() : z.number();
  if (d.min !== undefined) n = n.min(d.min);
  if (d.max !== undefined) n = n.max(d.max);
  return n;
}

/** The strict schema of what a config declares (no declaration: no options at all). */
export function declaredOptionsObject(decls: Record<string, DeclaredOption> | undefined): z.ZodObject {
  const shape: Record<string, z.ZodType> = {};
  for (const [name, decl] of Object.entries(decls ?? {})) shape[name] = declaredOptionType(decl).optional();
  return z.object(shape).strict();
}
