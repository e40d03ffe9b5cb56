import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseGateArgs } from '../../src/cli/gate.js';
import { parseLsn } from '../../src/sync/lsn.js';
import {
  assessSafety,
  NEVER_READ_REASON,
  namesSlot,
  PRIMARY_ROLE_REASON,
  type PrimaryRead,
  primaryFactsOf,
  RELOADED_REASON,
  type SafetyInput,
} from '../../src/sync/safety.js';
import { slotList, slotSelector } from '../../src/sync/select.js';
import type { LocalSlot, RegistryEntry } from '../../src/sync/types.js';
import { entry, local, stage } from '../helpers/slots.js';

const T0 = Date.parse('2026-01-01T00:01:00.000Z');
const HOUR = 3_600_000;

/** The primary as last read: `waits` = synchronized_standby_slots names the standby. */
function primaryRead(
  slots: Record<string, { lsn: string; failover?: boolean }>,
  options: { waits: boolean; at?: number; received?: string; positions?: boolean } = {
    waits: true,
  },
): PrimaryRead {
  const list = Object.entries(slots).map(([name, s]) => ({
    name,
    confirmedFlushLsn: parseLsn(s.lsn),
    failover: s.failover ?? true,
  }));
  return {
    facts: primaryFactsOf({
      standbySlot: 'standby_slot',
      synchronizedStandbySlots: options.waits ? 'standby_slot' : '',
      slots: list,
      received: parseLsn(options.received ?? '0/9000'),
    }),
    at: options.at ?? T0,
    positions:
      options.positions === false
        ? null
        : new Map(
            list.map((s) => [
              s.name,
              { confirmedFlushLsn: s.confirmedFlushLsn, failover: s.failover },
            ]),
          ),
  };
}

function safety(parts: {
  now?: number;
  required?: string[] | null;
  registry?: RegistryEntry[];
  local?: LocalSlot[];
  primary?: PrimaryRead | null;
  primaryDown?: string | null;
  inRecovery?: boolean;
  received?: string | null;
  reloaded?: boolean;
  binding?: string | null;
  standbyDown?: boolean;
}) {
  const input: SafetyInput = {
    now: parts.now ?? T0 + 1_000,
    required: parts.required ?? null,
    registry: new Map((parts.registry ?? []).map((e) => [e.name, e])),
    bindingProblem: parts.binding ?? null,
    standby: parts.standbyDown
      ? null
      : {
          at: parts.now ?? T0 + 1_000,
          inRecovery: parts.inRecovery ?? true,
          systemIdentifier: '42',
          receiveLsn: parts.received === null ? null : parseLsn(parts.received ?? '0/9000'),
          replayLsn: parseLsn('0/8000'),
          slots: parts.local ?? [],
        },
    standbyDown: parts.standbyDown ? 'connection refused' : null,
    primary: parts.primary === undefined ? primaryRead({ a: { lsn: '0/2000' } }) : parts.primary,
    primaryDown: parts.primaryDown ?? null,
    lastCycleAt: T0,
    reloaded: parts.reloaded ?? false,
    maxAgeMs: 5_000,
  };
  return assessSafety(input);
}

/** A published, sync-ready copy of `a` at 0/2000, where slotsync left it. */
const ready = entry('a', 'sync_ready', { confirmedFlushLsn: parseLsn('0/2000') });
const copy = local('a', '0/2000');

