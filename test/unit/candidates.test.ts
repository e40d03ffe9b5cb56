import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCandidatesArgs } from '../../src/cli/candidates.js';
import { formatRanking, rankCandidates } from '../../src/sync/candidates.js';
import type { Safety, SlotVerdict } from '../../src/sync/safety.js';

function verdict(name: string, safe: boolean, extra: Partial<SlotVerdict> = {}): SlotVerdict {
  const fact = { holds: safe, age_ms: 1, detail: safe ? 'ok' : 'no' };
  return {
    name,
    safe,
    reason: safe ? null : 'the copy of "sub" is not sync-ready yet',
    facts: { copy: fact, unmoved: fact, consumers: fact },
    lag_bytes: 100,
    resume_lsn: '0/3000',
    consumer_confirmed_lsn: '0/3100',
    consumer_ahead: false,
    ...extra,
  };
}

function answer(received: string, slots: SlotVerdict[], role: Safety['role'] = 'standby'): Safety {
  const ready = role === 'standby' && slots.every((s) => s.safe);
  return {
    ready,
    required: slots.map((s) => s.name),
    not_ready: slots.filter((s) => !s.safe).map((s) => ({ name: s.name, reason: s.reason ?? '' })),
    age_ms: 10,
    reason: role === 'primary' ? 'this node is the primary' : null,
    role,
    receive_lsn: received,
    replay_lsn: received,
    timeline: 1,
    diverged: null,
    primary: { reachable: false, age_ms: 10, waits_for_standby: true, detail: '' },
    slots,
  };
}

