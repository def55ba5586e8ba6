/** Data several pages share, fetched once per tab and refreshed on demand. */
import { useEffect, useState } from 'preact/hooks';
import { api } from './api.ts';
import type { BackendView, ModelInfo, SystemView } from './api.ts';

let models: Promise<ModelInfo[]> | undefined;
let system: { at: number; value: Promise<SystemView> } | undefined;

/** Forgets the model list and system status (a model was just installed), so the next use asks again. */
export function forgetModels(): void {
  models = undefined;
  system = undefined;
}

export function loadModels(): Promise<ModelInfo[]> {
  models ??= api<{ data: ModelInfo[] }>('/v1/models').then((r) => r.data, (err) => {
    models = undefined;
    throw err;
  });
  return models;
}

export function loadSystem(maxAgeMs = 10_000): Promise<SystemView> {
  if (!system || Date.now() - system.at > maxAgeMs) {
    const value = api<SystemView>('/v1/system');
    system = { at: Date.now(), value };
    value.catch(() => {
      system = undefined;
    });
  }
  return system.value;
}

/** The model list; `version` changes ask for it again (after the default model is installed). */
export function useModels(version = 0): { models: ModelInfo[] | null; error: unknown } {
  const [state, setState] = useState<{ models: ModelInfo[] | null; error: unknown }>({ models: null, error: null });
  useEffect(() => {
    loadModels().then((m) => setState({ models: m, error: null }), (error) => setState({ models: [], error }));
  }, [version]);
  return state;
}

/** What each model's backend can do (from /v1/system), by public model name. */
export function useCapabilities(version = 0): Record<string, BackendView['capabilities'] & { backend: string; ok: boolean }> {
  const [caps, setCaps] = useState<Record<string, BackendView['capabilities'] & { backend: string; ok: boolean }>>({});
  useEffect(() => {
    loadSystem().then(
      (s) => {
        const out: typeof caps = {};
        for (const b of s.backends) for (const m of b.models) out[m] = { ...b.capabilities, backend: b.name, ok: b.ok };
        setCaps(out);
      },
      () => {},
    );
  }, [version]);
  return caps;
}
