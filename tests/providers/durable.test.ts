import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { callFingerprint, planJobs, runDurable } from '../../src/backends/http/durable.ts';
import type { DurableRun } from '../../src/backends/http/durable.ts';
import { BackendError } from '../../src/backends/image-backend.ts';
import { abortWith, context } from './helpers.ts';
import type { TestContext } from './helpers.ts';

type H = { id: string };
const isHandle = (v: unknown): v is H => !!v && typeof (v as H).id === 'string';

function harness(ctx: TestContext, over: Partial<DurableRun<H, string>> = {}) {
  const submitted: number[] = [];
  const canceled: string[] = [];
  const run: DurableRun<H, string> = {
    backend: 'b',
    ctx,
    fingerprint: 'fp',
    plan: [1, 1, 1],
    isHandle,
    submit: async (i) => {
      submitted.push(i);
      return { id: `t${i}` };
    },
    wait: async (h) => `img-${h.id}`,
    cancel: async (h) => {
      canceled.push(h.id);
    },
    ...over,
  };
  return { run, submitted, canceled };
}

describe('durable provider jobs', () => {
  test('plans and fingerprints', () => {
    assert.deepEqual(planJobs(10, 4), [4, 4, 2]);
    assert.deepEqual(planJobs(1, 4), [1]);
    assert.equal(callFingerprint(['a', 1]), callFingerprint(['a', 1]));
    assert.notEqual(callFingerprint(['a', 1]), callFingerprint(['a', 2]));
  });

  test('every handle is saved right after its submission, before any waiting', async () => {
    const ctx = context();
    const order: string[] = [];
    const { run } = harness(ctx, {
      submit: async (i) => {
        order.push(`submit ${i}`);
        return { id: `t${i}` };
      },
      wait: async (h) => {
        order.push(`wait ${h.id}`);
        return h.id;
      },
    });
    const origSave = ctx.saveState;
    ctx.saveState = async (s) => {
      order.push(`save ${(s as any).tasks.filter(Boolean).length}`);
      await origSave(s);
    };
    const out = await runDurable(run);
    assert.deepEqual(out.results, ['t0', 't1', 't2']);
    assert.deepEqual(order.slice(0, 6), ['submit 0', 'save 1', 'submit 1', 'save 2', 'submit 2', 'save 3']);
  });

  test('a partial saved state: saved handles are resumed, the rest submitted', async () => {
    const ctx = context({ savedState: { v: 1, backend: 'b', fingerprint: 'fp', tasks: [{ id: 'old0' }, null, { id: 'old2' }] } });
    const { run, submitted } = harness(ctx);
    const out = await runDurable(run);
    assert.deepEqual(submitted, [1]);
    assert.deepEqual(out.results, ['img-old0', 'img-t1', 'img-old2']);
    assert.equal(out.resumed, 2);
  });

  test('a state for another backend or call shape is ignored', async () => {
    for (const savedState of [
      { v: 1, backend: 'other', fingerprint: 'fp', tasks: [{ id: 'x' }] },
      { v: 1, backend: 'b', fingerprint: 'other', tasks: [{ id: 'x' }] },
      { prediction: 'legacy' },
    ]) {
      const { run, submitted } = harness(context({ savedState }), { plan: [1] });
      await runDurable(run);
      assert.deepEqual(submitted, [0]);
    }
  });

  test('a non-retryable submit failure cancels what was already submitted', async () => {
    const { run, canceled } = harness(context(), {
      submit: async (i) => {
        if (i === 2) throw new BackendError('bad input', { code: 'invalid_request' });
        return { id: `t${i}` };
      },
    });
    await assert.rejects(runDurable(run), /bad input/);
    assert.deepEqual(canceled, ['t0', 't1']);
  });

  test('a retryable submit failure keeps the submitted ones for the retry', async () => {
    const ctx = context();
    const { run, canceled } = harness(ctx, {
      submit: async (i) => {
        if (i === 1) throw new BackendError('429', { code: 'backend_unavailable', retryable: true });
        return { id: `t${i}` };
      },
    });
    await assert.rejects(runDurable(run), /429/);
    assert.deepEqual(canceled, []);
    assert.deepEqual((ctx.lastSaved() as any).tasks, [{ id: 't0' }, null, null]);
  });

  test('losing the lease while saving cancels nothing (the next owner resumes)', async () => {
    const ctx = context();
    let saves = 0;
    ctx.saveState = async () => {
      if (++saves === 2) throw Object.assign(new Error('lease_lost'), { reason: 'lease_lost' });
    };
    const { run, canceled } = harness(ctx);
    await assert.rejects(runDurable(run), /lease_lost/);
    assert.deepEqual(canceled, []);
  });

  test('a non-retryable wait failure cancels the others still running; a retryable one drops only the failed handle', async () => {
    const never = (signal: AbortSignal) => new Promise<string>((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }));
    const bad = harness(context(), {
      wait: async (h, _i, signal) => {
        if (h.id === 't1') throw new BackendError('moderated', { code: 'content_policy_violation' });
        return never(signal);
      },
    });
    await assert.rejects(runDurable(bad.run), /moderated/);
    assert.deepEqual(bad.canceled.sort(), ['t0', 't2']);

    const ctx = context();
    const flaky = harness(ctx, {
      wait: async (h, _i, signal) => {
        if (h.id === 't1') throw new BackendError('aborted upstream', { code: 'backend_unavailable', retryable: true });
        return never(signal);
      },
    });
    await assert.rejects(runDurable(flaky.run), /aborted upstream/);
    assert.deepEqual(flaky.canceled, []);
    assert.deepEqual((ctx.lastSaved() as any).tasks, [{ id: 't0' }, null, { id: 't2' }]);
  });

  test('abort: a cancel or timeout cancels remote jobs, a hand-back (lease lost) does not', async () => {
    for (const [reason, expected] of [['canceled', 3], ['timeout', 3], ['lease_lost', 0]] as const) {
      const ac = new AbortController();
      const ctx = context({ signal: ac.signal });
      let waiting = 0;
      const h = harness(ctx, {
        wait: (_h, _i, signal) =>
          new Promise<string>((_, reject) => {
            waiting++;
            signal.addEventListener('abort', () => reject(signal.reason), { once: true });
          }),
      });
      const p = runDurable(h.run);
      while (waiting < 3) await new Promise((r) => setTimeout(r, 1));
      abortWith(ac, reason);
      await assert.rejects(p, (err: BackendError) => err.code === 'aborted');
      assert.equal(h.canceled.length, expected, reason);
    }
  });
});
