/**
 * Checkpoints a SQLite WAL from its own thread and connection (see startCheckpointer in
 * database.ts), so the connection that writes never stops to copy pages and fsync the database file.
 * PASSIVE checkpoints never wait for or block the writer or readers.
 */
import Database from 'libsql';
import { parentPort, workerData } from 'node:worker_threads';

const { file, intervalMs } = workerData as { file: string; intervalMs: number };
const db = new Database(file);
db.exec('PRAGMA busy_timeout = 1000');

function checkpoint(): void {
  try {
    db.exec('PRAGMA wal_checkpoint(PASSIVE)');
  } catch {
    // busy or closing: the next round tries again
  }
}

const timer = setInterval(checkpoint, intervalMs);
parentPort!.on('message', (msg: string) => {
  if (msg !== 'stop') return;
  clearInterval(timer);
  checkpoint();
  db.close();
  parentPort!.postMessage('stopped');
});
