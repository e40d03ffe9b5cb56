import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseGateArgs } from '../../src/cli/gate.js';
import { parseLsn } from '../../src/sync/lsn.js';
import {
  assessSafety,
  consumerAheadOf,
  NEVER_READ_REASON,
  namesSlot,
  narrowerFacts,
  narrows,
  PRIMARY_ROLE_REASON,
  type PrimaryRead,
  primaryFactsOf,
  RELOADED_REASON,
  type SafetyInput,
} from '../../src/sync/safety.js';
import { slotList, slotSelector } from '../../src/sync/select.js';
import { forkPointOf, timelineVerdict } from '../../src/sync/timeline.js';
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
    const read = {
      ...primaryRead({ a: { lsn: '0/2000' } }, { waits: false }),
      flushLsn: parseLsn('0/9000'),
    };
    const unread = safety({
      registry: [ready],
      local: [copy],
      primary: primaryRead({ a: { lsn: '0/2000' } }, { waits: false }),
      now: T0 + 100,
    });
    assert.equal(unread.ready, false, 'what the primary had flushed was not read (a record)');
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

describe('what a consumer holds, and what the primary’s promise rests on (issue: safe while the world moves)', () => {
  it('a client that acknowledges "last WAL byte + 1" is not ahead; one byte more is', () => {
    const received = parseLsn('0/9000');
    assert.equal(consumerAheadOf(parseLsn('0/9000'), received), false);
    assert.equal(consumerAheadOf(parseLsn('0/9001'), received), false, 'the protocol’s + 1');
    assert.equal(consumerAheadOf(parseLsn('0/9002'), received), true);
    assert.equal(consumerAheadOf(parseLsn('0/9008'), received), true, 'a whole record past it');
    assert.equal(consumerAheadOf(null, received), false, 'never confirmed: holds nothing');
    assert.equal(consumerAheadOf(parseLsn('0/1'), null), true, 'a standby that holds nothing');
    const facts = primaryFactsOf({
      standbySlot: 'standby_slot',
      synchronizedStandbySlots: 'standby_slot',
      slots: [
        { name: 'plus-one', confirmedFlushLsn: parseLsn('0/9001'), failover: true },
        { name: 'past', confirmedFlushLsn: parseLsn('0/9010'), failover: true },
      ],
      received,
    });
    assert.deepEqual(facts.ahead, ['past']);
  });

  it('a read of the standby older than the read of the primary neither makes nor clears "ahead" (no flap)', () => {
    // The record was computed against the standby read after the primary: nobody ahead.
    const read: PrimaryRead = {
      ...primaryRead({ a: { lsn: '0/9800' } }, { waits: true, received: '0/9900' }),
      endedAt: T0 + 500,
    };
    assert.deepEqual(read.facts.ahead, []);
    const older = assessSafety({
      ...baseInput(read),
      standby: { ...standbyAt(T0 + 100, '0/9000') },
    });
    assert.equal(older.ready, true, JSON.stringify(older.not_ready));
    // Recorded ahead against a read made after: a later standby read that caught up clears it,
    // an older one does not.
    const ahead: PrimaryRead = {
      ...primaryRead({ a: { lsn: '0/A000' } }, { waits: true, received: '0/9000' }),
      endedAt: T0 + 500,
    };
    assert.deepEqual(ahead.facts.ahead, ['a']);
    assert.equal(
      assessSafety({ ...baseInput(ahead), standby: standbyAt(T0 + 100, '0/B000') }).ready,
      false,
    );
    assert.equal(
      assessSafety({ ...baseInput(ahead), standby: standbyAt(T0 + 600, '0/B000') }).ready,
      true,
    );
  });

  it('without the setting, a fresh read counts what the primary had flushed (sent), not what consumers confirmed', () => {
    const read: PrimaryRead = {
      ...primaryRead({ a: { lsn: '0/2000' } }, { waits: false, received: '0/9000' }),
      endedAt: T0 + 10,
      flushLsn: parseLsn('0/9800'),
    };
    const behind = assessSafety({ ...baseInput(read), standby: standbyAt(T0 + 20, '0/9000') });
    assert.equal(behind.ready, false, 'consumers may have been sent 0/9000..0/9800');
    assert.match(
      behind.not_ready[0]?.reason ?? '',
      /had flushed WAL up to 0\/9800, past what this standby has received \(0\/9000\)/,
    );
    const before = assessSafety({ ...baseInput(read), standby: standbyAt(T0 + 5, '0/9800') });
    assert.equal(before.ready, false, 'a standby read made before the primary’s proves nothing');
    const caughtUp = assessSafety({ ...baseInput(read), standby: standbyAt(T0 + 20, '0/9800') });
    assert.equal(caughtUp.ready, true, JSON.stringify(caughtUp.not_ready));
  });

  it('the setting protects only through this standby’s own slot, and only once it holds what was flushed before the setting named it', () => {
    const base = {
      standbySlot: 'standby_slot',
      synchronizedStandbySlots: 'standby_slot',
      slots: [],
      received: parseLsn('0/9000'),
    };
    assert.equal(primaryFactsOf(base).waitsForStandby, true);
    const advanced = primaryFactsOf({
      ...base,
      physicalSlot: { restartLsn: parseLsn('0/9100'), active: false },
    });
    assert.equal(advanced.waitsForStandby, false);
    assert.match(
      advanced.unprotected ?? '',
      /past what this standby received .* another server or an operator moved it/,
    );
    const clone = primaryFactsOf({
      ...base,
      physicalSlot: { restartLsn: parseLsn('0/8000'), active: true },
      streaming: false,
    });
    assert.equal(clone.waitsForStandby, false);
    assert.match(clone.unprotected ?? '', /another server streams through its slot/);
    const own = primaryFactsOf({
      ...base,
      physicalSlot: { restartLsn: parseLsn('0/9000'), active: true },
      streaming: true,
    });
    assert.equal(own.waitsForStandby, true);
    const cut = primaryFactsOf({
      ...base,
      physicalSlot: { restartLsn: parseLsn('0/8000'), active: false },
      streaming: false,
    });
    assert.equal(
      cut.waitsForStandby,
      true,
      'nobody streams: consumers stall at the slot, behind this standby',
    );
    const added = primaryFactsOf({ ...base, namedFrom: parseLsn('0/9800') });
    assert.equal(added.waitsForStandby, false);
    assert.match(added.unprotected ?? '', /only since the primary had flushed 0\/9800/);
    assert.equal(primaryFactsOf({ ...base, namedFrom: parseLsn('0/9000') }).waitsForStandby, true);
    const notNamed = primaryFactsOf({
      ...base,
      synchronizedStandbySlots: '',
      physicalSlot: { restartLsn: parseLsn('0/9100'), active: false },
    });
    assert.equal(notNamed.unprotected, null, 'the setting not naming it says so itself');
  });

  it('a narrowing record only takes away', () => {
    const wide = primaryFactsOf({
      standbySlot: 's',
      synchronizedStandbySlots: 's',
      slots: [{ name: 'a', confirmedFlushLsn: parseLsn('0/1'), failover: true }],
      received: parseLsn('0/9000'),
    });
    const cleared = { ...wide, waitsForStandby: false, unprotected: 'x' };
    assert.equal(narrows(wide, cleared), true);
    assert.equal(narrowerFacts(wide, cleared).waitsForStandby, false);
    assert.equal(narrows(cleared, wide), false, 'a read that would add back is no narrowing');
    assert.equal(narrowerFacts(cleared, wide).waitsForStandby, false);
    assert.deepEqual(narrowerFacts(wide, { ...wide, ahead: ['a'] }).ahead, ['a']);
  });

  it('timelines: a standby past the point where the primary’s timeline forked from it has diverged; one not yet switched is not safe either', () => {
    const history =
      '1\t0/3000060\tno recovery target specified\n2\t0/5000000\tno recovery target specified\n';
    assert.equal(forkPointOf(history, 1), parseLsn('0/3000060'));
    assert.equal(forkPointOf(history, 2), parseLsn('0/5000000'));
    assert.equal(forkPointOf(history, 3), null);
    assert.deepEqual(timelineVerdict(2, parseLsn('0/9000000'), 2, null), {
      diverged: null,
      otherTimeline: null,
    });
    const past = timelineVerdict(1, parseLsn('0/3000100'), 2, parseLsn('0/3000060'));
    assert.match(
      past.diverged ?? '',
      /^diverged: .* past 0\/3000060 where the primary's timeline 2 forked/,
    );
    const before = timelineVerdict(1, parseLsn('0/3000060'), 2, parseLsn('0/3000060'));
    assert.equal(before.diverged, null);
    assert.match(before.otherTimeline ?? '', /has not followed the primary's timeline yet/);
    assert.match(timelineVerdict(1, parseLsn('0/1'), 2, null).otherTimeline ?? '', /not readable/);
    const facts = {
      ...primaryRead({ a: { lsn: '0/2000' } }),
      facts: { ...primaryRead({ a: { lsn: '0/2000' } }).facts, diverged: past.diverged },
    };
    const answer = assessSafety({ ...baseInput(facts), standby: standbyAt(T0 + 10, '0/9000') });
    assert.equal(answer.ready, false);
    assert.equal(answer.diverged, past.diverged);
    assert.match(answer.not_ready[0]?.reason ?? '', /^diverged/);
  });
});

function standbyAt(at: number, received: string) {
  return {
    at,
    inRecovery: true,
    systemIdentifier: '42',
    receiveLsn: parseLsn(received),
    replayLsn: parseLsn('0/8000'),
    slots: [copy],
  };
}

function baseInput(primary: PrimaryRead): SafetyInput {
  return {
    now: T0 + 1_000,
    required: null,
    registry: new Map([[ready.name, ready]]),
    bindingProblem: null,
    standby: standbyAt(T0 + 1_000, '0/9000'),
    standbyDown: null,
    primary,
    primaryDown: null,
    lastCycleAt: T0,
    reloaded: false,
    maxAgeMs: 5_000,
  };
}

describe('a copy past its remote (the remote made again behind it)', () => {
  it('is not safe while the primary’s read shows the remote behind the copy', () => {
    const behind = safety({
      registry: [ready],
      local: [copy],
      primary: primaryRead({ a: { lsn: '0/1800' } }, { waits: true, received: '0/9000' }),
    });
    assert.equal(behind.ready, false);
    assert.match(
      behind.not_ready[0]?.reason ?? '',
      /past its remote slot's confirmed_flush_lsn 0\/1800/,
    );
    const level = safety({ registry: [ready], local: [copy] });
    assert.equal(level.ready, true, 'a copy at its remote is safe');
  });
});

describe('facts of another timeline', () => {
  it('facts the primary confirmed while this standby was on timeline 1 say nothing once it follows timeline 2', () => {
    const read = primaryRead({ a: { lsn: '0/2000' } }, { waits: true, received: '0/9000' });
    const onOne: PrimaryRead = { ...read, facts: { ...read.facts, standbyTimeline: 1 } };
    const same = assessSafety({
      ...baseInput(onOne),
      standby: { ...standbyAt(T0 + 10, '0/9000'), timeline: 1 },
    });
    assert.equal(same.ready, true, JSON.stringify(same.not_ready));
    const moved = assessSafety({
      ...baseInput(onOne),
      primaryDown: 'gone',
      standby: { ...standbyAt(T0 + 10, '0/9000'), timeline: 2 },
    });
    assert.equal(moved.ready, false);
    assert.match(
      moved.not_ready[0]?.reason ?? '',
      /follows timeline 2 now, but the primary last confirmed its facts when it was on timeline 1/,
    );
  });
});
