import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { buildSlotViews } from '../../src/sync/view.js';
import { entry, local, remote, stage } from '../helpers/slots.js';

describe('slot views', () => {
  it('shows sync_ready only for owned, ready copies, with lag in bytes', () => {
    const views = buildSlotViews(
      [remote('a', '0/3000'), remote('b', '0/3000'), remote('c', '0/3000')],
      [local('a', '0/2000'), local(stage('b'), '0/2000'), local('c', '0/2000')],
      new Map([
        ['a', entry('a', 'sync_ready')],
        ['b', entry('b', 'staging')],
      ]),
      [{ name: 'c', action: 'conflict', state: 'conflict', reason: 'same name' }],
    );
    const byName = Object.fromEntries(views.map((v) => [v.name, v]));
    assert.equal(byName.a?.sync_ready, true);
    assert.equal(byName.a?.lag_bytes, 0x1000);
    assert.equal(byName.b?.sync_ready, false);
    assert.equal(byName.b?.state, 'temporary');
    assert.equal(byName.b?.staging_name, stage('b'), 'both names shown while staging');
    assert.equal(byName.a?.staging_name, null);
    assert.equal(byName.c?.state, 'conflict');
    assert.equal(byName.c?.sync_ready, false);
    assert.equal(byName.c?.lag_bytes, null);
  });

  it('never shows as ready a copy the standby shows invalidated now', () => {
    const [view] = buildSlotViews(
      [remote('a', '0/3000')],
      [local('a', '0/2000', { invalidationReason: 'rows_removed' })],
      new Map([['a', entry('a', 'sync_ready')]]),
      [],
    );
    assert.equal(view?.sync_ready, false);
  });
});
