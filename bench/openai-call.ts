/**
 * `npm run bench:openai-call`: the CPU one call to an OpenAI-compatible endpoint costs easel's event
 * loop through the official SDK (as the `openai` backend makes it: `images.generate(...).asResponse()`,
 * then the JSON read), against the same call made with the pooled fetch alone (src/net/pooled-fetch.ts,
 * which the SDK is handed). The stand-in (tests/support/openai-standin.ts, a 64×64 PNG as b64_json)
 * runs in a process of its own, so process.cpuUsage() counts only this side. Rounds alternate and
 * each is warmed first; 10 calls in flight.
 *
 *   npm run bench:openai-call [-- --calls 3000 --rounds 4]
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';
import { createPooledFetch } from '../src/net/pooled-fetch.ts';

const { values: argv } = parseArgs({ options: { calls: { type: 'string', default: '3000' }, rounds: { type: 'string', default: '4' } } });
const calls = Number(argv.calls);
const rounds = Number(argv.rounds);

const child = spawn(process.execPath, [new URL('./standin-process.ts', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
const first = await new Promise<string>((resolve) => createInterface({ input: child.stdout! }).once('line', resolve));
const base = (JSON.parse(first) as { url: string }).url.replace(/\/+$/, '');
const v1 = base.endsWith('/v1') ? base : `${base}/v1`;

const fetch = createPooledFetch();
const client = new OpenAI({ apiKey: 'sk-standin', baseURL: v1, maxRetries: 2, timeout: 300_000, fetch });
const body = { model: 'dall-e-2', prompt: 'a cat', size: '64x64', response_format: 'b64_json', n: 1 } as const;
const viaSdk = async () => (await client.images.generate(body).asResponse()).json();
const viaFetch = async () =>
  (
    await fetch(`${v1}/images/generations`, {
      method: 'POST',
      headers: { authorization: 'Bearer sk-standin', 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(300_000),
    })
  ).json();

const results: Record<string, number[]> = { sdk: [], fetch: [] };
for (let r = 0; r < rounds; r++) {
  for (const [name, call] of [['sdk', viaSdk], ['fetch', viaFetch]] as const) {
    for (let i = 0; i < 300; i++) await call();
    const c0 = process.cpuUsage();
    for (let i = 0; i < calls; i += 10) await Promise.all(Array.from({ length: 10 }, call));
    const c = process.cpuUsage(c0);
    results[name]!.push((c.user + c.system) / calls);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(', ');
console.log(`CPU per call (µs), ${rounds} alternating rounds of ${calls} calls, 10 in flight`);
console.log(`  openai SDK:          median ${median(results.sdk!).toFixed(0)}  (${fmt(results.sdk!)})`);
console.log(`  pooled fetch alone:  median ${median(results.fetch!).toFixed(0)}  (${fmt(results.fetch!)})`);
console.log(`  the SDK adds ${(median(results.sdk!) - median(results.fetch!)).toFixed(0)} µs per call`);
child.kill('SIGTERM');
process.exit(0);
