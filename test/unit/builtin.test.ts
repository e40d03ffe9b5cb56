import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  builtinSetupProblem,
  conninfoHasDbname,
  planBuiltin,
  workerProblem,
} from '../../src/sync/builtin.js';
import { parseLsn } from '../../src/sync/lsn.js';
import { RESTORE_STAMP_MS } from '../../src/sync/rules.js';
import {
  assessSafety,
  type PrimaryRead,
  primaryFactsOf,
  type SafetyInput,
} from '../../src/sync/safety.js';
import type { LocalSlot } from '../../src/sync/types.js';
import { entry, local, remote } from '../helpers/slots.js';

const T0 = Date.parse('2026-01-01T00:01:00.000Z');
const STARTED = T0 - 60_000;

/** A slot PostgreSQL's slot sync keeps on the standby. */
const synced = (name: string, lsn: string, extra: Partial<LocalSlot> = {}) =>
  local(name, lsn, { synced: true, failover: true, ...extra });

function input(slots: LocalSlot[], extra: Partial<SafetyInput> = {}): SafetyInput {
  const read: PrimaryRead = {
    facts: primaryFactsOf({
      standbySlot: 'standby_slot',
      synchronizedStandbySlots: 'standby_slot',
      slots: [{ name: 'a', confirmedFlushLsn: parseLsn('0/2000'), failover: true }],
      received: parseLsn('0/9000'),
    }),
    at: T0,
    positions: new Map([['a', { confirmedFlushLsn: parseLsn('0/2000'), failover: true }]]),
  };
  return {
    now: T0 + 1_000,
    required: null,
    registry: new Map(),
    bindingProblem: null,
    standby: {
      at: T0 + 1_000,
      inRecovery: true,
      systemIdentifier: '42',
      receiveLsn: parseLsn('0/9000'),
      replayLsn: parseLsn('0/8000'),
      slots,
    },
    standbyDown: null,
    primary: read,
    primaryDown: null,
    lastCycleAt: T0,
    reloaded: false,
    maxAgeMs: 5_000,
    engine: 'builtin',
    ...extra,
  };
}

