/** Every rule of slotsync.c as the planner applies it, without a database. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseLsn } from '../../src/sync/lsn.js';
import { planCycle } from '../../src/sync/plan.js';
import {
  isEphemeral,
  isOwnedCopy,
  localCopyRequired,
  twoPhaseBlocksReady,
} from '../../src/sync/rules.js';
import type { Action } from '../../src/sync/types.js';
import { entry, input, local, remote } from '../helpers/slots.js';

const kinds = (actions: Action[]) => actions.map((a) => `${a.kind}:${a.name}`);
const only = (actions: Action[]) => {
  assert.equal(
    actions.length,
    1,
    JSON.stringify(actions, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)),
  );
  return actions[0] as Action;
};

describe('planner: creating copies (synchronize_one_slot, no local slot)', () => {
  it('creates a copy of a failover slot', () => {
    const action = only(planCycle(input({ remote: [remote('a', '0/2000')] })));
    assert.equal(action.kind, 'create');
  });

  it('never copies a slot without failover, or a temporary one', () => {
    const actions = planCycle(
      input({
        remote: [
          remote('nf', '0/2000', { failover: false }),
          remote('tmp', '0/2000', { temporary: true }),
        ],
      }),
    );
    assert.deepEqual(actions, []);
  });

  it('skips ephemeral remote slots (NULL LSN or xmin while valid)', () => {
    const ephemeral = remote('e', '0/2000', { catalogXmin: null });
    assert.equal(isEphemeral(ephemeral), true);
    assert.equal(
      isEphemeral(remote('i', '0/2000', { catalogXmin: null, invalidationReason: 'wal_removed' })),
      false,
    );
    assert.deepEqual(planCycle(input({ remote: [ephemeral] })), []);
  });

  it('does not create a copy of a slot already invalidated on the primary', () => {
    const action = only(
      planCycle(
        input({
          remote: [
            remote('a', '0/2000', { invalidationReason: 'wal_removed', confirmedFlushLsn: null }),
          ],
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
    assert.match(action.reason ?? '', /invalidated on the primary \(wal_removed\)/);
  });

  it('skips a slot whose remote position is ahead of the standby replay', () => {
    const action = only(planCycle(input({ remote: [remote('a', '0/3000')], replay: '0/2000' })));
    assert.equal(action.kind, 'skip');
    assert.equal(
      action.reason,
      'skipping slot synchronization because the received slot sync LSN 0/3000 for slot "a" is ahead of the standby position 0/2000',
    );
  });

  it('recreates a copy that disappeared from the standby', () => {
    const action = only(
      planCycle(input({ remote: [remote('a', '0/2000')], registry: [entry('a', 'sync_ready')] })),
    );
    assert.equal(action.kind, 'create');
    assert.match(action.reason ?? '', /disappeared/);
  });
});

describe('planner: ownership (a slot slotsync does not own is never touched)', () => {
  it('reports a same-name user slot as conflict, and still syncs the others', () => {
    const actions = planCycle(
      input({
        remote: [remote('mine', '0/3000'), remote('theirs', '0/3000')],
        local: [local('mine', '0/2000'), local('theirs', '0/1000')],
        registry: [entry('mine', 'sync_ready')],
      }),
    );
    assert.deepEqual(kinds(actions).sort(), ['advance:mine', 'conflict:theirs']);
    const conflict = actions.find((a) => a.kind === 'conflict');
    assert.match(
      conflict?.reason ?? '',
      /exiting from slot synchronization because same name slot "theirs" already exists on the standby/,
    );
  });

  it("never owns a slot synced by PostgreSQL's own worker, even if recorded", () => {
    const synced = local('a', '0/2000', { synced: true });
    assert.equal(isOwnedCopy(synced, entry('a', 'sync_ready')), false);
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [synced],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'conflict');
  });

  it('does not own a slot that no longer matches its record (plugin or database)', () => {
    assert.equal(
      isOwnedCopy(local('a', '0/1', { plugin: 'test_decoding' }), entry('a', 'sync_ready')),
      false,
    );
    assert.equal(
      isOwnedCopy(local('a', '0/1', { database: 'other' }), entry('a', 'sync_ready')),
      false,
    );
    assert.equal(
      isOwnedCopy(local('a', '0/1', { temporary: true }), entry('a', 'sync_ready')),
      false,
    );
    assert.equal(isOwnedCopy(local('a', '0/1'), entry('a', 'sync_ready')), true);
  });

  it('never drops a user slot whose remote is gone', () => {
    assert.deepEqual(planCycle(input({ local: [local('user', '0/1000')] })), []);
  });
});

describe('planner: drop_local_obsolete_slots', () => {
  it('drops a copy whose remote slot is gone or no longer failover', () => {
    const gone = only(
      planCycle(input({ local: [local('a', '0/1000')], registry: [entry('a', 'sync_ready')] })),
    );
    assert.equal(gone.kind, 'drop');
    const notFailover = planCycle(
      input({
        remote: [remote('a', '0/2000', { failover: false })],
        local: [local('a', '0/1000')],
        registry: [entry('a', 'sync_ready')],
      }),
    );
    assert.deepEqual(kinds(notFailover), ['drop:a']);
  });

  it('drops a copy invalidated on the standby while the remote is valid, and does not recreate it in the same cycle', () => {
    const copy = local('a', '0/1000', { invalidationReason: 'wal_removed' });
    assert.equal(localCopyRequired(copy, remote('a', '0/2000')), false);
    const actions = planCycle(
      input({
        remote: [remote('a', '0/2000')],
        local: [copy],
        registry: [entry('a', 'sync_ready')],
      }),
    );
    assert.deepEqual(kinds(actions), ['drop:a']);
    assert.match(actions[0]?.reason ?? '', /invalidated on the standby/);
  });

  it('drops the copy of a slot invalidated on the primary and records the reason', () => {
    const actions = planCycle(
      input({
        remote: [remote('a', '0/2000', { invalidationReason: 'rows_removed' })],
        local: [local('a', '0/1000')],
        registry: [entry('a', 'sync_ready')],
      }),
    );
    const action = only(actions);
    assert.equal(action.kind, 'drop');
    assert.equal(action.kind === 'drop' && action.remoteInvalidation, 'rows_removed');
  });

  it('forgets a record whose copy and remote are both gone', () => {
    assert.deepEqual(kinds(planCycle(input({ registry: [entry('a', 'temporary')] }))), [
      'forget:a',
    ]);
  });
});

describe('planner: moving copies (update_local_synced_slot)', () => {
  it('advances a sync-ready copy to the remote confirmed_flush_lsn', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'advance');
    if (action.kind === 'advance') {
      assert.equal(action.to, parseLsn('0/3000'));
      assert.equal(action.from, parseLsn('0/2000'));
    }
  });

  it('never moves a copy backwards', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/1000')],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
    assert.match(
      action.reason ?? '',
      /Local slot's start streaming location LSN\(0\/2000\) is ahead of remote slot's LSN\(0\/1000\)/,
    );
  });

  it('does nothing when the copy is at the remote position (no advance to the same LSN)', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/2000')],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'none');
  });

  it('never advances past the standby replay position', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/5000')],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'sync_ready')],
          replay: '0/4FFF',
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
  });

  it('does not touch a copy someone is decoding on the standby', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local('a', '0/2000', { active: true })],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
  });

  it('drops and recreates a copy whose remote changed plugin or two_phase', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000', { twoPhase: true })],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'drop');
    assert.match(action.reason ?? '', /two_phase changed/);
  });
});

describe('planner: sync-ready (update_and_persist_local_synced_slot)', () => {
  it('keeps a new copy temporary while the remote slot is behind it', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/1000')],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'temporary')],
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
    assert.equal(action.kind === 'skip' && action.state, 'temporary');
    assert.match(
      action.reason ?? '',
      /could not synchronize replication slot "a" because remote slot precedes local slot/,
    );
  });

  it('marks a copy sync-ready once the remote caught up, advancing it first when ahead', () => {
    const equal = only(
      planCycle(
        input({
          remote: [remote('a', '0/2000')],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'temporary')],
        }),
      ),
    );
    assert.equal(equal.kind, 'mark_ready');
    assert.equal(equal.reason, 'newly created replication slot "a" is sync-ready now');
    const ahead = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'temporary')],
        }),
      ),
    );
    assert.equal(ahead.kind === 'advance' && ahead.markReady, true);
  });

  it('adopts a copy whose creation was interrupted, as temporary', () => {
    const actions = planCycle(
      input({
        remote: [remote('a', '0/1000')],
        local: [local('a', '0/2000')],
        registry: [entry('a', 'creating', { createdLsn: null })],
      }),
    );
    assert.deepEqual(kinds(actions), ['adopt:a', 'skip:a']);
  });

  it('two_phase: not sync-ready while a transaction prepared before the copy is pending', () => {
    const twoPhase = entry('a', 'temporary', {
      twoPhase: true,
      createdAt: '2026-01-01T00:00:10.000Z',
    });
    assert.equal(
      twoPhaseBlocksReady(twoPhase, new Map([['postgres', new Date('2026-01-01T00:00:09.000Z')]])),
      true,
    );
    assert.equal(
      twoPhaseBlocksReady(twoPhase, new Map([['postgres', new Date('2026-01-01T00:00:11.000Z')]])),
      false,
    );
    assert.equal(
      twoPhaseBlocksReady(twoPhase, new Map([['other', new Date('2026-01-01T00:00:09.000Z')]])),
      false,
    );
    assert.equal(
      twoPhaseBlocksReady({ ...twoPhase, twoPhase: false }, new Map([['postgres', new Date(0)]])),
      false,
    );

    const rows = {
      remote: [remote('a', '0/3000', { twoPhase: true })],
      local: [local('a', '0/2000', { twoPhase: true })],
      registry: [twoPhase],
    };
    const blocked = only(
      planCycle(input({ ...rows, prepared: { postgres: '2026-01-01T00:00:05.000Z' } })),
    );
    assert.equal(blocked.kind === 'advance' && blocked.markReady, false);
    assert.match(blocked.reason ?? '', /prepared before the copy was made/);
    const free = only(planCycle(input(rows)));
    assert.equal(free.kind === 'advance' && free.markReady, true);
  });
});
