/**
 * What the engine keeps of its reads of the primary (CycleCache): a read that outlived its
 * wait never restores older facts or clears a later failure; the worker's change probe
 * never makes a read fresher than what it covers. No database: the rules only.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CycleCache } from '../../src/engine/cycle.js';
import { nextRecord } from '../../src/engine/facts.js';
import { parseLsn } from '../../src/sync/lsn.js';
import { type PrimaryRead, primaryFactsOf } from '../../src/sync/safety.js';

function read(at: number, waits: boolean): PrimaryRead {
  return {
    facts: primaryFactsOf({
      standbySlot: 'standby_slot',
      synchronizedStandbySlots: waits ? 'standby_slot' : '',
      slots: [],
      received: parseLsn('0/9000'),
    }),
    at,
    endedAt: at + 5,
    positions: new Map(),
  };
}

describe('the primary as the engine keeps it (CycleCache)', () => {
  it('a read that began before the one kept never replaces it, and clears "does not answer" only when it began after the failure', () => {
    const cache = new CycleCache();
    cache.keepNewerRead(read(2_000, false)); // the setting was cleared (read at 2 s)
    cache.keepNewerRead(read(1_000, true)); // an older read that outlived its wait ends now
    assert.equal(cache.primaryRead?.facts.waitsForStandby, false, 'the older read adds nothing');
    cache.primaryFailed('the primary does not answer', 3_000);
    cache.keepNewerRead(read(2_500, false));
    assert.equal(cache.primaryDown, 'the primary does not answer', 'began before the failure');
    cache.keepNewerRead(read(3_500, false));
    assert.equal(cache.primaryDown, null);
  });

  it('the change probe refreshes only a read that rests on the setting, never one that rests on what was flushed', () => {
    const cache = new CycleCache();
    cache.keepNewerRead(read(1_000, false));
    cache.primaryConfirmed(5_000);
    assert.equal(cache.primaryRead?.at, 1_000, 'flushed WAL is not in the digest');
    cache.keepNewerRead(read(6_000, true));
    cache.primaryConfirmed(9_000);
    assert.equal(cache.primaryRead?.at, 9_000);
    cache.primaryFailed('gone', 10_000);
    cache.primaryConfirmed(9_500); // a probe that began before the failure
    assert.equal(cache.primaryDown, 'gone');
  });

  it('since which flush position the setting names the standby: the first read naming it says where; an older read or another timeline never moves it back', () => {
    const cache = new CycleCache();
    const named = {
      synchronizedStandbySlots: 'standby_slot',
      flushLsn: parseLsn('0/5000'),
      timeline: 1,
    };
    assert.equal(cache.namedFrom(named, 'standby_slot', 100), parseLsn('0/5000'));
    assert.equal(
      cache.namedFrom({ ...named, flushLsn: parseLsn('0/6000') }, 'standby_slot', 200),
      parseLsn('0/5000'),
    );
    assert.equal(
      cache.namedFrom({ ...named, synchronizedStandbySlots: '' }, 'standby_slot', 50),
      parseLsn('0/5000'),
      'a read older than the one that set it changes nothing',
    );
    assert.equal(
      cache.namedFrom({ ...named, timeline: 2, flushLsn: parseLsn('0/8000') }, 'standby_slot', 300),
      parseLsn('0/8000'),
      'another primary’s timeline: from what it had flushed',
    );
    assert.equal(
      cache.namedFrom({ ...named, synchronizedStandbySlots: '' }, 'standby_slot', 400),
      null,
    );
    assert.equal(
      cache.namedFrom({ ...named, timeline: 2, flushLsn: parseLsn('0/9000') }, 'standby_slot', 500),
      parseLsn('0/9000'),
      'named again: WAL flushed before may have been sent',
    );
  });

  it('an older read that ends late only takes away, in memory and in the record', () => {
    const cache = new CycleCache();
    cache.keepNewerRead(read(2_000, true));
    cache.keepNewerRead(read(1_000, false));
    assert.equal(cache.primaryRead?.facts.waitsForStandby, false, 'older, but it takes away');
    const recorded = { facts: read(2_000, false).facts, since: 2_000 };
    assert.equal(nextRecord(recorded, read(1_000, true)), undefined, 'an older read never widens');
    assert.equal(nextRecord(recorded, read(3_000, true))?.facts.waitsForStandby, true);
    const narrowed = nextRecord(
      { facts: read(2_000, true).facts, since: 2_000 },
      read(1_000, false),
    );
    assert.equal(narrowed?.facts.waitsForStandby, false);
    assert.equal(narrowed?.since, 2_000);
  });

  it('the standby’s timeline as known: the highest its walreceiver reported, seeded by the record', () => {
    const cache = new CycleCache();
    assert.equal(cache.timelineOf(null, 2), 2);
    assert.equal(cache.timelineOf({ walTimeline: null }), 2, 'no walreceiver: still known');
    assert.equal(cache.timelineOf({ walTimeline: 3 }), 3);
    assert.equal(cache.timelineOf({ walTimeline: 1 }), 3, 'never goes back');
  });
});
