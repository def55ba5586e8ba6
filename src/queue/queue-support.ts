/** Small pieces both queue implementations share. */

/** A warning printer that says a repeated failure once per 10 s (a down Redis or database would flood logs). */
export function throttledWarn(label: string): (err: unknown) => void {
  let last = 0;
  let suppressed = 0;
  return (err) => {
    const now = Date.now();
    if (now - last < 10_000) {
      suppressed++;
      return;
    }
    const more = suppressed ? ` (${suppressed} similar errors suppressed)` : '';
    last = now;
    suppressed = 0;
    console.warn(`[easel] ${label}: ${(err as Error)?.message ?? String(err)}${more}`);
  };
}

/** The reason a delivery's signal aborts when its consumer no longer holds the message. */
export function leaseLost(message: string): Error {
  const err = new Error(message);
  err.name = 'LeaseLostError';
  return err;
}
