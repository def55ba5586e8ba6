/**
 * One full, compacting collection once start-up is done. Loading and wiring easel (config, schemas,
 * routes, migrations) leaves ~40 MB behind: garbage in an old generation sized for it, and a young
 * generation grown to its largest by the burst of start-up allocations. V8 gives that back only
 * after a long idle spell; a small machine wants it back before the first request. Collecting with
 * V8's memory-reducing ("last resort") flavour returns the pages to the system.
 *
 * `gc` is V8's own extension (as `--expose-gc` gives it), reached without a command-line flag; where
 * it cannot be had, nothing happens.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type GcFunction = (options?: { type?: 'major' | 'minor'; execution?: 'sync' | 'async'; flavor?: 'regular' | 'last-resort' }) => Promise<void> | void;

export async function releaseStartupMemory(): Promise<void> {
  let gc: GcFunction | undefined = (globalThis as { gc?: GcFunction }).gc;
  if (!gc) {
    try {
      setFlagsFromString('--expose-gc');
      gc = runInNewContext('gc') as GcFunction;
    } catch {
      return;
    }
  }
  await gc({ type: 'major', execution: 'async', flavor: 'last-resort' });
}
