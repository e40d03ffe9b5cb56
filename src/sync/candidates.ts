/**
 * Ranking the nodes an orchestrator may promote (`slotsync candidates`), from each node's
 * promotion readiness (GET /ready, sync/safety.ts): safe candidates first, then the most WAL
 * received, then the least slot lag. For each candidate and consumer slot, what promoting it
 * would do to that consumer. Pure.
 */
import { compareLsnDesc, type Lsn, lsnDistance, parseLsn } from './lsn.js';
import type { Safety } from './safety.js';

export interface Asked {
  url: string;
  /** The node's answer; null when it did not answer (error says why). */
  answer: Safety | null;
  error: string | null;
}

export type CandidateStatus = 'safe' | 'not safe' | 'primary' | 'unreachable' | 'diverged';

export interface Candidate {
  url: string;
  status: CandidateStatus;
  role: Safety['role'];
  receive_lsn: string | null;
  replay_lsn: string | null;
  /** The timeline of the WAL the node holds (null: unknown). */
  timeline: number | null;
  /** Bytes between the consumers' confirmed positions and the copies, summed. */
  slot_lag_bytes: number | null;
  /** Why not safe (or unreachable), null when safe. */
  reason: string | null;
  /** Per consumer slot, what a promotion of this node would do to it. */
  what_if: { slot: string; line: string }[];
}

export interface Ranking {
  candidates: Candidate[];
  /** The URL of the best safe candidate, null when none is safe. */
  best: string | null;
}

const ORDER: Record<CandidateStatus, number> = {
  safe: 0,
  'not safe': 1,
  primary: 2,
  unreachable: 3,
  // A node whose WAL went past the primary's fork: promoting it forks the cluster again.
  diverged: 4,
};

export function rankCandidates(asked: readonly Asked[]): Ranking {
  // The cluster's view: a standby on an older timeline than a node that answers as the
  // primary has not followed it, whatever its own (maybe stale) read of a primary said.
  const primaryTimeline = Math.max(
    0,
    ...asked.map((a) => (a.answer?.role === 'primary' ? (a.answer.timeline ?? 0) : 0)),
  );
  const candidates = asked.map((a) => candidateOf(a, primaryTimeline, newerSetting(a, asked)));
  candidates.sort(
    (a, b) =>
      ORDER[a.status] - ORDER[b.status] ||
      // WAL positions compare only on one timeline: a newer timeline first.
      (b.timeline ?? 0) - (a.timeline ?? 0) ||
      compareTextLsnDesc(a.receive_lsn, b.receive_lsn) ||
      (a.slot_lag_bytes ?? Number.POSITIVE_INFINITY) -
        (b.slot_lag_bytes ?? Number.POSITIVE_INFINITY) ||
      a.url.localeCompare(b.url),
  );
  const best = candidates.find((c) => c.status === 'safe')?.url ?? null;
  return { candidates, best };
}

/**
 * The cluster's view of the setting: a read of the primary by another slotsync, newer than
 * the one `node`'s "the primary waits for me" rests on, whose synchronized_standby_slots no
 * longer names `node`'s slot. The standby alone cannot tell a dead primary from a partition
 * after which someone edited the setting; another node that still reached the primary can.
 */
function newerSetting(node: Asked, asked: readonly Asked[]): string | null {
  const mine = node.answer?.primary;
  if (!mine?.waits_for_standby || !mine.read_at || !mine.standby_slot) return null;
  for (const other of asked) {
    const theirs = other.answer?.primary;
    if (other === node || !theirs?.read_at || !theirs.standby_slots) continue;
    if (theirs.read_at > mine.read_at && !theirs.standby_slots.includes(mine.standby_slot)) {
      return `the primary's synchronized_standby_slots no longer named "${mine.standby_slot}" at ${theirs.read_at} (read by ${other.url}), after this node's own read (${mine.read_at})`;
    }
  }
  return null;
}

function candidateOf(
  { url, answer, error }: Asked,
  primaryTimeline: number,
  unnamed: string | null = null,
): Candidate {
  if (answer === null || answer.slots === undefined) {
    return {
      url,
      status: 'unreachable',
      role: 'unknown',
      receive_lsn: null,
      replay_lsn: null,
      timeline: null,
      slot_lag_bytes: null,
      reason: error ?? 'no answer',
      what_if: [],
    };
  }
  const diverged = answer.diverged ?? null;
  const timeline = answer.timeline ?? null;
  const behind =
    answer.role !== 'primary' && timeline !== null && timeline < primaryTimeline
      ? `on timeline ${timeline}, older than the primary's ${primaryTimeline}: it has not followed the primary`
      : answer.role !== 'primary'
        ? unnamed
        : null;
  const status: CandidateStatus =
    answer.role === 'primary'
      ? 'primary'
      : diverged !== null
        ? 'diverged'
        : answer.ready && behind === null
          ? 'safe'
          : 'not safe';
  const lags = answer.slots.map((s) => s.lag_bytes);
  return {
    url,
    status,
    role: answer.role,
    receive_lsn: answer.receive_lsn,
    replay_lsn: answer.replay_lsn,
    timeline: answer.timeline ?? null,
    slot_lag_bytes: lags.some((l) => l === null)
      ? null
      : lags.reduce<number>((a, l) => a + (l ?? 0), 0),
    reason:
      status === 'safe'
        ? null
        : (diverged ??
          behind ??
          answer.reason ??
          answer.not_ready.map((n) => `${n.name}: ${n.reason}`).join('; ') ??
          null),
    what_if: answer.slots.map((slot) => ({
      slot: slot.name,
      line:
        slot.safe && status === 'safe'
          ? `resumes at ${slot.resume_lsn}, its consumer confirmed ${slot.consumer_confirmed_lsn ?? 'unknown'}, ${sentAgain(slot.resume_lsn, slot.consumer_confirmed_lsn)} sent again`
          : `lost: no ready copy (${slot.reason ?? diverged ?? behind ?? 'not safe'})`,
    })),
  };
}

/** The bytes a consumer that starts from the copy's position would get again. */
function sentAgain(resume: string | null, confirmed: string | null): string {
  const bytes = lsnDistance(parseOrNull(resume), parseOrNull(confirmed));
  return bytes === null ? 'unknown bytes' : `${bytes} bytes`;
}

function parseOrNull(text: string | null): Lsn | null {
  try {
    return text === null ? null : parseLsn(text);
  } catch {
    return null;
  }
}

function compareTextLsnDesc(a: string | null, b: string | null): number {
  return compareLsnDesc(parseOrNull(a), parseOrNull(b));
}

/**
 * The ranked table, one node a line, each followed by its what-if lines; the last line is
 * the best candidate's URL alone (for a script), or says there is none.
 */
export function formatRanking(ranking: Ranking): string[] {
  const lines: string[] = [];
  ranking.candidates.forEach((c, i) => {
    lines.push(
      `${i + 1}. ${c.url}  ${c.status}  received ${c.receive_lsn ?? '-'}  replayed ${c.replay_lsn ?? '-'}  slot lag ${c.slot_lag_bytes ?? '-'} bytes${c.reason ? `  (${c.reason})` : ''}`,
    );
    for (const w of c.what_if) lines.push(`     ${w.slot}: ${w.line}`);
  });
  lines.push(ranking.best ?? 'no safe candidate');
  return lines;
}
