/**
 * `node bench/promotion.ts`: how much of each backend call's garbage lives long enough to be promoted
 * to V8's old generation, for the OpenAI backend's two layers: the official `openai` SDK over easel's
 * pooled fetch (what the openai backend does), and the pooled fetch alone. 200 calls/s for 8 s against
 * the loopback stand-in (tests/support/openai-standin.ts, same process), each mode in a child process
 * run with --trace-gc-nvp; prints the mean bytes promoted per scavenge, the median scavenge pause and
 * the calls' p50 latency.
 *
 * Why: in the sync benchmark the easel process promoted 2.5–4.5 MB per scavenge (every ~0.7 s) although
 * a request lives a few ms; scavenges took 12–17 ms and the promoted garbage drove mark-compacts of
 * 16–21 ms, the stalls behind the p99. This isolates the part that comes from the SDK.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { createPooledFetch } from '../src/net/pooled-fetch.ts';
import { startOpenAIStandin, DEFAULT_STANDIN_KEY } from '../tests/support/openai-standin.ts';

const mode = process.argv[2];
if (mode === 'sdk' || mode === 'fetch') {
  const standin = await startOpenAIStandin({ strict: false });
  const fetch = createPooledFetch();
  const client = new OpenAI({ apiKey: DEFAULT_STANDIN_KEY, baseURL: standin.url, maxRetries: 0, fetch });
  const params = { prompt: 'a lighthouse', model: 'dall-e-2', response_format: 'b64_json', size: '256x256' } as const;
  const body = JSON.stringify(params);
  const latencies: number[] = [];
  const call = async (): Promise<string> => {
    if (mode === 'sdk') return (await client.images.generate(params)).data![0]!.b64_json!;
    const res = await fetch(`${standin.url}/images/generations`, {
      method: 'POST',
      headers: { authorization: `Bearer ${DEFAULT_STANDIN_KEY}`, 'content-type': 'application/json' },
      body,
    });
    return ((await res.json()) as { data: { b64_json: string }[] }).data[0]!.b64_json;
  };
  const timer = setInterval(() => {
    const t0 = performance.now();
    void call().then((b64) => {
      Buffer.from(b64, 'base64');
      latencies.push(performance.now() - t0);
    });
  }, 5);
  setTimeout(async () => {
    clearInterval(timer);
    latencies.sort((a, b) => a - b);
    process.stdout.write(`\nRESULT ${latencies.length} ${latencies[latencies.length >> 1]}\n`);
    await standin.close();
    fetch.close();
    process.exit(0);
  }, 8_000);
} else {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? Number.NaN;
  console.log('mode    calls  p50 ms  scavenges  promoted KB/scavenge (mean)  scavenge pause ms (median)');
  for (const m of ['sdk', 'fetch']) {
    const run = spawnSync(process.execPath, ['--trace-gc-nvp', fileURLToPath(import.meta.url), m], { encoding: 'utf8', maxBuffer: 64 << 20 });
    const scavenges = run.stdout.split('\n').filter((l) => l.includes('gc=s '));
    // Skip the first second (start-up and JIT warm-up).
    const steady = scavenges.slice(Math.min(3, scavenges.length - 1));
    const field = (l: string, name: string) => Number(new RegExp(`\\b${name}=([0-9.]+)`).exec(l)?.[1] ?? Number.NaN);
    const [, calls, p50] = /RESULT (\d+) ([0-9.]+)/.exec(run.stdout) ?? [];
    console.log(
      [m.padEnd(6), String(calls).padStart(6), Number(p50).toFixed(2).padStart(7), String(scavenges.length).padStart(10),
        (steady.reduce((a, l) => a + field(l, 'promoted'), 0) / steady.length / 1024).toFixed(0).padStart(28),
        median(steady.map((l) => field(l, 'pause'))).toFixed(1).padStart(27)].join(' '),
    );
  }
}
