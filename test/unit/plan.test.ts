/** Every rule of slotsync.c as the planner applies it, with staging, without a database. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseLsn } from '../../src/sync/lsn.js';
import {
  isReservedName,
  isStagingName,
  STAGING_PREFIX,
  stagingNameOf,
} from '../../src/sync/names.js';
import { planCycle } from '../../src/sync/plan.js';
import { isEphemeral, isOwnedCopy } from '../../src/sync/rules.js';
import type { Action } from '../../src/sync/types.js';
import { entry, input, local, remote, stage } from '../helpers/slots.js';

const kinds = (actions: Action[]) => actions.map((a) => `${a.kind}:${a.name}`);
const show = (value: unknown) =>
  JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
const only = (actions: Action[]) => {
  assert.equal(actions.length, 1, show(actions));
  return actions[0] as Action;
};
const ofKind = <K extends Action['kind']>(actions: Action[], kind: K) =>
  actions.filter((a): a is Extract<Action, { kind: K }> => a.kind === kind);

describe('staging names', () => {
  it('are reserved, at most 63 bytes, stable, and distinct per remote name', () => {
    const long = 'x'.repeat(63);
    for (const name of ['a', long, 'ünïcödé_slot']) {
      const staging = stagingNameOf(name);
      assert.ok(Buffer.byteLength(staging) <= 63, staging);
      assert.ok(staging.startsWith(STAGING_PREFIX));
      assert.equal(stagingNameOf(name), staging, 'deterministic: a restart finds it again');
      assert.ok(isStagingName(staging) && isReservedName(staging));
    }
    assert.notEqual(stagingNameOf('a'), stagingNameOf('b'));
    assert.equal(isReservedName('sub'), false);
  });
});

describe('planner: creating copies (synchronize_one_slot, no local slot)', () => {
  it('creates a copy under its staging name, never under the remote name', () => {
    const action = only(planCycle(input({ remote: [remote('a', '0/2000')] })));
    assert.equal(action.kind, 'create');
    assert.equal(action.kind === 'create' && action.stagingName, stage('a'));
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
  });

  it('skips a slot whose remote position is ahead of the standby replay', () => {
    const action = only(planCycle(input({ remote: [remote('a', '0/3000')], replay: '0/2000' })));
    assert.equal(action.kind, 'skip');
    assert.match(action.reason ?? '', /ahead of the standby position 0\/2000/);
  });

  it('never copies a remote slot with a reserved name, nor a two_phase slot (the copy would lose two_phase)', () => {
    const actions = planCycle(
      input({
        remote: [remote(stage('x'), '0/2000'), remote('tp', '0/2000', { twoPhase: true })],
      }),
    );
    assert.deepEqual(kinds(actions), [`skip:${stage('x')}`, 'skip:tp']);
    assert.match(actions[1]?.reason ?? '', /two_phase/);
  });

  it('never copies what PostgreSQL would refuse or what is not a plain name: slot name, plugin path, unknown database', () => {
    const actions = planCycle({
      ...input({
        remote: [
          remote('Bad-Name', '0/2000'),
          remote('long_'.padEnd(64, 'x'), '0/2000'),
          remote('path_plugin', '0/2000', { plugin: '../../tmp/evil' }),
          remote('dir_plugin', '0/2000', { plugin: '/usr/lib/x' }),
          remote('other_db', '0/2000', { database: 'not_here' }),
          remote('fine', '0/2000'),
        ],
      }),
      standbyDatabases: new Set(['postgres']),
    });
    assert.deepEqual(kinds(actions), [
      'skip:Bad-Name',
      `skip:${'long_'.padEnd(64, 'x')}`,
      'skip:path_plugin',
      'skip:dir_plugin',
      'skip:other_db',
      'create:fine',
    ]);
    assert.match(actions[0]?.reason ?? '', /not a valid replication slot name/);
    assert.match(actions[2]?.reason ?? '', /not a plain library name/);
    assert.match(actions[4]?.reason ?? '', /does not exist on the standby/);
  });

  it('stages again a copy whose staging slot disappeared', () => {
    const action = only(
      planCycle(input({ remote: [remote('a', '0/2000')], registry: [entry('a', 'staging')] })),
    );
    assert.equal(action.kind, 'create');
    assert.match(action.reason ?? '', /disappeared/);
  });
});

describe('planner: ownership (a slot slotsync does not own is never touched)', () => {
  it("a stale same-name slot (an old primary's, failover on, unused since this node started) is a conflict with a hint, replaced only under the policy", () => {
    const started = Date.parse('2026-01-01T00:00:00.000Z');
    // PostgreSQL stamps every slot with inactive_since when the server starts.
    const stale = local('a', '0/1000', { failover: true, inactiveSince: started + 40 });
    const at = { standbyStartedAt: started };
    const conflict = only(
      planCycle({ ...input({ remote: [remote('a', '0/2000')], local: [stale] }), ...at }),
    );
    assert.equal(conflict.kind, 'conflict');
    assert.match(conflict.reason ?? '', /SLOTSYNC_REPLACE_STALE=on drops it/);
    const replaced = only(
      planCycle({
        ...input({ remote: [remote('a', '0/2000')], local: [stale] }),
        ...at,
        replaceStale: true,
      }),
    );
    assert.equal(replaced.kind === 'drop' && replaced.replaced, true);
    for (const other of [
      local('a', '0/1000', { inactiveSince: started }), // failover off: a user's slot made here
      local('a', '0/1000', { failover: true, active: true, inactiveSince: null }),
      local('a', '0/1000', { failover: true, plugin: 'test_decoding', inactiveSince: started }),
      local('a', '0/1000', { failover: true, synced: true, inactiveSince: started }),
      // A subscription still pointed at this node, retrying: each attempt stamps it later.
      local('a', '0/1000', { failover: true, inactiveSince: started + 7_000 }),
      local('a', '0/1000', { failover: true, inactiveSince: null }),
    ]) {
      const action = only(
        planCycle({
          ...input({ remote: [remote('a', '0/2000')], local: [other] }),
          ...at,
          replaceStale: true,
        }),
      );
      assert.equal(
        action.kind,
        'conflict',
        `${other.failover} ${other.active} ${other.plugin} ${other.synced} ${other.inactiveSince}`,
      );
    }
    const used = only(
      planCycle({
        ...input({
          remote: [remote('a', '0/2000')],
          local: [local('a', '0/1000', { failover: true, inactiveSince: started + 7_000 })],
        }),
        ...at,
      }),
    );
    assert.match(used.reason ?? '', /a session used it since this node started/);
  });

  it('keeps a copy whose remote slot exists but is not a failover slot (right after a failover), and never moves it', () => {
    const copy = local('a', '0/1000');
    const registry = [entry('a', 'sync_ready')];
    const waiting = planCycle({
      ...input({ remote: [], local: [copy], registry }),
      notFailover: new Map([['a', remote('a', '0/3000', { failover: false })]]),
    });
    assert.deepEqual(kinds(waiting), ['skip:a']);
    assert.match(waiting[0]?.reason ?? '', /waiting for failover on the new primary/);
    // Another plugin or database: not the same slot; gone: dropped as before.
    const other = planCycle({
      ...input({ remote: [], local: [copy], registry }),
      notFailover: new Map([
        ['a', remote('a', '0/3000', { failover: false, plugin: 'test_decoding' })],
      ]),
    });
    assert.deepEqual(kinds(other), ['drop:a']);
    assert.deepEqual(kinds(planCycle(input({ remote: [], local: [copy], registry }))), ['drop:a']);
  });

  it('reports a same-name user slot as conflict, and still syncs the others', () => {
    const actions = planCycle(
      input({
        remote: [remote('mine', '0/2000'), remote('theirs', '0/2000')],
        local: [local('theirs', '0/1000')],
      }),
    );
    assert.deepEqual(kinds(actions).sort(), ['conflict:theirs', 'create:mine']);
  });

  it('a slot under the remote name while the copy is staging is never ours', () => {
    const actions = planCycle(
      input({
        remote: [remote('a', '0/2000')],
        local: [local('a', '0/2000'), local(stage('a'), '0/1000')],
        registry: [entry('a', 'staging')],
      }),
    );
    assert.deepEqual(kinds(actions), ['conflict:a']);
  });

  it("never owns a slot synced by PostgreSQL's own worker, even if recorded", () => {
    const synced = local('a', '0/1000', { synced: true });
    assert.equal(isOwnedCopy(synced, entry('a', 'sync_ready')), false);
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/2000')],
          local: [synced],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'conflict');
  });

  it('does not own a slot that no longer matches its record (plugin or database)', () => {
    assert.equal(
      isOwnedCopy(local('a', '0/1000', { plugin: 'other' }), entry('a', 'sync_ready')),
      false,
    );
    assert.equal(
      isOwnedCopy(local('a', '0/1000', { database: 'db2' }), entry('a', 'sync_ready')),
      false,
    );
  });

  it('drops a staging slot no registry entry accounts for (the prefix is reserved)', () => {
    const action = only(planCycle(input({ local: [local(stage('gone'), '0/1000')] })));
    assert.equal(action.kind, 'drop');
    assert.deepEqual(action.kind === 'drop' && action.slots, [stage('gone')]);
  });

  it('never drops a user slot whose remote is gone', () => {
    assert.deepEqual(planCycle(input({ local: [local('user', '0/1000')] })), []);
  });
});

describe('planner: drop_local_obsolete_slots', () => {
  it('drops the published copy and the staging slot of a remote that is gone, and forgets it', () => {
    const action = only(
      planCycle(
        input({
          local: [local('a', '0/1000'), local(stage('a'), '0/1000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'drop');
    if (action.kind !== 'drop') return;
    assert.deepEqual(action.slots, ['a', stage('a')]);
    assert.equal(action.after, 'forget');
  });

  it('drops the copy of a slot invalidated on the primary and records the reason', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/2000', { invalidationReason: 'wal_removed' })],
          local: [local('a', '0/1000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind === 'drop' && action.after, 'invalidate');
  });

  it('drops and forgets a published copy whose remote slot turned two_phase (PostgreSQL 18 can alter it)', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/2000', { twoPhase: true })],
          local: [local('a', '0/1000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'drop');
    if (action.kind !== 'drop') return;
    assert.deepEqual([action.slots, action.after], [['a'], 'forget']);
    assert.match(action.reason ?? '', /two_phase/);
  });

  it('forgets a record whose copy and remote are both gone', () => {
    const action = only(planCycle(input({ registry: [entry('a', 'staging')] })));
    assert.equal(action.kind, 'forget');
  });
});

describe('planner: staging until sync-ready (update_and_persist_local_synced_slot)', () => {
  it('keeps a new copy staged while the remote slot is behind it', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/0800')],
          local: [local(stage('a'), '0/1000')],
          registry: [entry('a', 'staging')],
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
    assert.equal(action.kind === 'skip' && action.state, 'temporary');
    assert.match(action.reason ?? '', /remote slot precedes local slot/);
  });

  it('advances the staging slot to the remote and publishes it once the remote caught up', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local(stage('a'), '0/1000')],
          registry: [entry('a', 'staging')],
        }),
      ),
    );
    assert.equal(action.kind, 'advance');
    if (action.kind !== 'advance') return;
    assert.equal(action.slot, stage('a'), 'the staging slot moves, not a slot under the name');
    assert.equal(action.to, parseLsn('0/3000'));
    assert.equal(action.publish, true);
  });

  it('publishes at once when the remote is exactly at the copy', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/1000')],
          local: [local(stage('a'), '0/1000')],
          registry: [entry('a', 'staging')],
        }),
      ),
    );
    assert.equal(action.kind, 'publish');
  });

  it('adopts a staging slot whose creation was interrupted', () => {
    const actions = planCycle(
      input({
        remote: [remote('a', '0/0800')],
        local: [local(stage('a'), '0/1000')],
        registry: [entry('a', 'creating', { createdLsn: null, confirmedFlushLsn: null })],
      }),
    );
    assert.deepEqual(kinds(actions), ['adopt:a', 'skip:a']);
  });

  it('a publication whose copy was not made goes back to staging and is tried again', () => {
    const actions = planCycle(
      input({
        remote: [remote('a', '0/1000')],
        local: [local(stage('a'), '0/1000')],
        registry: [entry('a', 'publishing')],
      }),
    );
    assert.deepEqual(kinds(actions), ['restage:a', 'publish:a']);
  });

  it('a publication whose copy exists is finished: the staging slot is dropped', () => {
    const actions = planCycle(
      input({
        remote: [remote('a', '0/1000')],
        local: [local('a', '0/1000'), local(stage('a'), '0/1000')],
        registry: [entry('a', 'publishing')],
      }),
    );
    assert.deepEqual(kinds(actions), ['finish_publish:a']);
  });

  it('does not touch a staging slot someone is decoding on the standby', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local(stage('a'), '0/1000', { active: true })],
          registry: [entry('a', 'staging')],
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
  });
});

describe('planner: published copies (update_local_synced_slot) and fencing', () => {
  it('advances a sync-ready copy to the remote confirmed_flush_lsn', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local('a', '0/1000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind === 'advance' && action.slot, 'a');
  });

  it('does nothing when the copy is at the remote position (no advance to the same LSN)', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/1000')],
          local: [local('a', '0/1000')],
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
          remote: [remote('a', '0/3000')],
          local: [local('a', '0/1000')],
          registry: [entry('a', 'sync_ready')],
          replay: '0/2000',
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
  });

  it('fences a copy moved on the standby by someone else: dropped, staged afresh', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local('a', '0/2000')],
          registry: [entry('a', 'sync_ready', { confirmedFlushLsn: parseLsn('0/1000') })],
        }),
      ),
    );
    assert.equal(action.kind, 'drop');
    assert.match(action.reason ?? '', /moved on the standby by someone else/);
    assert.equal(action.kind === 'drop' && action.after, 'forget');
  });

  it('fences a copy ahead of its remote slot (remote dropped and made again behind it)', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/0800')],
          local: [local('a', '0/1000')],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'drop');
    assert.match(action.reason ?? '', /ahead of its remote slot/);
  });

  it('fences a copy invalidated on the standby while the remote is valid', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/2000')],
          local: [local('a', '0/1000', { invalidationReason: 'rows_removed' })],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'drop');
    assert.match(action.reason ?? '', /invalidated on the standby \(rows_removed\)/);
  });

  it('fences a staging copy moved by someone else too', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local(stage('a'), '0/2000')],
          registry: [entry('a', 'staging', { confirmedFlushLsn: parseLsn('0/1000') })],
        }),
      ),
    );
    assert.equal(action.kind, 'drop');
    assert.deepEqual(action.kind === 'drop' && action.slots, [stage('a')]);
  });

  it('drops and stages again a copy whose remote changed plugin', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/2000', { plugin: 'test_decoding' })],
          local: [local('a', '0/1000', { plugin: 'test_decoding' })],
          registry: [entry('a', 'sync_ready', { plugin: 'test_decoding' })],
        }),
      ),
    );
    assert.equal(action.kind, 'advance', 'same plugin: kept in step');
    const changed = only(
      planCycle(
        input({
          remote: [remote('a', '0/2000')],
          local: [local('a', '0/1000', { plugin: 'test_decoding' })],
          registry: [entry('a', 'sync_ready', { plugin: 'test_decoding' })],
        }),
      ),
    );
    assert.equal(changed.kind, 'drop');
    assert.match(changed.reason ?? '', /plugin changed/);
  });

  it('does not touch a published copy someone is decoding on the standby', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local('a', '0/1000', { active: true })],
          registry: [entry('a', 'sync_ready')],
        }),
      ),
    );
    assert.equal(action.kind, 'skip');
  });

  it('drops a leftover staging slot of a published copy without reporting it', () => {
    const actions = planCycle(
      input({
        remote: [remote('a', '0/1000')],
        local: [local('a', '0/1000'), local(stage('a'), '0/1000')],
        registry: [entry('a', 'sync_ready')],
      }),
    );
    assert.deepEqual(kinds(actions), ['drop:a', 'none:a']);
    assert.equal(ofKind(actions, 'drop')[0]?.quiet, true);
  });

  it('retires a copy an older slotsync left under the remote name before it was ready', () => {
    const action = only(
      planCycle(
        input({
          remote: [remote('a', '0/3000')],
          local: [local('a', '0/1000')],
          registry: [entry('a', 'retiring')],
        }),
      ),
    );
    assert.equal(action.kind, 'drop');
    assert.deepEqual(action.kind === 'drop' && action.slots, ['a']);
  });
});
