/** The host pool on its own, with a scripted executor: placement, affinity, batching, failures, health. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { HostFailure, HostPool, generationBatchKey } from '../../src/backends/pool/host-pool.ts';
import type { BatchOutput, PoolBatch, PoolHost, PoolOptions, ProbeResult, RunIO } from '../../src/backends/pool/host-pool.ts';
import { BackendError } from '../../src/backends/image-backend.ts';
import type { BackendRequest } from '../../src/backends/image-backend.ts';
import { context, rejection, request, until } from './helpers.ts';

interface Call {
  host: string;
  batch: PoolBatch;
  io: RunIO;
  finish(out?: Partial<BatchOutput>): void;
  fail(err: unknown): void;
}

/** An executor whose calls stay open until the test finishes or fails them. */
class ScriptedExecutor {
  calls: Call[] = [];
  probes = new Map<string, ProbeResult | Error>();
  aborted: Call[] = [];
  auto: ((call: Call) => void) | undefined;

  run(host: PoolHost, batch: PoolBatch, io: RunIO): Promise<BatchOutput> {
    return new Promise((resolve, reject) => {
      const call: Call = {
        host: host.name,
        batch,
        io,
        finish: (out = {}) =>
          resolve({
            images: Array.from({ length: batch.total }, (_, i) => ({ data: new Uint8Array([i]), mediaType: 'image/png', seed: batch.seed })),
            warnings: [],
            ...out,
          }),
        fail: reject,
      };
      io.signal.addEventListener('abort', () => {
        this.aborted.push(call);
        reject(new BackendError('aborted', { code: 'aborted' }));
      });
      this.calls.push(call);
      this.auto?.(call);
    });
  }

  async probe(host: PoolHost): Promise<ProbeResult> {
    const p = this.probes.get(host.name) ?? { ok: true };
    if (p instanceof Error) throw p;
    return p;
  }
}

function makePool(opts: Partial<PoolOptions> = {}, hosts = ['a', 'b']) {
  const exec = new ScriptedExecutor();
  const pool = new HostPool(
    {
      backendName: 'gpu',
      hosts: hosts.map((name) => ({ name, url: `http://${name}`, maxConcurrent: 1 })),
      maxConcurrentPerHost: 1,
      maxBatchSize: 4,
      affinity: true,
      affinityMaxWaitSeconds: 30,
      maxQueueDepth: 10,
      maxHostRetries: 2,
      healthIntervalSeconds: 3600,
      unhealthyAfterFailures: 2,
      ...opts,
    },
    exec,
  );
  return { pool, exec };
}

const submit = (pool: HostPool, req: BackendRequest, ctx = context()) =>
  pool.submit(req, ctx, { checkpoint: req.model, batchKey: generationBatchKey(req, req.model) });

