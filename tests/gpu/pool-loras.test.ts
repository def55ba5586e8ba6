/** The host pool with LoRA sets and warm-up, with a scripted executor: batching, affinity, placement, warming. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { HostPool, generationBatchKey } from '../../src/backends/pool/host-pool.ts';
import type { BatchOutput, PoolBatch, PoolExecutor, PoolHost, PoolOptions, ProbeResult, RunIO } from '../../src/backends/pool/host-pool.ts';
import { loraSetKey } from '../../src/backends/model-spec.ts';
import type { ResolvedLora } from '../../src/backends/model-spec.ts';
import type { BackendRequest } from '../../src/backends/image-backend.ts';
import { context, request, until } from './helpers.ts';

interface Call {
  host: string;
  batch: PoolBatch;
  finish(): void;
}

class Scripted implements PoolExecutor {
  calls: Call[] = [];
  probes = new Map<string, ProbeResult>();
  warmups: Array<{ host: string; done(): void }> = [];
  withWarmup = false;

  run(host: PoolHost, batch: PoolBatch, _io: RunIO): Promise<BatchOutput> {
    return new Promise((resolve) => {
      this.calls.push({
        host: host.name,
        batch,
        finish: () => resolve({ images: Array.from({ length: batch.total }, (_, i) => ({ data: new Uint8Array([i]), mediaType: 'image/png' })), warnings: [] }),
      });
    });
  }

  async probe(host: PoolHost): Promise<ProbeResult> {
    return this.probes.get(host.name) ?? { ok: true };
  }
}

function makePool(exec: Scripted, opts: Partial<PoolOptions> = {}, hosts = ['a', 'b']) {
  const executor: PoolExecutor = exec.withWarmup
    ? { run: (h, b, io) => exec.run(h, b, io), probe: (h) => exec.probe(h), warmup: (h) => new Promise<void>((done) => exec.warmups.push({ host: h.name, done })) }
    : exec;
  return new HostPool(
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
      unhealthyAfterFailures: 1,
      ...opts,
    },
    executor,
  );
}

const lora = (ref: string, weight = 1): ResolvedLora => ({ name: ref, ref, weight });

function submit(pool: HostPool, req: BackendRequest) {
  return pool.submit(req, context(), { checkpoint: req.model, batchKey: generationBatchKey(req, req.model), loraSet: loraSetKey(req.loras), loraRefs: (req.loras ?? []).map((l) => l.ref) });
}

describe('HostPool with LoRA sets', () => {
  test('batching never mixes LoRA sets (nor weights): equal sets coalesce, others wait for their own call', async () => {
    const exec = new Scripted();
    const pool = makePool(exec, {}, ['a']);
    const first = submit(pool, request({ prompt: 'busy' }));
    await until(() => exec.calls.length === 1);
    const waiting = [
      submit(pool, request({ prompt: 'p', loras: [lora('style.safetensors', 0.8)] })),
      submit(pool, request({ prompt: 'p', loras: [lora('other.safetensors', 0.8)] })),
      submit(pool, request({ prompt: 'p', loras: [lora('style.safetensors', 0.8)] })),
      submit(pool, request({ prompt: 'p', loras: [lora('style.safetensors', 0.5)] })),
      submit(pool, request({ prompt: 'p' })),
    ];
    exec.calls[0]!.finish();
    await first;
    for (let i = 1; i <= 4; i++) {
      await until(() => exec.calls.length === i + 1, 5000, `call ${i + 1}`);
      exec.calls[i]!.finish();
    }
    await Promise.all(waiting);
    const sets = exec.calls.slice(1).map((c) => ({ loras: loraSetKey(c.batch.request.loras), jobs: c.batch.members.length }));
    assert.deepEqual(sets, [
      { loras: 'style.safetensors@0.8', jobs: 2 },
      { loras: 'other.safetensors@0.8', jobs: 1 },
      { loras: 'style.safetensors@0.5', jobs: 1 },
      { loras: '', jobs: 1 },
    ]);
    for (const c of exec.calls.slice(1)) {
      const keys = new Set(c.batch.members.map((m) => loraSetKey(m.request.loras)));
      assert.equal(keys.size, 1, 'one LoRA set per host call');
    }
    await pool.close();
  });

  test('affinity: a host that last ran the LoRA set is preferred over an equally free one', async () => {
    const exec = new Scripted();
    const pool = makePool(exec, { maxBatchSize: 1 });
    // a runs set X, b runs set Y (same checkpoint on both).
    const x = submit(pool, request({ loras: [lora('x.safetensors')] }));
    const y = submit(pool, request({ loras: [lora('y.safetensors')] }));
    await until(() => exec.calls.length === 2);
    const hostOf = (ref: string) => exec.calls.find((c) => c.batch.request.loras?.[0]?.ref === ref)!.host;
    const xHost = hostOf('x.safetensors');
    const yHost = hostOf('y.safetensors');
    assert.notEqual(xHost, yHost);
    exec.calls.forEach((c) => c.finish());
    await Promise.all([x, y]);
    for (const [ref, host] of [['y.safetensors', yHost], ['x.safetensors', xHost], ['y.safetensors', yHost]] as const) {
      const p = submit(pool, request({ loras: [lora(ref)] }));
      await until(() => exec.calls.at(-1)!.batch.request.loras?.[0]?.ref === ref && exec.calls.length > 2);
      const call = exec.calls.at(-1)!;
      assert.equal(call.host, host, `set ${ref} goes back to ${host}`);
      call.finish();
      await p;
    }
    assert.equal(pool.stats().hosts.find((h) => h.name === yHost)!.loadedLoras, 'y.safetensors@1');
    await pool.close();
  });

  test('a host that listed its LoRAs without the ones a call needs is passed over; none having them is told', async () => {
    const exec = new Scripted();
    exec.probes.set('a', { ok: true, loras: ['common.safetensors'] });
    exec.probes.set('b', { ok: true, loras: ['common.safetensors', 'rare.safetensors'] });
    const pool = makePool(exec, { maxBatchSize: 1 });
    await pool.probeAll();
    assert.deepEqual(pool.loraFiles(), ['common.safetensors', 'rare.safetensors']);
    assert.equal(pool.lacksLoras(['rare.safetensors']), false);
    assert.equal(pool.lacksLoras(['missing.safetensors']), true);
    const p = submit(pool, request({ loras: [lora('rare.safetensors')] }));
    await until(() => exec.calls.length === 1);
    assert.equal(exec.calls[0]!.host, 'b');
    exec.calls[0]!.finish();
    await p;
    await pool.close();
  });
});

describe('HostPool warm-up', () => {
  test('a host is warming (takes no work, health says so) until its warm-up ends; then it takes the waiting call', async () => {
    const exec = new Scripted();
    exec.withWarmup = true;
    const pool = makePool(exec, {}, ['a']);
    const health = pool.health();
    const waiting = submit(pool, request());
    await until(() => exec.warmups.length === 1);
    const h = await health;
    assert.equal(h.ok, false);
    assert.equal(h.warming, true);
    assert.match(h.message!, /warming up: a/);
    assert.equal(pool.stats().hosts[0]!.status, 'warming');
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(exec.calls.length, 0, 'no work while warming');
    exec.warmups[0]!.done();
    await until(() => exec.calls.length === 1);
    assert.equal(pool.stats().hosts[0]!.status, 'up');
    const after = await pool.health();
    assert.equal(after.ok, true);
    assert.equal(after.warming, undefined);
    exec.calls[0]!.finish();
    await waiting;
    await pool.close();
  });

  test('a host that rejoins after being down warms again', async () => {
    const exec = new Scripted();
    exec.withWarmup = true;
    const pool = makePool(exec, {}, ['a']);
    await pool.probeAll();
    await until(() => exec.warmups.length === 1);
    exec.warmups[0]!.done();
    await until(() => pool.stats().hosts[0]!.status === 'up');
    exec.probes.set('a', { ok: false, message: 'gone' });
    await pool.probeAll();
    assert.equal(pool.stats().hosts[0]!.status, 'down');
    exec.probes.delete('a');
    await pool.probeAll();
    assert.equal(pool.stats().hosts[0]!.status, 'warming');
    assert.equal(exec.warmups.length, 2);
    exec.warmups[1]!.done();
    await until(() => pool.stats().hosts[0]!.status === 'up');
    await pool.close();
  });
});
