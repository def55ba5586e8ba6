import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TurnBatcher } from '../../src/core/turn-batcher.ts';

function recorder(fail?: (items: number[]) => boolean) {
  const groups: number[][] = [];
  const batcher = new TurnBatcher<number, number>({
    key: (n) => String(n),
    max: 5,
    run: async (items) => {
      groups.push([...items]);
      if (fail?.(items)) throw new Error(`bad group ${items.join(',')}`);
      return items.map((n) => n * 10);
    },
  });
  return { groups, batcher };
}

test('calls made in one turn run as one group, each with its own result', async () => {
  const { groups, batcher } = recorder();
  const results = await Promise.all([1, 2, 3].map((n) => batcher.call(n)));
  assert.deepEqual(results, [10, 20, 30]);
  assert.deepEqual(groups, [[1, 2, 3]]);
  // The next turn starts a new group.
  assert.equal(await batcher.call(4), 40);
  assert.deepEqual(groups, [[1, 2, 3], [4]]);
});

test('a full group runs at once and the rest start another', async () => {
  const { groups, batcher } = recorder();
  const results = await Promise.all([1, 2, 3, 4, 5, 6, 7].map((n) => batcher.call(n)));
  assert.deepEqual(results, [10, 20, 30, 40, 50, 60, 70]);
  assert.deepEqual(groups, [[1, 2, 3, 4, 5], [6, 7]]);
});

test('when a group fails, each call is retried alone and only the bad one fails', async () => {
  const { groups, batcher } = recorder((items) => items.includes(2));
  const results = await Promise.allSettled([1, 2, 3].map((n) => batcher.call(n)));
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.deepEqual((results[0] as PromiseFulfilledResult<number>).value, 10);
  assert.match(String((results[1] as PromiseRejectedResult).reason), /bad group 2$/);
  assert.deepEqual(groups, [[1, 2, 3], [1], [2], [3]]);
});

test('a second call for the same key runs alone, never twice in one group', async () => {
  const { groups, batcher } = recorder();
  const results = await Promise.all([1, 2, 1].map((n) => batcher.call(n)));
  assert.deepEqual(results, [10, 20, 10]);
  assert.deepEqual(groups.map((g) => g.join(',')).sort(), ['1', '1,2']);
});
