/**
 * The thread behind FileWriter (file-writer.ts): writes one file durably per message with plain
 * synchronous calls (mkdir, open, write, fsync, close, rename), so the event loop pays one message
 * round trip per image instead of six thread-pool round trips.
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

export interface WriteRequest {
  id: number;
  folder: string;
  tmp: string;
  target: string;
  data: Uint8Array;
}

export interface WriteAnswer {
  id: number;
  error?: { message: string; code?: string };
}

function write(req: WriteRequest): void {
  mkdirSync(req.folder, { recursive: true });
  const fd = openSync(req.tmp, 'wx', 0o644);
  let renamed = false;
  try {
    try {
      let off = 0;
      while (off < req.data.byteLength) off += writeSync(fd, req.data, off, req.data.byteLength - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(req.tmp, req.target);
    renamed = true;
  } finally {
    if (!renamed) {
      try {
        unlinkSync(req.tmp);
      } catch {
        // already gone
      }
    }
  }
}

parentPort!.on('message', (batch: WriteRequest[]) => {
  const answers: WriteAnswer[] = [];
  for (const req of batch) {
    try {
      write(req);
      answers.push({ id: req.id });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      answers.push({ id: req.id, error: { message: e.message, code: e.code } });
    }
  }
  parentPort!.postMessage(answers);
});
