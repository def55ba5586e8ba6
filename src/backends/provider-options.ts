/**
 * Provider options as a backend applies them. Admission refuses guarded keys and keys outside the
 * model's strict schema before any work (`providerOptionsProblem`); the request builders apply the
 * same rule again (a job row stored before the rule, a caller that skipped admission), so options
 * can only ever add settings the model declares, never steer the model, count, size, prompt, input
 * images or moderation that easel prices, moderates and limits. What is dropped is said in a
 * warning; a declared option with a bad value fails the call.
 */
import { z } from 'zod';
import { BackendError } from './image-backend.ts';
import type { BackendWarning } from './image-backend.ts';
import { guardedOptionProblem } from './model-spec.ts';
import { unsupported } from './warnings.ts';

/** Keys that would reach an object's prototype when copied with plain assignment. */
const PROTOTYPE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

export interface AcceptedOptions {
  /** The options the schema accepted (parsed: defaults applied, nothing else). */
  options: Record<string, unknown>;
  warnings: BackendWarning[];
}

/**
 * The options a model's strict schema takes, without guarded keys (at any depth), prototype keys or
 * keys the schema does not declare; each dropped key is a warning. Throws `invalid_request` when a
 * declared option has a value the schema refuses.
 */
export function acceptedOptions(
  raw: Record<string, unknown> | undefined,
  schema: z.ZodType<Record<string, unknown>>,
  where: { backend: string; model: string },
): AcceptedOptions {
  const warnings: BackendWarning[] = [];
  const kept: Record<string, unknown> = {};
  const shape = schema instanceof z.ZodObject ? (schema.shape as Record<string, unknown>) : undefined;
  const on = `${where.model || 'this model'} on backend "${where.backend}"`;
  for (const key of Object.keys(raw ?? {})) {
    const value = raw![key];
    if (value === undefined) continue;
    const setting = `provider_options.${key}`;
    if (PROTOTYPE_KEYS.has(key)) {
      warnings.push(unsupported(setting, `provider option ${key} is never passed on; ignored`));
      continue;
    }
    const guarded = guardedOptionProblem({ [key]: value });
    if (guarded) {
      warnings.push(unsupported(guarded.param, `${guarded.message} Ignored.`));
      continue;
    }
    if (shape && !Object.hasOwn(shape, key)) {
      warnings.push(unsupported(setting, `provider option ${key} is not taken by ${on}; ignored`));
      continue;
    }
    kept[key] = value;
  }
  const parsed = schema.safeParse(kept);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const param = ['provider_options', ...issue.path.map(String)].join('.');
    throw new BackendError(`Invalid value for '${param}' on ${on}: ${issue.message}`, { code: 'invalid_request' });
  }
  return { options: { ...parsed.data }, warnings };
}
