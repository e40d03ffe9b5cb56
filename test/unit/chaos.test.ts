/** The chaos schedule's draw and its checker: pure rules, no cluster. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkConsumer } from '../../bench/chaos/checker.js';
import { nextStep, possibleSteps, prng, type World } from '../../bench/chaos/schedule.js';

const world: World = {
  primary: 'primary',
  standbys: ['standby', 'standby2'],
  out: [],
  cutStreams: new Set(),
  cutSql: new Set(),
  stopped: new Set(),
  settingEdited: false,
};

describe('chaos: the schedule', () => {
  it('a seed replays the same draw; another seed draws another', () => {
    const draw = (seed: number) => {
      const rand = prng(seed);
      return Array.from({ length: 30 }, () => nextStep(rand, world));
    };
    assert.deepEqual(draw(7), draw(7));
    assert.notDeepEqual(draw(7), draw(8));
  });

  it('draws only what the cluster allows: no restore of what is not cut, one standby kept up, rejoin only what is out', () => {
    const kinds = (w: World) => new Set(possibleSteps(w).map((s) => s.kind));
    const fresh = kinds(world);
    for (const kind of [
      'restore_stream',
      'restore_sql',
      'start_standby',
      'restore_setting',
      'rejoin',
      'advance_physical',
    ] as const) {
      assert.equal(fresh.has(kind), false, kind);
    }
    const oneLeft = possibleSteps({ ...world, stopped: new Set(['standby2']) });
    assert.equal(
      oneLeft.some((s) => s.kind === 'stop_standby'),
      false,
    );
    const out = possibleSteps({ ...world, out: ['primary2'] }).filter((s) => s.kind === 'rejoin');
    assert.deepEqual(
      out.map((s) => s.node),
      ['primary2'],
    );
  });
});

describe('chaos: the checker', () => {
  const base = {
    consumer: 'c',
    primaryAtPromotion: new Set([1, 2, 3]),
    heldAtPromotion: new Set([1, 2, 3]),
    committedAfter: [4, 5],
    receivedAfter: new Map([
      [4, 1],
      [5, 1],
    ]),
    error: null,
  };
  it('every row of the new timeline once, nothing ahead: no violation', () => {
    assert.equal(checkConsumer(base).violation, null);
    assert.equal(
      checkConsumer({ ...base, position: { resume: 0x1001n, endOfWal: 0x1000n } }).violation,
      null,
      '"last byte + 1" is not ahead',
    );
  });
  it('a consumer past the promoted node’s WAL, a row it holds that the new primary lacks, a silent gap, a duplicate: each a violation', () => {
    assert.match(
      checkConsumer({ ...base, position: { resume: 0x1009n, endOfWal: 0x1000n } }).violation ?? '',
      /would resume at 0\/1009, past the end of the promoted node's WAL \(0\/1000\)/,
    );
    assert.match(
      checkConsumer({ ...base, heldAtPromotion: new Set([1, 2, 3, 4]) }).violation ?? '',
      /held 1 row\(s\) the promoted node lacks/,
    );
    assert.match(
      checkConsumer({ ...base, receivedAfter: new Map([[4, 1]]) }).violation ?? '',
      /missing 1 row\(s\) .* a silent gap/,
    );
    assert.match(
      checkConsumer({
        ...base,
        receivedAfter: new Map([
          [4, 2],
          [5, 1],
        ]),
      }).violation ?? '',
      /more than once/,
    );
  });
  it('a consumer that has not got past the new rows is stalled, not gapped', () => {
    const check = checkConsumer({ ...base, receivedAfter: new Map(), passed: false });
    assert.equal(check.violation, null);
    assert.equal(check.stalled, true);
    assert.match(
      checkConsumer({ ...base, receivedAfter: new Map(), passed: true }).violation ?? '',
      /a silent gap/,
    );
  });

  it('a consumer that stopped with a clear error is no silent gap', () => {
    const check = checkConsumer({
      ...base,
      receivedAfter: new Map(),
      error: 'replication slot "c" does not exist',
    });
    assert.equal(check.violation, null);
    assert.equal(check.missing.length, 2);
  });
});
