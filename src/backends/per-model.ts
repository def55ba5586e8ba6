/**
 * Remembers what is worked out per model id (a spec's shape, its zod schemas): admission, routing
 * and the request builder ask about the same model several times per job. Bounded, so a caller
 * naming endless model ids cannot grow it without limit.
 */
export function perModel<T>(compute: (model: string) => T, max = 256): (model: string) => T {
  const known = new Map<string, T>();
  return (model) => {
    let value = known.get(model);
    if (value === undefined) {
      if (known.size >= max) known.clear();
      value = compute(model);
      known.set(model, value);
    }
    return value;
  };
}
