/**
 * The `fairness` config read per key (src/fairness/policy.ts): no I/O.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { fairnessConfigSchema } from '../../src/fairness/config.ts';
import { FairPolicy, NO_KEY } from '../../src/fairness/policy.ts';
import { loadConfig } from '../../src/config/load.ts';

const policy = (cfg: unknown) => new FairPolicy(fairnessConfigSchema.parse(cfg));

describe('fairness policy', () => {
  test('defaults: weight 1, no limits, fair order on', () => {
    const p = policy({});
    assert.equal(p.enabled, true);
    assert.equal(p.limitsRunning, false);
    assert.equal(p.limitsQueued, false);
    assert.deepEqual(p.settingsFor({ id: 'key_1', name: 'a' }), { weight: 1, maxRunning: null, maxQueued: null, group: null, groupMaxRunning: null, groupMaxQueued: null, groupKeys: [] });
    assert.deepEqual(p.shareOf(NO_KEY), { weight: 1, maxRunning: null, group: null, groupMaxRunning: null });
  });

  test('a key entry by id wins over one by name; what it leaves out comes from defaults; null lifts a default limit', () => {
    const p = policy({
      defaults: { maxRunning: 4, maxQueued: 100 },
      keys: { 'ci-bot': { weight: 3, maxQueued: 10 }, key_ci: { weight: 5 }, vip: { maxRunning: null } },
    });
    assert.equal(p.limitsRunning, true);
    assert.deepEqual(p.settingsFor({ id: 'key_other', name: 'ci-bot' }), { weight: 3, maxRunning: 4, maxQueued: 10, group: null, groupMaxRunning: null, groupMaxQueued: null, groupKeys: [] });
    assert.equal(p.settingsFor({ id: 'key_ci', name: 'ci-bot' }).weight, 5, 'by id first');
    assert.equal(p.settingsFor({ id: 'key_ci', name: 'ci-bot' }).maxQueued, 100, 'the id entry does not set it: the default');
    assert.equal(p.settingsFor({ id: 'key_v', name: 'vip' }).maxRunning, null);
  });

  test('names that are properties of every object are not entries', () => {
    const p = policy({ defaults: { maxQueued: 7 }, keys: { real: { maxQueued: 1 } } });
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
      const s = p.settingsFor({ id: `key_${name}`, name });
      assert.equal(s.maxQueued, 7, name);
      assert.equal(s.weight, 1, name);
      assert.equal(s.group, null, name);
    }
  });

  test('groups: membership by name or id, limits of the group beside the key’s own', () => {
    const p = policy({ groups: { studio: { keys: ['designer', 'key_mkt'], maxRunning: 2, maxQueued: 50 } } });
    const designer = p.settingsFor({ id: 'key_d', name: 'designer' });
    assert.equal(designer.group, 'studio');
    assert.equal(designer.groupMaxRunning, 2);
    assert.equal(designer.groupMaxQueued, 50);
    assert.deepEqual(designer.groupKeys, ['designer', 'key_mkt']);
    assert.equal(p.settingsFor({ id: 'key_mkt', name: 'marketing' }).group, 'studio');
    assert.equal(p.settingsFor({ id: 'key_x', name: 'outsider' }).group, null);
    assert.deepEqual(p.shareOf('key_mkt'), { weight: 1, maxRunning: null, group: 'studio', groupMaxRunning: 2 });
  });

  test('queue messages carry only ids: names seen at admission (or at start) apply to them', () => {
    const p = policy({ keys: { 'ci-bot': { weight: 4, maxRunning: 1 } } });
    assert.equal(p.shareOf('key_ci').weight, 1, 'unknown name: looked up by id alone');
    p.remember({ id: 'key_ci', name: 'ci-bot' });
    assert.deepEqual(p.shareOf('key_ci'), { weight: 4, maxRunning: 1, group: null, groupMaxRunning: null });
  });

  test('enabled: false turns off every limit (first come, first served)', () => {
    const p = policy({ enabled: false, defaults: { maxRunning: 1, maxQueued: 1 }, groups: { g: { keys: ['a'], maxRunning: 1 } } });
    assert.equal(p.limitsRunning, false);
    assert.equal(p.limitsQueued, false);
    const s = p.settingsFor({ id: 'key_a', name: 'a' });
    assert.equal(s.maxRunning, null);
    assert.equal(s.maxQueued, null);
    assert.equal(s.groupMaxRunning, null);
  });

  test('the config names a bad key: a key in two groups, a zero limit, an unknown field', () => {
    const bad = (fairness: unknown, path: RegExp) => assert.throws(() => loadConfig({ env: {}, overrides: { fairness } }), path);
    bad({ groups: { a: { keys: ['x'] }, b: { keys: ['y', 'x'] } } }, /fairness\.groups\.b\.keys\.1.*already in group "a"/);
    bad({ defaults: { maxQueued: 0 } }, /fairness\.defaults\.maxQueued/);
    bad({ keys: { k: { weight: 0 } } }, /fairness\.keys\.k\.weight/);
    bad({ keys: { k: { maxRunnning: 2 } } }, /fairness\.keys\.k/);
    assert.equal(loadConfig({ env: { EASEL__FAIRNESS__ENABLED: 'false' } }).fairness.enabled, false, 'the switch from the environment');
  });
});