describe('slotsync candidates: the ranking', () => {
  it('safe first, then the most WAL received, then the least slot lag; unreachable last, never safe', () => {
    const ranking = rankCandidates([
      { url: 'http://down', answer: null, error: 'did not answer: ECONNREFUSED' },
      { url: 'http://notready', answer: answer('0/9000', [verdict('sub', false)]), error: null },
      { url: 'http://behind', answer: answer('0/4000', [verdict('sub', true)]), error: null },
      { url: 'http://ahead', answer: answer('0/8000', [verdict('sub', true)]), error: null },
      {
        url: 'http://lagging',
        answer: answer('0/8000', [verdict('sub', true, { lag_bytes: 5000 })]),
        error: null,
      },
      { url: 'http://old', answer: answer('0/9000', [], 'primary'), error: null },
    ]);
    assert.deepEqual(
      ranking.candidates.map((c) => `${c.url} ${c.status}`),
      [
        'http://ahead safe',
        'http://lagging safe',
        'http://behind safe',
        'http://notready not safe',
        'http://old primary',
        'http://down unreachable',
      ],
    );
    assert.equal(ranking.best, 'http://ahead');
    const best = ranking.candidates[0];
    assert.deepEqual(best?.what_if, [
      {
        slot: 'sub',
        line: 'resumes at 0/3000, its consumer confirmed 0/3100, 256 bytes sent again',
      },
    ]);
    assert.match(ranking.candidates[3]?.what_if[0]?.line ?? '', /^lost: no ready copy \(/);
    const text = formatRanking(ranking);
    assert.equal(text.at(-1), 'http://ahead', 'the best URL alone on the last line');
    assert.match(text.join('\n'), /http:\/\/down {2}unreachable .*ECONNREFUSED/);
  });

  it('timelines: a node that diverged is ranked last, one on an older timeline than the primary is not safe, whatever its own read said', () => {
    const on = (timeline: number, a: Safety): Safety => ({ ...a, timeline });
    const ranking = rankCandidates([
      {
        url: 'http://forked',
        answer: {
          ...on(1, answer('0/9000', [verdict('sub', false)])),
          diverged: 'diverged: past 0/5000 where the primary forked',
        },
        error: null,
      },
      // Its own slotsync still reads the dead primary: it says ready, but B is the primary now.
      { url: 'http://stale', answer: on(1, answer('0/9900', [verdict('sub', true)])), error: null },
      {
        url: 'http://follower',
        answer: on(2, answer('0/6000', [verdict('sub', true)])),
        error: null,
      },
      { url: 'http://b', answer: on(2, answer('0/7000', [], 'primary')), error: null },
      { url: 'http://down', answer: null, error: 'did not answer' },
    ]);
    assert.deepEqual(
      ranking.candidates.map((c) => `${c.url} ${c.status}`),
      [
        'http://follower safe',
        'http://stale not safe',
        'http://b primary',
        'http://down unreachable',
        'http://forked diverged',
      ],
    );
    assert.equal(
      ranking.best,
      'http://follower',
      'never the node with the most WAL of an old timeline',
    );
    assert.match(ranking.candidates[1]?.reason ?? '', /on timeline 1, older than the primary's 2/);
    assert.match(
      ranking.candidates[1]?.what_if[0]?.line ?? '',
      /^lost: .*older than the primary's 2/,
    );
    assert.match(ranking.candidates[4]?.reason ?? '', /^diverged/);
  });

  it('the cluster’s view: a node whose "the primary waits for me" is older than another node’s read that no longer names its slot is not safe', () => {
    const at = (iso: string, slot: string, slots: string[], a: Safety): Safety => ({
      ...a,
      primary: {
        ...a.primary,
        waits_for_standby: slots.includes(slot),
        standby_slot: slot,
        standby_slots: slots,
        read_at: iso,
      },
    });
    const ranking = rankCandidates([
      // Its own last read (10:00) said the setting names it; it has not read since.
      {
        url: 'http://stale',
        answer: at(
          '2026-12-06T10:00:00.000Z',
          'a_slot',
          ['a_slot'],
          answer('0/9000', [verdict('sub', true)]),
        ),
        error: null,
      },
      // Another slotsync read the primary at 10:05: the operator took a_slot out.
      {
        url: 'http://other',
        answer: at(
          '2026-12-06T10:05:00.000Z',
          'b_slot',
          ['b_slot'],
          answer('0/8000', [verdict('sub', true)]),
        ),
        error: null,
      },
    ]);
    assert.deepEqual(
      ranking.candidates.map((c) => `${c.url} ${c.status}`),
      ['http://other safe', 'http://stale not safe'],
    );
    assert.match(
      ranking.candidates[1]?.reason ?? '',
      /no longer named "a_slot" at 2026-12-06T10:05:00.000Z \(read by http:\/\/other\)/,
    );
    const older = rankCandidates([
      {
        url: 'http://fresh',
        answer: at(
          '2026-12-06T10:05:00.000Z',
          'a_slot',
          ['a_slot'],
          answer('0/9000', [verdict('sub', true)]),
        ),
        error: null,
      },
      {
        url: 'http://old',
        answer: at(
          '2026-12-06T10:00:00.000Z',
          'b_slot',
          ['b_slot'],
          answer('0/8000', [verdict('sub', true)]),
        ),
        error: null,
      },
    ]);
    assert.equal(older.best, 'http://fresh', 'an older read of another node changes nothing');
  });

  it('no safe candidate: best is null and the text says so', () => {
    const ranking = rankCandidates([
      { url: 'http://a', answer: answer('0/9000', [verdict('sub', false)]), error: null },
      { url: 'http://b', answer: null, error: 'did not answer' },
    ]);
    assert.equal(ranking.best, null);
    assert.equal(formatRanking(ranking).at(-1), 'no safe candidate');
  });

  it('reads its arguments; bad ones are usage errors', () => {
    assert.deepEqual(
      parseCandidatesArgs(
        ['--url', 'http://a:1/', '--url=http://b:2', '--slots', 'x,y', '--json'],
        {
          SLOTSYNC_READ_TOKEN: 'read-token-0123456789',
        },
      ),
      {
        urls: ['http://a:1', 'http://b:2'],
        slots: ['x', 'y'],
        json: true,
        token: 'read-token-0123456789',
      },
    );
    for (const bad of [[], ['--url'], ['--url', 'a:1'], ['--nope', '1']]) {
      assert.throws(() => parseCandidatesArgs(bad), { code: 'SLOTSYNC_CONFIG' }, bad.join(' '));
    }
  });
});
