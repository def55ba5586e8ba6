/**
 * The zero-latency OpenAI stand-in (tests/support/openai-standin.ts) in a process of its own, so its
 * CPU is neither the load generator's nor easel's. Prints `{"url": ...}` once listening. Answers a
 * `count` line on stdin with `{"count": N}`: how many image requests it has answered, so the benchmark
 * can check that every job really reached the backend (no cache answered in its place). Exits when its
 * stdin closes (the benchmark ended or died) or on SIGTERM.
 */
import { createInterface } from 'node:readline';
import { startOpenAIStandin } from '../tests/support/openai-standin.ts';

const imageSize = Number(process.env.BENCH_IMAGE_SIZE ?? 64);
const standin = await startOpenAIStandin({ strict: false, logRequests: true, imageSize });
process.stdout.write(`${JSON.stringify({ url: standin.url, port: standin.port, pngBytes: standin.png.length })}\n`);

// The request log is only counted, then emptied, so it never grows.
let count = 0;
const drain = () => {
  for (const r of standin.requests) if (r.path.startsWith('/v1/images/')) count++;
  standin.requests.length = 0;
};
setInterval(drain, 200).unref();

const quit = () => {
  void standin.close().finally(() => process.exit(0));
};
process.once('SIGTERM', quit);
const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  if (line.trim() === 'count') {
    drain();
    process.stdout.write(`${JSON.stringify({ count })}\n`);
  }
});
lines.on('close', quit);
