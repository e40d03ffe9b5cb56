import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseGateArgs } from '../../src/cli/gate.js';
import { readiness, slotList } from '../../src/sync/ready.js';
import { slotSelector } from '../../src/sync/select.js';
import { buildSlotViews } from '../../src/sync/view.js';
import { entry, local, remote, stage } from '../helpers/slots.js';

const views = buildSlotViews(
  [remote('ready', '0/2000'), remote('staged', '0/1000')],
  [local('ready', '0/2000'), local(stage('staged'), '0/1800')],
  new Map([
    ['ready', entry('ready', 'sync_ready')],
    ['staged', entry('staged', 'staging')],
  ]),
  [],
);

describe('readiness gate', () => {
  it('requires every failover slot by default and names the ones not ready', () => {
    const answer = readiness(views, null, 10, 1000);
    assert.equal(answer.ready, false);
    assert.deepEqual(answer.required, ['ready', 'staged']);
    assert.deepEqual(
      answer.not_ready.map((n) => n.name),
      ['staged'],
    );
  });

  it('is ready when the required ones are, unless the last cycle is missing or too old', () => {
    assert.equal(readiness(views, ['ready'], 10, 1000).ready, true);
    assert.match(readiness(views, ['ready'], null, 1000).reason ?? '', /no cycle/);
    assert.match(readiness(views, ['ready'], 2000, 1000).reason ?? '', /2000 ms old/);
    assert.deepEqual(readiness(views, ['gone'], 10, 1000).not_ready, [
      { name: 'gone', reason: 'no failover slot of that name on the primary' },
    ]);
  });

  it('reads slot lists and gate options; bad ones are usage errors', () => {
    assert.deepEqual(slotList(' a, b,,c '), ['a', 'b', 'c']);
    assert.equal(slotList(''), null);
    assert.deepEqual(parseGateArgs(['--slots', 'a,b', '--wait=2.5', '--url', 'http://h:1/']), {
      slots: ['a', 'b'],
      waitMs: 2500,
      url: 'http://h:1',
    });
    for (const bad of [['--wait', 'x'], ['--wait'], ['--url', 'h:1'], ['--nope', '1']]) {
      assert.throws(() => parseGateArgs(bad), { code: 'SLOTSYNC_CONFIG' }, bad.join(' '));
    }
  });
});

describe('slot selection (SLOTSYNC_SLOTS_INCLUDE / SLOTSYNC_SLOTS_EXCLUDE)', () => {
  it('keeps what an include pattern matches and no exclude pattern does; * matches anything', () => {
    const pick = slotSelector({ include: ['app_*', 'cdc'], exclude: ['app_tmp*'] });
    assert.deepEqual(['app_orders', 'app_tmp_1', 'cdc', 'cdc2', 'other'].filter(pick), [
      'app_orders',
      'cdc',
    ]);
    assert.equal(slotSelector({ include: null, exclude: null })('x.y'), true);
    assert.equal(
      slotSelector({ include: ['a.c'], exclude: null })('abc'),
      false,
      'dots are literal',
    );
  });
});
