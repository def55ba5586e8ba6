/**
 * The fp16 → fp32 conversion on a worker thread. It reads and rewrites the whole graph (SD-Turbo's
 * UNet is 1.7 GB) synchronously; on the main thread a server pulling its default model would stop
 * answering for as long as that takes.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { loadOptional } from '../core/optional-module.ts';

const KIND = 'easel-convert-fp16';

export function convertFp16ToFp32InThread(src: string, dest: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { kind: KIND, src, dest } });
    let failed: Error | undefined;
    worker.on('message', (m: { error?: string }) => {
      if (m.error) failed = new Error(m.error);
    });
    worker.once('error', (err) => (failed ??= err));
    worker.once('exit', (code) => (failed ? reject(failed) : code === 0 ? resolve() : reject(new Error(`conversion of ${src} ended with code ${code}`))));
  });
}

if (!isMainThread && (workerData as { kind?: string } | null)?.kind === KIND) {
  const { src, dest } = workerData as { src: string; dest: string };
  try {
    // Loaded here, in the thread: the ONNX protobuf schema (~3 MB of heap) has no use in the server's own isolate.
    const { convertFp16ToFp32 } = loadOptional<typeof import('./convert-fp16.ts')>('./convert-fp16.ts', import.meta.url);
    convertFp16ToFp32(src, dest);
  } catch (err) {
    parentPort!.postMessage({ error: `converting ${src}: ${(err as Error).message}` });
  }
}
