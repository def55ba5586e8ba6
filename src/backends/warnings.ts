/**
 * Builders for the structured warnings backends return (`BackendWarning`): a setting ignored
 * (`unsupported`), honoured differently than asked (`compatibility`: a size sent as the nearest
 * aspect ratio, a quality word mapped), or anything else worth saying (`other`).
 */
import type { BackendWarning } from './image-backend.ts';

export function unsupported(setting: string | undefined, detail: string): BackendWarning {
  return setting === undefined ? { type: 'unsupported', detail } : { type: 'unsupported', setting, detail };
}

export function compatibility(setting: string | undefined, detail: string): BackendWarning {
  return setting === undefined ? { type: 'compatibility', detail } : { type: 'compatibility', setting, detail };
}

export function otherWarning(detail: string, setting?: string): BackendWarning {
  return setting === undefined ? { type: 'other', detail } : { type: 'other', setting, detail };
}

/** The usual sentence for a request setting a model ignores. */
export function ignored(setting: string, model: string, backend: string): BackendWarning {
  return unsupported(setting, `${setting} is not supported by ${model || 'this model'} on backend "${backend}"; ignored`);
}

/** Each warning once (same type, setting and detail), in first-seen order. */
export function uniqueWarnings(list: readonly BackendWarning[]): BackendWarning[] {
  const seen = new Set<string>();
  return list.filter((w) => {
    const key = `${w.type}\u0000${w.setting ?? ''}\u0000${w.detail}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}