describe('safe to promote over PostgreSQL’s slot sync (SLOTSYNC_ENGINE=builtin)', () => {
  it('is safe on a synced, persistent, failover copy not past its remote, with the primary waiting, also once the primary is gone', () => {
    const answer = assessSafety(input([synced('a', '0/2000')], { primaryDown: 'gone' }));
    assert.equal(answer.ready, true, JSON.stringify(answer.not_ready));
    assert.match(answer.slots[0]?.facts.copy.detail ?? '', /synced by PostgreSQL and persistent/);
    assert.equal(answer.slots[0]?.resume_lsn, '0/2000');
  });

  it('never on a copy that is missing, temporary, invalidated, without failover, not synced, in use or past its remote', () => {
    const cases: [LocalSlot[], RegExp][] = [
      [[], /has no copy on this standby yet/],
      [[synced('a', '0/2000', { temporary: true })], /temporary .*dropped at promotion/],
      [[synced('a', '0/2000', { invalidationReason: 'rows_removed' })], /invalidated/],
      [[synced('a', '0/2000', { failover: false })], /failover off/],
      [[local('a', '0/2000', { failover: true })], /not synced by PostgreSQL/],
      [[synced('a', '0/2000', { active: true })], /in use/],
    ];
    for (const [slots, reason] of cases) {
      const answer = assessSafety(input(slots));
      assert.equal(answer.ready, false, String(reason));
      assert.match(answer.not_ready[0]?.reason ?? '', reason);
    }
  });

  it('calls a copy past its remote only on a read of the primary made after the read of the copy (PostgreSQL syncs by itself, maybe after slotsync’s last read)', () => {
    const ahead = [synced('a', '0/3000')];
    assert.equal(assessSafety(input(ahead)).ready, true, 'a later sync, not a remote made again');
    const evidence = new Map([['a', { copy: parseLsn('0/3000'), remote: parseLsn('0/2800') }]]);
    const answer = assessSafety(input(ahead, { pastRemote: evidence }));
    assert.equal(answer.ready, false);
    assert.match(
      answer.not_ready[0]?.reason ?? '',
      /past its remote slot's confirmed_flush_lsn 0\/2800/,
    );
  });

  it('a two_phase copy is never safe on PostgreSQL 17, whose slot sync does not copy two_phase_at; on 18 it is', () => {
    const copy = [synced('a', '0/2000', { twoPhase: true })];
    const standby = input(copy).standby as NonNullable<SafetyInput['standby']>;
    const on17 = assessSafety(input(copy, { standby: { ...standby, versionNum: 170010 } }));
    assert.equal(on17.ready, false);
    assert.match(on17.not_ready[0]?.reason ?? '', /two_phase_at/);
    const on18 = assessSafety(input(copy, { standby: { ...standby, versionNum: 180004 } }));
    assert.equal(on18.ready, true, JSON.stringify(on18.not_ready));
  });

  it('keeps the SQL engine’s definition for a registry copy: a synced slot is never slotsync’s copy', () => {
    const sql = assessSafety(
      input([synced('a', '0/2000')], {
        engine: 'sql',
        registry: new Map([
          ['a', entry('a', 'sync_ready', { confirmedFlushLsn: parseLsn('0/2000') })],
        ]),
      }),
    );
    assert.equal(sql.ready, false);
    assert.match(sql.not_ready[0]?.reason ?? '', /not slotsync's copy/);
  });

  it('a consumer ahead of the standby, or a primary that does not wait, takes the yes away as over SQL', () => {
    const read = input([synced('a', '0/2000')]).primary as PrimaryRead;
    const ahead = assessSafety(
      input([synced('a', '0/2000')], {
        primary: { ...read, facts: { ...read.facts, ahead: ['a'] } },
        standby: {
          ...(input([]).standby as NonNullable<SafetyInput['standby']>),
          receiveLsn: parseLsn('0/1000'),
          replayLsn: parseLsn('0/1000'),
          slots: [synced('a', '0/1000')],
        },
      }),
    );
    assert.equal(ahead.ready, false);
  });
});

describe('what PostgreSQL’s slot sync made of each slot (sync/builtin.ts)', () => {
  const base = {
    standbyReplayLsn: parseLsn('0/8000'),
    replaceStale: false,
    standbyStartedAt: STARTED,
  };

  it('reports a persistent synced copy ready, a temporary one waiting with both positions, a missing one absent', () => {
    const plan = planBuiltin({
      ...base,
      remote: [
        remote('a', '0/2000'),
        remote('b', '0/2000'),
        remote('c', '0/2000'),
        remote('d', '0/9000'),
      ],
      local: [synced('a', '0/2000'), synced('b', '0/1000', { temporary: true })],
    });
    assert.equal(plan.blocked, null);
    const by = new Map(plan.reports.map((r) => [r.name, r]));
    assert.equal(by.get('a')?.state, 'sync_ready');
    assert.equal(by.get('b')?.state, 'temporary');
    assert.match(by.get('b')?.reason ?? '', /remote slot is at LSN 0\/2000 .*the copy at 0\/1000/);
    assert.equal(by.get('c')?.state, 'absent');
    assert.match(by.get('d')?.reason ?? '', /ahead of what the standby replayed/);
  });

  it('a same-name slot that is not synced stops the sync for every slot; only a provably stale one is replaced, and only with SLOTSYNC_REPLACE_STALE', () => {
    const stale = local('a', '0/2000', {
      failover: true,
      inactiveSince: STARTED + RESTORE_STAMP_MS - 1,
    });
    const used = local('a', '0/2000', { failover: true, inactiveSince: STARTED + 60_000 });
    const kept = planBuiltin({
      ...base,
      remote: [remote('a', '0/2000'), remote('b', '0/2000')],
      local: [stale],
    });
    assert.deepEqual(kept.replace, []);
    assert.match(kept.blocked ?? '', /same name slot "a" .*syncs no other slot/);
    assert.equal(kept.reports.find((r) => r.name === 'a')?.state, 'conflict');
    assert.match(
      kept.reports.find((r) => r.name === 'a')?.reason ?? '',
      /SLOTSYNC_REPLACE_STALE=on drops it/,
    );

    const replaced = planBuiltin({
      ...base,
      replaceStale: true,
      remote: [remote('a', '0/2000')],
      local: [stale],
    });
    assert.deepEqual(replaced.replace, ['a']);
    assert.equal(replaced.blocked, null);

    const inUse = planBuiltin({
      ...base,
      replaceStale: true,
      remote: [remote('a', '0/2000')],
      local: [used],
    });
    assert.deepEqual(inUse.replace, [], 'used since this node started: never replaced');
    assert.notEqual(inUse.blocked, null);
  });

  it('leaves out temporary and non-failover remote slots', () => {
    const plan = planBuiltin({
      ...base,
      remote: [
        remote('t', '0/2000', { temporary: true }),
        remote('n', '0/2000', { failover: false }),
      ],
      local: [],
    });
    assert.deepEqual(plan.reports, []);
  });
});

describe('why PostgreSQL’s slot sync cannot run', () => {
  const good = {
    syncReplicationSlots: true,
    walLevel: 'logical',
    hotStandbyFeedback: true,
    primarySlotName: 'standby_slot',
    primaryConninfoSet: true,
    conninfoDbname: true,
  };

  it('names the setting', () => {
    assert.equal(builtinSetupProblem(good), null);
    assert.match(
      builtinSetupProblem({ ...good, walLevel: 'replica' }) ?? '',
      /wal_level = logical/,
    );
    assert.match(
      builtinSetupProblem({ ...good, hotStandbyFeedback: false }) ?? '',
      /hot_standby_feedback/,
    );
    assert.match(builtinSetupProblem({ ...good, primarySlotName: '' }) ?? '', /primary_slot_name/);
    assert.match(
      builtinSetupProblem({ ...good, primaryConninfoSet: false }) ?? '',
      /needs primary_conninfo/,
    );
    assert.match(builtinSetupProblem({ ...good, conninfoDbname: false }) ?? '', /dbname/);
    assert.equal(
      builtinSetupProblem({ ...good, conninfoDbname: null }),
      null,
      'not readable: not judged',
    );
  });

  it('says when the worker is on but not running', () => {
    assert.equal(workerProblem(good, true), null);
    assert.equal(workerProblem(good, null), null);
    assert.match(workerProblem(good, false) ?? '', /no slot sync worker runs/);
    assert.equal(workerProblem({ syncReplicationSlots: false }, false), null);
  });

  it('finds a dbname in either form of primary_conninfo', () => {
    assert.equal(conninfoHasDbname('host=a port=5432 user=u dbname=postgres'), true);
    assert.equal(conninfoHasDbname("host=a dbname='my db'"), true);
    assert.equal(conninfoHasDbname('host=a port=5432 user=u'), false);
    assert.equal(conninfoHasDbname('postgres://u@h:5432/postgres'), true);
    assert.equal(conninfoHasDbname('postgresql://u@h:5432?dbname=x'), true);
    assert.equal(conninfoHasDbname('postgres://u@h:5432'), false);
    // As libpq reads it: the last dbname wins, a quoted value is a value.
    assert.equal(conninfoHasDbname("host=a dbname=x dbname=''"), false);
    assert.equal(conninfoHasDbname("host=a application_name='x dbname=y'"), false);
    assert.equal(conninfoHasDbname("host=a dbname = 'it\\'s'"), true);
    assert.equal(conninfoHasDbname('postgres://u@h/db?dbname='), false);
  });
});
