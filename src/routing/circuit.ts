/**
 * A circuit breaker per backend. `failureThreshold` consecutive failures open it: the router sends
 * nothing there (it falls back along the chain) for `openSeconds`; then it is half-open and lets one
 * trial call through: success closes it, failure opens it again for another period. State is per
 * process (each worker learns from its own calls; `easel serve` shares it with the API's router).
 */
export type CircuitState = 'closed' | 'open' | 'half_open';

interface Circuit {
  failures: number;
  openedAt: number | undefined;
  /** Half-open: a trial call is out. */
  trial: boolean;
  opens: number;
}

export interface CircuitListener {
  (backend: string, state: CircuitState): void;
}

export class CircuitBreakers {
  private readonly threshold: number;
  private readonly openMs: number;
  private readonly circuits = new Map<string, Circuit>();
  private readonly now: () => number;
  onChange: CircuitListener | undefined;

  constructor(opts: { failureThreshold: number; openSeconds: number; now?: () => number }) {
    this.threshold = opts.failureThreshold;
    this.openMs = opts.openSeconds * 1000;
    this.now = opts.now ?? Date.now;
  }

  private get(backend: string): Circuit {
    let c = this.circuits.get(backend);
    if (!c) {
      c = { failures: 0, openedAt: undefined, trial: false, opens: 0 };
      this.circuits.set(backend, c);
    }
    return c;
  }

  state(backend: string): CircuitState {
    const c = this.circuits.get(backend);
    if (!c || c.openedAt === undefined) return 'closed';
    return this.now() - c.openedAt >= this.openMs ? 'half_open' : 'open';
  }

  /** Whether a call may go to this backend now (without taking the half-open trial slot). */
  available(backend: string): boolean {
    const s = this.state(backend);
    return s === 'closed' || (s === 'half_open' && !this.get(backend).trial);
  }

  /** Takes the call slot: false while open (or while a half-open trial is already out). */
  acquire(backend: string): boolean {
    const s = this.state(backend);
    if (s === 'closed') return true;
    if (s === 'open') return false;
    const c = this.get(backend);
    if (c.trial) return false;
    c.trial = true;
    return true;
  }

  /** A trial call that ended without telling anything about the backend (canceled, refused request): free the slot. */
  release(backend: string): void {
    const c = this.circuits.get(backend);
    if (c) c.trial = false;
  }

  success(backend: string): void {
    const c = this.circuits.get(backend);
    if (!c) return;
    const was = this.state(backend);
    c.failures = 0;
    c.trial = false;
    c.openedAt = undefined;
    if (was !== 'closed') this.onChange?.(backend, 'closed');
  }

  failure(backend: string): void {
    const c = this.get(backend);
    const was = this.state(backend);
    c.failures++;
    c.trial = false;
    if (was === 'half_open' || (was === 'closed' && c.failures >= this.threshold)) {
      c.openedAt = this.now();
      c.opens++;
      this.onChange?.(backend, 'open');
    }
  }

  snapshot(): Record<string, { state: CircuitState; failures: number; opens: number }> {
    return Object.fromEntries([...this.circuits].map(([name, c]) => [name, { state: this.state(name), failures: c.failures, opens: c.opens }]));
  }
}
