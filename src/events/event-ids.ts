/**
 * Ids of the events on a job's event stream (`GET /v1/images/jobs/{id}/events`). They are numbers
 * that grow through a job's life, so a client reconnecting with `Last-Event-ID: n` is sent exactly the
 * events after n. Nothing is written per job to make them: most ids are derived from the job row.
 *
 *   1                      status `queued` (every job has it)
 *   2                      status `running` (once a worker started the job)
 *   3 + 1000·P + Q         the running phase, in bands: P counts the recorded events so far (partial
 *                          images, kept in `job_events`), Q is progress in permille (0..999). The P-th
 *                          recorded event has id 3 + 1000·P; a progress event has the P of the newest
 *                          recorded event before it and its own Q. So ids grow as long as progress does
 *                          (a stream sends only progress above what it sent before, so a value that
 *                          fell, e.g. on a retried attempt, is not sent).
 *   2^53 − 1               the terminal status (`succeeded`, `failed`, `canceled`), always last
 */
export const QUEUED_EVENT_ID = 1;
export const RUNNING_EVENT_ID = 2;
export const TERMINAL_EVENT_ID = Number.MAX_SAFE_INTEGER;

/** First id of the running phase, and the width of one recorded event's band. */
export const RUNNING_PHASE_BASE = 3;
export const RECORDED_BAND = 1000;

/** Progress as the Q of an id: permille, 0..999. */
export const progressPermille = (progress: number): number =>
  Number.isFinite(progress) ? Math.min(RECORDED_BAND - 1, Math.max(0, Math.floor(progress * 1000))) : 0;

/** The id of the `ordinal`-th (1-based) recorded event of a job. */
export const recordedEventId = (ordinal: number): number => RUNNING_PHASE_BASE + RECORDED_BAND * ordinal;

/** The id of a progress event when `recorded` events came before it. */
export const progressEventId = (recorded: number, progress: number): number => RUNNING_PHASE_BASE + RECORDED_BAND * recorded + progressPermille(progress);

/** How many recorded events precede (or are) the event with this id. */
export const recordedCountOf = (id: number): number =>
  id < RUNNING_PHASE_BASE || id >= TERMINAL_EVENT_ID ? 0 : Math.floor((id - RUNNING_PHASE_BASE) / RECORDED_BAND);

/** The progress (permille) an id carries: Q of a running-phase id, else 0. */
export const permilleOf = (id: number): number =>
  id < RUNNING_PHASE_BASE || id >= TERMINAL_EVENT_ID ? 0 : (id - RUNNING_PHASE_BASE) % RECORDED_BAND;

/** A `Last-Event-ID` as sent back by a client: a non-negative integer, else 0 (start from the beginning). */
export function parseLastEventId(value: unknown): number {
  const raw = Array.isArray(value) ? value[0] : value;
  if (typeof raw !== 'string' || !/^\d{1,16}$/.test(raw.trim())) return 0;
  return Math.min(Number(raw.trim()), TERMINAL_EVENT_ID);
}
