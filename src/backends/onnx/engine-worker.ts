/**
 * Worker-thread entry of the engine: ONNX Runtime's session runs and the sampler's per-element
 * math stay off the API's event loop. Messages: `generate` (with a shared abort flag) answered by
 * `progress`* then `result` or `error`; `close` releases the sessions and ends the thread.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Engine } from './engine.ts';
import type { EngineOptions, EngineRequest } from './engine.ts';

type Inbound = { type: 'generate'; id: number; request: EngineRequest; abort: SharedArrayBuffer } | { type: 'close' };

const port = parentPort!;
const engine = new Engine({
  ...(workerData as Omit<EngineOptions, 'warn'>),
  warn: (message) => port.postMessage({ type: 'warn', message }),
});

port.on('message', (msg: Inbound) => {
  if (msg.type === 'close') {
    void engine.close().finally(() => port.close());
    return;
  }
  const { id, request } = msg;
  const flag = new Int32Array(msg.abort);
  engine
    .generate(request, {
      onProgress: (fraction) => port.postMessage({ type: 'progress', id, fraction }),
      isAborted: () => Atomics.load(flag, 0) !== 0,
    })
    .then(
      (result) => {
        const transfer = result.images.flatMap((img) => [img.rgb.buffer, ...(img.latents ? [img.latents.buffer] : [])]) as ArrayBuffer[];
        port.postMessage({ type: 'result', id, result }, transfer);
      },
      (err: Error) => port.postMessage({ type: 'error', id, name: err?.name ?? 'Error', message: err?.message ?? String(err) }),
    );
});
