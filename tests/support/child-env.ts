/**
 * What the tests run in: never the user's settings. Every variable easel reads (EASEL_*, the plain
 * ones in ENV_KEYS such as DATABASE_URL and REDIS_URL, HF_ENDPOINT/HF_TOKEN, OPENAI_API_KEY) is
 * removed, both by `npm test` for the whole run (scripts/run-tests.ts) and for every easel child a test
 * starts, and children run in a temp folder, so an `easel.yaml` in the checkout (as the README's quick
 * start suggests) is never picked up. The test runner's own knobs (EASEL_TEST_*, EASEL_SCALE_JOBS,
 * EASEL_CHROMIUM) stay.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ENV_KEYS } from '../../src/config/load.ts';

const TEST_KNOBS = /^EASEL_(TEST_|SCALE_JOBS$|CHROMIUM$)/;

/** Whether `name` is a setting easel (or a backend's default key lookup) reads from the environment. */
export function isEaselSetting(name: string): boolean {
  if (TEST_KNOBS.test(name)) return false;
  return name.startsWith('EASEL_') || name in ENV_KEYS || name.startsWith('HF_') || name === 'OPENAI_API_KEY';
}

/** A copy of `env` without easel's settings. */
export function scrubEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!isEaselSetting(k)) out[k] = v;
  return out;
}

/**
 * The environment for an easel child: this process's without easel's settings and without the test
 * runner's NODE_TEST_* (a child that sees them thinks it is a test file), plus `extra` (undefined unsets).
 */
export function childEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env = scrubEnv(process.env);
  for (const name of Object.keys(env)) if (name.startsWith('NODE_TEST')) delete env[name];
  for (const [k, v] of Object.entries(extra)) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return env;
}

let cwd: string | undefined;

/** An empty working folder for easel children (one per test process, removed when it exits). */
export function childCwd(): string {
  if (!cwd) {
    const dir = mkdtempSync(join(tmpdir(), 'easel-cwd-'));
    cwd = dir;
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  }
  return cwd;
}
