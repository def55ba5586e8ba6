/**
 * Summarises a V8 .cpuprofile (from `npm run bench -- --cpu-prof`): self time by function and by
 * package/file, and inclusive time of easel's own functions.
 *
 *   node bench/profile-summary.ts bench/results/profiles/<file>.cpuprofile [--top 40]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({ options: { top: { type: 'string', default: '40' } }, allowPositionals: true });

/**
 * Areas of easel a sample is charged to: the innermost frame on its stack that matches one of these.
 * Node's own modules are transparent (a socket write is charged to whoever wrote: Fastify, pg,
 * ioredis, the OpenAI SDK), except undici, which is the backend call's HTTP client; native frames
 * such as writev or fsync have no URL and go to their caller's area.
 */
const AREAS: [string, RegExp][] = [
  ['database (libsql/pg, Kysely, stores)', /node_modules\/(libsql|@libsql|kysely|pg|pg-pool|pg-protocol)\/|\/(src|lib)\/store\//],
  ['queue (embedded, BullMQ/Redis)', /node_modules\/(bullmq|ioredis|msgpackr)\/|\/(src|lib)\/queue\//],
  ['backend call (OpenAI SDK, fetch)', /node_modules\/openai\/|node:internal\/deps\/undici|\/(src|lib)\/backends\//],
  ['images (sharp, encode, thumbnails)', /node_modules\/(sharp|@img)\/|\/(src|lib)\/images\//],
  ['storage (fs, S3)', /\/(src|lib)\/storage\/|@aws-sdk|@smithy/],
  ['routing, budgets, pricing, cache', /\/(src|lib)\/(cost|pricing|routing|budgets|cache|fairness)\//],
  ['events, webhooks', /\/(src|lib)\/(events|webhooks)\//],
  ['worker, settle', /\/(src|lib)\/(worker|jobs)\//],
  ['HTTP API (Fastify, zod, routes)', /node_modules\/(fastify|@fastify|find-my-way|secure-json-parse|fast-json-stringify|avvio|light-my-request|zod)\/|\/(src|lib)\/(api|auth|core|submissions)\//],
  ['logging, metrics', /node_modules\/(pino|pino-std-serializers|sonic-boom|thread-stream|prom-client)\/|\/(src|lib)\/observability\//],
];
/** When only Node's own frames are on the stack. */
const CORE_AREAS: [string, RegExp][] = [
  ['module loading', /node:internal\/modules|node:internal\/deps\/amaro|node:internal\/bootstrap/],
  ['storage (fs, S3)', /node:internal\/fs|node:fs/],
  ['node core: net, http, streams', /node:(net|_http|internal\/(streams|stream_base_commons|http))/],
];

const top = Number(values.top);
const prof = JSON.parse(readFileSync(positionals[0]!, 'utf8')) as Profile;

const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const selfUs = new Map<number, number>();
for (let i = 0; i < prof.samples.length; i++) selfUs.set(prof.samples[i]!, (selfUs.get(prof.samples[i]!) ?? 0) + (prof.timeDeltas[i] ?? 0));
const total = [...selfUs.values()].reduce((a, b) => a + b, 0);

const where = (url: string): string => {
  if (!url) return '(native)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1]!;
  const s = /\/(src|lib|bench|tests)\/(.*)$/.exec(url);
  if (s) return `${s[1]}/${s[2]}`;
  if (url.startsWith('node:')) return url;
  return url;
};
const label = (n: Node) => `${n.callFrame.functionName || '(anonymous)'} ${where(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;

const bump = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
const fnSelf = new Map<string, number>();
const pkgSelf = new Map<string, number>();
const inclusive = new Map<string, number>();
for (const [id, us] of selfUs) {
  const n = byId.get(id)!;
  bump(fnSelf, label(n), us);
  bump(pkgSelf, where(n.callFrame.url) || n.callFrame.functionName, us);
  // Inclusive time: every distinct frame on the stack (counted once per sample).
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = label(byId.get(cur)!);
    if (!seen.has(k)) {
      seen.add(k);
      bump(inclusive, k, us);
    }
  }
}

const areaUs = new Map<string, number>();
for (const [id, us] of selfUs) {
  const leaf = byId.get(id)!;
  const name = leaf.callFrame.functionName;
  let area: string | undefined = name === '(idle)' ? 'idle' : name === '(garbage collector)' ? 'garbage collector' : name === '(program)' ? 'V8/runtime (program)' : undefined;
  let core: string | undefined;
  for (let cur: number | undefined = id; !area && cur !== undefined; cur = parent.get(cur)) {
    const url = byId.get(cur)!.callFrame.url;
    if (!url) continue;
    area = AREAS.find(([, re]) => re.test(url))?.[0];
    if (!area && !core && url.startsWith('node:')) core = CORE_AREAS.find(([, re]) => re.test(url))?.[0] ?? 'node core: other';
  }
  bump(areaUs, area ?? core ?? 'other', us);
}

const pct = (us: number) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
const print = (title: string, m: Map<string, number>, filter: (k: string) => boolean = () => true) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, v] of [...m].filter(([k]) => filter(k)).sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${pct(v)}  ${k}\n`);
};
process.stdout.write(`profile ${((prof.endTime - prof.startTime) / 1e6).toFixed(1)} s wall, ${(total / 1e6).toFixed(1)} s sampled\n`);
print('self time by area (innermost matching frame)', areaUs);
print('self time by package/file', pkgSelf);
print('self time by function', fnSelf);
print('inclusive time, easel sources', inclusive, (k) => / (src|lib)\//.test(k));
print('inclusive time, everything', inclusive);