describe('HostPool', () => {
  test('spreads calls over free hosts and queues the rest', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1 });
    const results = [1, 2, 3].map((i) => submit(pool, request({ prompt: `p${i}` })));
    await until(() => exec.calls.length === 2);
    assert.deepEqual(exec.calls.map((c) => c.host).sort(), ['a', 'b']);
    assert.equal(pool.queueDepth, 1);
    exec.calls[0]!.finish();
    await until(() => exec.calls.length === 3);
    assert.equal(exec.calls[2]!.host, exec.calls[0]!.host, 'the freed host takes the waiting call');
    exec.calls[1]!.finish();
    exec.calls[2]!.finish();
    const done = await Promise.all(results);
    assert.equal(done.length, 3);
    await pool.close();
  });

  test("reports the host's run time, not the wait for a host, as the job's GPU time", async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1 }, ['a']);
    const first = submit(pool, request({ prompt: 'first' }));
    const second = submit(pool, request({ prompt: 'second' }));
    await until(() => exec.calls.length === 1);
    await new Promise((r) => setTimeout(r, 300)); // the second job waits for the only host
    exec.calls[0]!.finish();
    await until(() => exec.calls.length === 2);
    await new Promise((r) => setTimeout(r, 50));
    exec.calls[1]!.finish();
    const [a, b] = await Promise.all([first, second]);
    assert.ok((a.providerMetadata!.gpuMs as number) >= 250, 'the first ran ~300 ms');
    const gpu = b.providerMetadata!.gpuMs as number;
    assert.ok(gpu >= 40 && gpu < 250, `the second ran ~50 ms after waiting ~300 ms (got ${gpu})`);
    await pool.close();
  });

  test('coalesces compatible calls into one batch and splits the images back in order', async () => {
    const { pool, exec } = makePool({}, ['a']);
    const blocker = submit(pool, request({ prompt: 'blocker' }));
    await until(() => exec.calls.length === 1);
    const ctxs = [context('j1'), context('j2'), context('j3'), context('j4')];
    const same = [
      submit(pool, request({ n: 1 }), ctxs[0]),
      submit(pool, request({ prompt: 'other prompt' }), ctxs[1]),
      submit(pool, request({ n: 2 }), ctxs[2]),
      submit(pool, request({ n: 1 }), ctxs[3]),
    ];
    exec.calls[0]!.finish();
    await blocker;
    await until(() => exec.calls.length === 2);
    const batch = exec.calls[1]!.batch;
    assert.equal(batch.total, 4, 'j1 (1) + j3 (2) + j4 (1)');
    assert.deepEqual(batch.members.map((m) => [m.ctx.jobId, m.offset, m.n]), [['j1', 0, 1], ['j3', 1, 2], ['j4', 3, 1]]);
    assert.equal(batch.request.seed, batch.seed);
    assert.ok(batch.seedChosen);
    exec.calls[1]!.io.progress(0.5);
    exec.calls[1]!.finish();
    const [r1, , r3, r4] = await Promise.all([same[0], Promise.resolve(undefined), same[2], same[3]]);
    assert.deepEqual([...r1!.images[0]!.data], [0]);
    assert.deepEqual(r3!.images.map((i) => [...i.data]), [[1], [2]]);
    assert.deepEqual([...r4!.images[0]!.data], [3]);
    assert.deepEqual((r3!.providerMetadata as any).batch, { size: 4, jobs: 3, seed: batch.seed, firstIndex: 1 });
    assert.deepEqual(ctxs[0]!.progress, [0.5]);
    assert.deepEqual(ctxs[1]!.progress, [], 'the other prompt was not in the batch');
    await until(() => exec.calls.length === 3);
    exec.calls[2]!.finish();
    await same[1];
    await pool.close();
  });

  test('never batches calls with an explicit seed, or edits', async () => {
    const a = request({ seed: 7 });
    assert.equal(generationBatchKey(a, a.model), undefined);
    const e = request({ kind: 'edit', inputImages: [{ data: new Uint8Array([1]), mediaType: 'image/png' }] });
    assert.equal(generationBatchKey(e, e.model), undefined);
    assert.notEqual(generationBatchKey(request(), 'x'), generationBatchKey(request({ steps: 11 }), 'x'));
    assert.notEqual(generationBatchKey(request(), 'x'), generationBatchKey(request({ providerOptions: { sampler: 'heun' } }), 'x'));
    assert.equal(generationBatchKey(request({ providerOptions: { a: 1, b: 2 } }), 'x'), generationBatchKey(request({ providerOptions: { b: 2, a: 1 } }), 'x'));
  });

  test('affinity: a freed host takes work for its loaded checkpoint before older work for another', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1 });
    const first = [submit(pool, request({ model: 'ck1', prompt: 'x1' })), submit(pool, request({ model: 'ck2', prompt: 'y1' }))];
    await until(() => exec.calls.length === 2);
    const onA = exec.calls.find((c) => c.host === 'a')!;
    const loadedA = onA.batch.checkpoint;
    const other = loadedA === 'ck1' ? 'ck2' : 'ck1';
    const waiting = [submit(pool, request({ model: other, prompt: 'w1' })), submit(pool, request({ model: loadedA, prompt: 'w2' }))];
    onA.finish();
    await until(() => exec.calls.length === 3);
    assert.equal(exec.calls[2]!.host, 'a');
    assert.equal(exec.calls[2]!.batch.checkpoint, loadedA, 'host a kept its checkpoint');
    exec.calls.find((c) => c.host === 'b')!.finish();
    await until(() => exec.calls.length === 4);
    assert.equal(exec.calls[3]!.host, 'b');
    assert.equal(exec.calls[3]!.batch.checkpoint, other);
    exec.calls[2]!.finish();
    exec.calls[3]!.finish();
    await Promise.all([...first, ...waiting]);
    assert.equal(pool.stats().hosts.reduce((a, h) => a + h.switches, 0), 2, 'each host loaded one checkpoint once');
    await pool.close();
  });

  test('affinity never lets work younger by affinityMaxWait pass a call', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1, affinityMaxWaitSeconds: 0.05 }, ['a']);
    const p1 = submit(pool, request({ model: 'ck1', prompt: '1' }));
    await until(() => exec.calls.length === 1);
    const rare = submit(pool, request({ model: 'ck2', prompt: 'rare' }));
    // Work for the loaded checkpoint that came well after the rare call does not pass it.
    await new Promise((r) => setTimeout(r, 70));
    const more = submit(pool, request({ model: 'ck1', prompt: '2' }));
    exec.calls[0]!.finish();
    await until(() => exec.calls.length === 2);
    assert.equal(exec.calls[1]!.batch.checkpoint, 'ck2', 'the starved call went first');
    exec.calls[1]!.finish();
    await until(() => exec.calls.length === 3);
    exec.calls[2]!.finish();
    await Promise.all([p1, rare, more]);
    await pool.close();
  });

  test('affinity may pass over a call for work of about its age', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1, affinityMaxWaitSeconds: 0.05 }, ['a']);
    const p1 = submit(pool, request({ model: 'ck1', prompt: '1' }));
    await until(() => exec.calls.length === 1);
    const rare = submit(pool, request({ model: 'ck2', prompt: 'rare' }));
    const more = submit(pool, request({ model: 'ck1', prompt: '2' }));
    await new Promise((r) => setTimeout(r, 80));
    exec.calls[0]!.finish();
    await until(() => exec.calls.length === 2);
    assert.equal(exec.calls[1]!.batch.checkpoint, 'ck1', 'no switch for a call only just older');
    exec.calls[1]!.finish();
    await until(() => exec.calls.length === 3);
    exec.calls[2]!.finish();
    await Promise.all([p1, rare, more]);
    await pool.close();
  });

  test('queue-ahead: a host takes one more call once its running one is halfway', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1, queueAhead: 1 }, ['a']);
    const ps = [1, 2, 3].map((i) => submit(pool, request({ prompt: `${i}` })));
    await until(() => exec.calls.length === 1);
    exec.calls[0]!.io.progress(0.3);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(exec.calls.length, 1, 'not before halfway');
    exec.calls[0]!.io.progress(0.6);
    await until(() => exec.calls.length === 2);
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(exec.calls.length, 2, 'one running, one queued ahead, one waiting in the pool');
    exec.auto = (c) => c.finish();
    exec.calls.forEach((c) => c.finish());
    await Promise.all(ps);
    await pool.close();
  });

  test('without affinity, calls run strictly in arrival order', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1, affinity: false }, ['a']);
    const ps = [submit(pool, request({ model: 'ck1', prompt: '1' }))];
    await until(() => exec.calls.length === 1);
    ps.push(submit(pool, request({ model: 'ck2', prompt: '2' })), submit(pool, request({ model: 'ck1', prompt: '3' })));
    exec.calls[0]!.finish();
    await until(() => exec.calls.length === 2);
    assert.equal(exec.calls[1]!.batch.request.prompt, '2');
    exec.calls[1]!.finish();
    await until(() => exec.calls.length === 3);
    exec.calls[2]!.finish();
    await Promise.all(ps);
    await pool.close();
  });

  test('a waiting call that is aborted leaves the queue', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1 }, ['a']);
    const p1 = submit(pool, request({ prompt: '1' }));
    await until(() => exec.calls.length === 1);
    const ctx = context('waiting');
    const p2 = submit(pool, request({ prompt: '2' }), ctx);
    assert.equal(pool.queueDepth, 1);
    ctx.controller.abort();
    const err = await rejection(p2);
    assert.equal(err.code, 'aborted');
    assert.equal(pool.queueDepth, 0);
    exec.calls[0]!.finish();
    await p1;
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(exec.calls.length, 1, 'the aborted call never ran');
    await pool.close();
  });

  test('aborting one member of a running batch answers it at once; aborting all cancels the host call', async () => {
    const { pool, exec } = makePool({}, ['a']);
    const blocker = submit(pool, request({ prompt: 'blocker' }));
    await until(() => exec.calls.length === 1);
    const c1 = context('m1');
    const c2 = context('m2');
    const p1 = submit(pool, request(), c1);
    const p2 = submit(pool, request(), c2);
    exec.calls[0]!.finish();
    await blocker;
    await until(() => exec.calls.length === 2);
    assert.equal(exec.calls[1]!.batch.total, 2);
    c1.controller.abort();
    assert.equal((await rejection(p1)).code, 'aborted');
    assert.equal(exec.aborted.length, 0, 'the batch goes on for m2');
    c2.controller.abort();
    assert.equal((await rejection(p2)).code, 'aborted');
    await until(() => exec.aborted.length === 1);
    await pool.close();
  });

  test('a host failure moves the call to another host; only that attempt delivers', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1 });
    const ctx = context('j');
    const p = submit(pool, request(), ctx);
    await until(() => exec.calls.length === 1);
    const first = exec.calls[0]!;
    first.fail(new HostFailure(`host ${first.host} is unreachable`));
    await until(() => exec.calls.length === 2);
    const second = exec.calls[1]!;
    assert.notEqual(second.host, first.host, 'retried on the other host');
    assert.equal(second.batch.attempt, 1);
    assert.ok(first.io.signal.aborted, 'the failed attempt was told to stop');
    // The dead attempt can no longer deliver anything.
    first.finish();
    second.finish({ images: [{ data: new Uint8Array([42]), mediaType: 'image/png' }] });
    const result = await p;
    assert.deepEqual([...result.images[0]!.data], [42]);
    const stats = pool.stats();
    assert.equal(stats.hosts.find((h) => h.name === first.host)!.status, 'down');
    assert.equal(stats.hostRetries, 1);
    await pool.close();
  });

  test('host retries are bounded; the job then fails retryable, naming every attempt', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1, maxHostRetries: 1 });
    exec.auto = (call) => call.fail(new HostFailure(`host ${call.host} answered 500`, { hostDown: false }));
    const err = await rejection(submit(pool, request()));
    assert.equal(err.retryable, true);
    assert.equal(err.code, 'backend_unavailable');
    assert.match(err.message, /2 host attempt/);
    assert.equal(exec.calls.length, 2);
    await pool.close();
  });

  test('a request error fails every member and keeps the host', async () => {
    const { pool, exec } = makePool({}, ['a']);
    exec.auto = (call) => call.fail(new BackendError('node 3 (KSampler): Value not in list', { code: 'invalid_request' }));
    const err = await rejection(submit(pool, request()));
    assert.equal(err.code, 'invalid_request');
    assert.notEqual(pool.stats().hosts[0]!.status, 'down');
    await pool.close();
  });

  test('a host failing probes leaves the pool, is probed until it returns, and rejoins', async () => {
    const { pool, exec } = makePool({ healthIntervalSeconds: 0.02, maxBatchSize: 1 });
    exec.probes.set('b', new Error('ECONNREFUSED'));
    await pool.probeAll();
    await until(() => pool.stats().hosts.find((h) => h.name === 'b')!.status === 'down', 2000, 'b down');
    const h = await pool.health();
    assert.equal(h.ok, true);
    assert.match(h.message!, /1\/2 hosts up/);
    assert.match(h.message!, /b \(ECONNREFUSED\)/);
    const ps = [submit(pool, request({ prompt: '1' })), submit(pool, request({ prompt: '2' }))];
    await until(() => exec.calls.length === 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(exec.calls.length, 1, 'nothing goes to the down host');
    exec.probes.delete('b');
    await until(() => exec.calls.length === 2, 2000, 'b rejoined and took work');
    assert.equal(exec.calls[1]!.host, 'b');
    exec.calls.forEach((c) => c.finish());
    await Promise.all(ps);
    await pool.close();
  });

  test('no host up: health is not ok', async () => {
    const { pool, exec } = makePool();
    exec.probes.set('a', new Error('down'));
    exec.probes.set('b', new Error('down'));
    const h = await pool.health();
    assert.equal(h.ok, false);
    await pool.close();
  });

  test('past maxQueueDepth, health reports overload', async () => {
    const { pool, exec } = makePool({ maxQueueDepth: 2, maxBatchSize: 1 }, ['a']);
    const ps = [0, 1, 2, 3].map((i) => submit(pool, request({ prompt: `p${i}` })));
    await until(() => exec.calls.length === 1);
    const h = await pool.health();
    assert.equal(h.ok, true);
    assert.equal(h.overloaded, true);
    assert.match(h.message!, /overloaded: 3 jobs waiting for a GPU host \(limit 2\)/);
    exec.auto = (c) => c.finish();
    exec.calls[0]!.finish();
    await Promise.all(ps);
    assert.equal((await pool.health()).overloaded, undefined);
    await pool.close();
  });

  test('hosts without the checkpoint are passed over; lacks() reports a checkpoint nobody has', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1 });
    exec.probes.set('a', { ok: true, checkpoints: ['ck1'] });
    exec.probes.set('b', { ok: true, checkpoints: ['ck2'] });
    await pool.probeAll();
    assert.equal(pool.lacks('ck3'), true);
    assert.equal(pool.lacks('ck2'), false);
    const p = submit(pool, request({ model: 'ck2' }));
    await until(() => exec.calls.length === 1);
    assert.equal(exec.calls[0]!.host, 'b');
    exec.calls[0]!.finish();
    await p;
    await pool.close();
  });

  test('release() frees the host slot before the outputs are fetched', async () => {
    const { pool, exec } = makePool({ maxBatchSize: 1 }, ['a']);
    const p1 = submit(pool, request({ prompt: '1' }));
    const p2 = submit(pool, request({ prompt: '2' }));
    await until(() => exec.calls.length === 1);
    exec.calls[0]!.io.release();
    await until(() => exec.calls.length === 2);
    exec.calls.forEach((c) => c.finish());
    await Promise.all([p1, p2]);
    await pool.close();
  });
});