describe('safe to promote: the one definition (sync/safety.ts)', () => {
  it('is safe when the copy is published and unmoved and the primary waits for this standby, with no age limit', () => {
    for (const now of [T0 + 1_000, T0 + HOUR, T0 + 48 * HOUR]) {
      const answer = safety({ now, registry: [ready], local: [copy], primaryDown: 'gone' });
      assert.equal(answer.ready, true, JSON.stringify(answer.not_ready));
      assert.deepEqual(answer.required, ['a']);
      const slot = answer.slots[0];
      assert.equal(slot?.safe, true);
      assert.equal(slot?.facts.consumers.age_ms, now - T0, 'the answer says how old its facts are');
      assert.equal(slot?.resume_lsn, '0/2000');
      assert.equal(answer.primary.reachable, false);
    }
  });

  it('a consumer ahead of the WAL this standby received is never safe: with or without the setting, primary alive or gone', () => {
    for (const waits of [true, false]) {
      for (const primaryDown of [null, 'the primary does not answer']) {
        const answer = safety({
          registry: [ready],
          local: [copy],
          primary: primaryRead({ a: { lsn: '0/A000' } }, { waits, received: '0/9000' }),
          primaryDown,
          received: '0/9000',
        });
        assert.equal(answer.ready, false, `waits=${waits} down=${primaryDown}`);
        assert.equal(answer.slots[0]?.consumer_ahead, true);
        assert.match(answer.not_ready[0]?.reason ?? '', /past the WAL this standby has received/);
      }
    }
    // Once the standby has received past the consumer, it is not ahead any more.
    const caughtUp = safety({
      registry: [ready],
      local: [copy],
      primary: primaryRead({ a: { lsn: '0/A000' } }, { waits: true, received: '0/9000' }),
      received: '0/B000',
    });
    assert.equal(caughtUp.ready, true);
    // Known only from the registry's record (no positions): the record says ahead.
    const recorded = safety({
      registry: [ready],
      local: [copy],
      primary: primaryRead(
        { a: { lsn: '0/A000' } },
        { waits: true, received: '0/9000', positions: false },
      ),
      primaryDown: 'gone',
    });
    assert.equal(recorded.ready, false);
  });

  it('without synchronized_standby_slots: safe only on a fresh read while the primary answers', () => {
    const read = primaryRead({ a: { lsn: '0/2000' } }, { waits: false });
    const fresh = safety({ registry: [ready], local: [copy], primary: read, now: T0 + 100 });
    assert.equal(fresh.ready, true);
    assert.match(fresh.slots[0]?.facts.consumers.detail ?? '', /only while it answers/);
    const gone = safety({ registry: [ready], local: [copy], primary: read, primaryDown: 'x' });
    assert.equal(gone.ready, false);
    assert.match(
      gone.not_ready[0]?.reason ?? '',
      /consumers may be ahead: the primary does not wait for this standby/,
    );
    const stale = safety({ registry: [ready], local: [copy], primary: read, now: T0 + 6_000 });
    assert.equal(stale.ready, false);
    assert.match(stale.not_ready[0]?.reason ?? '', /6000 ms old \(at most 5000 ms is trusted\)/);
  });

  it('a copy moved, invalidated, in use, dropped or made again is not safe; one behind its recorded target is (an advance in flight)', () => {
    const cases: [string, LocalSlot[], RegExp | null][] = [
      ['moved past', [local('a', '0/2800')], /moved on the standby by someone else/],
      ['invalidated', [local('a', '0/2000', { invalidationReason: 'wal_removed' })], /invalidated/],
      ['in use', [local('a', '0/2000', { active: true, activePid: 7 })], /in use on the standby/],
      ['gone', [], /gone from the standby/],
      [
        'another plugin',
        [local('a', '0/2000', { plugin: 'test_decoding' })],
        /not slotsync's copy/,
      ],
      ['synced by PostgreSQL', [local('a', '0/2000', { synced: true })], /not slotsync's copy/],
      ['in flight', [local('a', '0/1800')], null],
    ];
    for (const [what, slots, problem] of cases) {
      const answer = safety({ registry: [ready], local: slots });
      if (problem === null) {
        assert.equal(answer.ready, true, what);
      } else {
        assert.equal(answer.ready, false, what);
        assert.equal(answer.slots[0]?.facts.unmoved.holds, false, what);
        assert.match(answer.not_ready[0]?.reason ?? '', problem, what);
      }
    }
  });

  it('a copy still staging, invalidated on the primary, or absent is not safe, and says why', () => {
    const staging = safety({
      registry: [entry('a', 'staging')],
      local: [local(stage('a'), '0/1000')],
    });
    assert.match(staging.not_ready[0]?.reason ?? '', /not sync-ready yet/);
    const absent = safety({ registry: [], local: [] });
    assert.deepEqual(absent.required, ['a'], 'every failover slot of the primary is required');
    assert.match(absent.not_ready[0]?.reason ?? '', /has no copy on this standby yet/);
    const invalid = safety({
      registry: [entry('a', 'invalidated', { remoteInvalidation: 'wal_removed' })],
    });
    assert.match(invalid.not_ready[0]?.reason ?? '', /invalidated on the primary \(wal_removed\)/);
  });

  it('never vacuously ready: no read of the primary, a reload, the node is the primary, an unreadable standby or another node', () => {
    const never = safety({ primary: null, registry: [], local: [] });
    assert.equal(never.ready, false);
    assert.equal(never.reason, NEVER_READ_REASON);
    const reloaded = safety({ reloaded: true, registry: [ready], local: [copy] });
    assert.equal(reloaded.ready, false);
    assert.equal(reloaded.reason, RELOADED_REASON);
    const primary = safety({ inRecovery: false, registry: [ready], local: [copy] });
    assert.equal(primary.reason, PRIMARY_ROLE_REASON);
    assert.equal(primary.role, 'primary');
    const unread = safety({ standbyDown: true, registry: [ready] });
    assert.equal(unread.ready, false);
    assert.equal(unread.role, 'unknown');
    assert.match(unread.reason ?? '', /the standby cannot be read: connection refused/);
    const other = safety({ binding: 'another node', registry: [ready], local: [copy] });
    assert.equal(other.ready, false);
  });

  it('a copy whose remote is no failover slot (for a moment, after a failover) stays required and is not safe', () => {
    const answer = safety({
      registry: [ready],
      local: [copy],
      primary: primaryRead({ a: { lsn: '0/2000', failover: false } }),
    });
    assert.deepEqual(answer.required, ['a']);
    assert.equal(answer.ready, false);
    assert.match(answer.not_ready[0]?.reason ?? '', /waiting for failover on the new primary/);
    const gone = safety({ registry: [ready], local: [copy], primary: primaryRead({}) });
    assert.match(gone.not_ready[0]?.reason ?? '', /does not exist on the primary/);
  });

  it('names a required slot the primary does not have; ?slots= narrows the answer', () => {
    const two = primaryRead({ a: { lsn: '0/2000' }, b: { lsn: '0/2000' } });
    const onlyA = safety({ required: ['a'], registry: [ready], local: [copy], primary: two });
    assert.equal(onlyA.ready, true);
    const unknown = safety({ required: ['nope'], registry: [ready], local: [copy] });
    assert.equal(unknown.ready, false);
    assert.match(unknown.not_ready[0]?.reason ?? '', /no failover slot "nope"/);
  });

  it('reads synchronized_standby_slots as PostgreSQL lists it', () => {
    assert.equal(namesSlot('a, "standby_slot" ,b', 'standby_slot'), true);
    assert.equal(namesSlot('standby_slot_2', 'standby_slot'), false);
    assert.equal(namesSlot(null, 'standby_slot'), false);
    assert.equal(namesSlot('standby_slot', ''), false);
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

describe('safe to promote under a quorum for synchronized_standby_slots', () => {
  const quorumRead = (waits: boolean, at = T0) => {
    const read = primaryRead({ a: { lsn: '0/2000' } }, { waits, at });
    return { ...read, facts: { ...read.facts, quorumSilentMs: 300_000 } };
  };
  it('a standby in the set is safe for SLOTSYNC_QUORUM_SILENT_MS after its last read, not longer', () => {
    const inSet = quorumRead(true);
    assert.equal(
      safety({
        registry: [ready],
        local: [copy],
        primary: inSet,
        primaryDown: 'gone',
        now: T0 + 200_000,
      }).ready,
      true,
    );
    const late = safety({
      registry: [ready],
      local: [copy],
      primary: inSet,
      primaryDown: 'gone',
      now: T0 + 301_000,
    });
    assert.equal(late.ready, false);
    assert.match(
      late.not_ready[0]?.reason ?? '',
      /quorum manages synchronized_standby_slots and may have removed it/,
    );
  });

  it('a standby outside the set is never safe, even on a fresh read of a primary that answers', () => {
    const outside = safety({
      registry: [ready],
      local: [copy],
      primary: quorumRead(false, T0 + 900),
      now: T0 + 1_000,
    });
    assert.equal(outside.ready, false);
    assert.match(
      outside.not_ready[0]?.reason ?? '',
      /outside the quorum's synchronized_standby_slots/,
    );
  });
});
