import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  decideQuorum,
  nextHistory,
  parseQuorum,
  type SlotHistory,
  type StandbySlotState,
} from '../../src/sync/quorum.js';

const timing = { removeAfterMs: 1_000, addAfterMs: 1_000, silentMs: 300_000 };
const quorum = { k: 1, slots: ['sb1', 'sb2'] };

function state(slot: string, extra: Partial<StandbySlotState> = {}): StandbySlotState {
  return {
    slot,
    exists: true,
    active: true,
    flushedLsn: 0x5000n,
    present: true,
    acknowledged: false,
    ...extra,
  };
}
function history(entries: Record<string, Partial<SlotHistory>>): Map<string, SlotHistory> {
  return new Map(
    Object.entries(entries).map(([s, h]) => [
      s,
      { activeSince: 0, inactiveSince: null, absentSince: null, ...h },
    ]),
  );
}
const decide = (
  current: string[],
  states: StandbySlotState[],
  hist: Map<string, SlotHistory>,
  now = 10_000,
  consumersAt: bigint | null = 0x4000n,
) =>
  decideQuorum({
    quorum,
    current,
    states: new Map(states.map((s) => [s.slot, s])),
    history: hist,
    consumersAt,
    now,
    timing,
  });

describe('quorum for synchronized_standby_slots (sync/quorum.ts)', () => {
  it('reads ANY k (…) as synchronous_standby_names does; anything else names the variable', () => {
    assert.deepEqual(parseQuorum('ANY 1 (sb1, "sb2")'), { k: 1, slots: ['sb1', 'sb2'] });
    assert.equal(parseQuorum(''), null);
    for (const bad of [
      'FIRST 1 (a, b)',
      'ANY 3 (a, b)',
      'ANY 0 (a)',
      'ANY 1 (a, a)',
      'ANY 1 (A-b)',
    ]) {
      assert.throws(() => parseQuorum(bad), /SLOTSYNC_STANDBY_SLOTS_QUORUM/, bad);
    }
  });

  it('keeps a member while it streams: no flapping toward whoever is a little ahead', () => {
    const d = decide(
      ['sb1'],
      [state('sb1', { flushedLsn: 0x4100n }), state('sb2', { flushedLsn: 0x9000n })],
      history({ sb1: {}, sb2: {} }),
    );
    assert.deepEqual(d.apply, ['sb1']);
    assert.deepEqual(d.pending, []);
  });

  it('replaces a member that stopped streaming only after removeAfterMs, and only once its slotsync acknowledged', () => {
    const states = [state('sb1', { active: false, flushedLsn: 0x4000n }), state('sb2')];
    // Stopped 500 ms ago: a hiccup, nothing changes.
    assert.deepEqual(
      decide(
        ['sb1'],
        states,
        history({ sb1: { activeSince: null, inactiveSince: 9_500 }, sb2: {} }),
      ).apply,
      ['sb1'],
    );
    // Stopped 2 s ago: sb2 joins at once (adding makes no consumer wait); sb1's removal waits.
    const announced = decide(
      ['sb1'],
      states,
      history({ sb1: { activeSince: null, inactiveSince: 8_000 }, sb2: {} }),
    );
    assert.deepEqual(announced.apply, ['sb1', 'sb2']);
    assert.deepEqual(announced.pending, ['sb1']);
    assert.match(announced.reasons.join('\n'), /sb1 has not streamed for 2 s: its removal waits/);
    // Acknowledged: applied.
    const acked = decide(
      ['sb1', 'sb2'],
      [state('sb1', { active: false, acknowledged: true }), state('sb2')],
      history({ sb1: { activeSince: null, inactiveSince: 8_000 }, sb2: {} }),
    );
    assert.deepEqual(acked.apply, ['sb2']);
    assert.deepEqual(acked.pending, []);
  });

  it('a removal nobody acknowledges waits until the standby’s slotsync has been silent silentMs', () => {
    const states = [state('sb1', { active: false, present: false }), state('sb2')];
    const early = decide(
      ['sb1', 'sb2'],
      states,
      history({ sb1: { activeSince: null, inactiveSince: 0, absentSince: 5_000 }, sb2: {} }),
    );
    assert.deepEqual(early.apply, ['sb1', 'sb2']);
    const late = decide(
      ['sb1', 'sb2'],
      states,
      history({ sb1: { activeSince: null, inactiveSince: 0, absentSince: 5_000 }, sb2: {} }),
      400_000,
    );
    assert.deepEqual(late.apply, ['sb2']);
  });

  it('never adds a standby that has not received what the consumers confirmed, nor shrinks below k', () => {
    const behind = decide(
      ['sb1'],
      [state('sb1', { active: false }), state('sb2', { flushedLsn: 0x3000n })],
      history({ sb1: { activeSince: null, inactiveSince: 0 }, sb2: {} }),
    );
    assert.deepEqual(behind.apply, ['sb1'], 'sb1 stays: sb2 would make consumers wait');
    const empty = decide(
      [],
      [state('sb1'), state('sb2', { flushedLsn: 0x9000n })],
      history({ sb1: {}, sb2: {} }),
    );
    assert.deepEqual(empty.apply, ['sb2'], 'an empty set gets the most caught-up');
    const all = decide(
      ['sb1', 'sb2'],
      [state('sb1', { flushedLsn: 0x9000n }), state('sb2')],
      history({ sb1: {}, sb2: {} }),
    );
    assert.deepEqual(
      all.pending,
      ['sb2'],
      'from ALL to ANY 1: the least caught-up leaves, acknowledged first',
    );
  });

  it('remembers since when each slot streams, stopped, or its slotsync went away', () => {
    const first = nextHistory(
      new Map(),
      new Map([['sb1', state('sb1', { active: false, present: false })]]),
      100,
    );
    assert.deepEqual(first.get('sb1'), { activeSince: null, inactiveSince: 100, absentSince: 100 });
    const later = nextHistory(first, new Map([['sb1', state('sb1')]]), 900);
    assert.deepEqual(later.get('sb1'), {
      activeSince: 900,
      inactiveSince: null,
      absentSince: null,
    });
  });
});
