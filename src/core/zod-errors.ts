/**
 * A failed zod parse as one DomainError that names the field and says what was wrong with it:
 * missing, of the wrong type (and which type was expected), an unknown key, or a bad value.
 * Parse with `{ reportInput: true }` so a present-but-wrong value is told apart from a missing one.
 */
import type { z } from 'zod';
import { DomainError } from './errors.ts';

/** `requests[0].metadata.a`: array indices in brackets, keys dotted. */
export function paramPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

function describe(value: unknown, received?: string): string {
  if (received === 'Infinity' || received === '-Infinity' || (typeof value === 'number' && !Number.isFinite(value))) return 'a number out of range';
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array (${value.length} values; send it once)`;
  if (typeof value === 'string') return `a string (${JSON.stringify(value.length > 30 ? `${value.slice(0, 30)}…` : value)})`;
  if (typeof value === 'number') return Number.isInteger(value) ? `the integer ${value}` : `the number ${value}`;
  if (typeof value === 'object') return 'an object';
  return typeof value;
}

const EXPECTED: Record<string, string> = { int: 'an integer', number: 'a number', string: 'a string', boolean: 'a boolean (true or false)', object: 'an object', array: 'an array', record: 'an object' };

/** The first issue of a zod error as a 400 naming `prefix` + its path. */
export function zodToDomainError(error: z.ZodError, prefix: readonly PropertyKey[] = [], label?: string): DomainError {
  const issue = error.issues[0]!;
  const lead = label ? `${label}: ` : '';
  if (issue.code === 'unrecognized_keys') {
    const param = paramPath([...prefix, ...issue.path, issue.keys[0]!]);
    return new DomainError('invalid', `${lead}Unrecognized request argument supplied: ${param}`, { param, code: 'unknown_parameter' });
  }
  const path = issue.code === 'invalid_key' ? issue.path.slice(0, -1) : issue.path;
  const param = paramPath([...prefix, ...path]);
  if (!param) return new DomainError('invalid', `${lead}Invalid request body: ${issue.message}`, { code: 'invalid_request' });
  if (issue.code === 'invalid_type') {
    if (issue.input === undefined) return new DomainError('invalid', `${lead}Missing required parameter: '${param}'.`, { param, code: 'missing_required_parameter' });
    const expected = EXPECTED[issue.expected] ?? issue.expected;
    const received = (issue as { received?: string }).received;
    return new DomainError('invalid', `${lead}Invalid type for '${param}': expected ${expected}, got ${describe(issue.input, received)}.`, { param, code: 'invalid_type' });
  }
  if (issue.code === 'invalid_key') {
    return new DomainError('invalid', `${lead}Invalid key in '${param}': ${(issue.issues[0]?.message ?? issue.message).replace(/^Too big: expected string to have /, 'keys must have ')}.`, { param, code: 'invalid_value' });
  }
  return new DomainError('invalid', `${lead}Invalid value for '${param}': ${issue.message}.`, { param, code: 'invalid_value' });
}
