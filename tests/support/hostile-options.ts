/**
 * Provider options a hostile caller (or a job row stored before admission refused them) might send,
 * for the tests that drive each backend with them and check what its stand-in received.
 */
import assert from 'node:assert/strict';
import type { BackendWarning } from '../../src/backends/image-backend.ts';

/**
 * The model, the count, the size, the prompt, an input image, a prompt nested in an `input` object
 * and a prototype key, plus `own` (guarded keys under the provider's own names). A backend must
 * send none of it.
 */
export function hostileOptions(own: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...JSON.parse('{"__proto__": {"prompt": "hostile proto prompt", "polluted": true}}'),
    n: 7,
    model: 'hostile-model',
    size: '1536x1024',
    prompt: 'hostile prompt',
    image: 'data:image/png;base64,aG9zdGlsZQ==',
    input: { prompt: 'hostile nested prompt' },
    ...own,
  };
}

/** Any trace of `hostileOptions` in what a stand-in received. */
export const HOSTILE = /hostile|aG9zdGlsZQ|polluted/;

/** The settings the warnings name. */
export function warnedSettings(warnings: readonly BackendWarning[]): string[] {
  return warnings.flatMap((w) => (w.setting ? [w.setting] : []));
}

/** Every one of `keys` was dropped with a warning naming `provider_options.<key>` (nested keys by prefix). */
export function assertWarnsAbout(warnings: readonly BackendWarning[], keys: readonly string[]): void {
  const warned = warnedSettings(warnings);
  for (const key of keys) {
    assert.ok(warned.some((w) => w === `provider_options.${key}` || w.startsWith(`provider_options.${key}[`)), `warns about ${key}: ${warned.join(', ')}`);
  }
}
