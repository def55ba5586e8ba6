/**
 * Checkpoints a SQLite WAL from its own thread and connection (see startCheckpointer in
 * database.ts), so the connection that writes never stops to copy pages and fsync the database file.
 * PASSIVE checkpoints never wait for or block the writer or readers.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { openSqlite } from './sqlite-driver.ts';
import type { SqliteDriverName } from './sqlite-driver.ts';

const { file, intervalMs, driver } = workerData as { file: string; intervalMs: number; driver: SqliteDriverName };
const db = openSqlite(file, driver);
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
