/**
 * Timelines: whether this standby can still follow the primary. A standby whose WAL went past
 * the point where the primary's timeline forked from its own can never follow it (PostgreSQL
 * refuses: "new timeline N forked off current database system timeline M before current
 * recovery point"): promoting it would fork the cluster again. Pure.
 */
import { formatLsn, type Lsn, parseLsn } from './lsn.js';

/** A timeline history file's switch point for `timeline` ("1\t0/3000060\treason" lines). */
export function forkPointOf(history: string, timeline: number): Lsn | null {
  for (const line of history.split('\n')) {
    const [tli, lsn] = line.trim().split(/\s+/);
    if (tli === undefined || lsn === undefined || Number(tli) !== timeline) continue;
    try {
      return parseLsn(lsn);
    } catch {
      return null;
    }
  }
  return null;
}

export interface TimelineVerdict {
  /** Past the fork point: never safe, ranked last. */
  diverged: string | null;
  /** On an older timeline, not (yet) past the fork point or not known to be: not safe. */
  otherTimeline: string | null;
}

/**
 * `standbyTimeline`: the timeline of the WAL this standby holds; `received`: how far;
 * `forkPoint`: where the primary's history says that timeline ended (null: not known).
 */
export function timelineVerdict(
  standbyTimeline: number | null,
  received: Lsn | null,
  primaryTimeline: number | null,
  forkPoint: Lsn | null,
): TimelineVerdict {
  const none = { diverged: null, otherTimeline: null };
  if (standbyTimeline === null || primaryTimeline === null) return none;
  if (standbyTimeline === primaryTimeline) return none;
  if (standbyTimeline > primaryTimeline) {
    return {
      diverged: `diverged: this standby holds WAL of timeline ${standbyTimeline}, newer than the primary's ${primaryTimeline}`,
      otherTimeline: null,
    };
  }
  if (forkPoint !== null && received !== null && received > forkPoint) {
    return {
      diverged: `diverged: this standby received WAL of timeline ${standbyTimeline} up to ${formatLsn(received)}, past ${formatLsn(forkPoint)} where the primary's timeline ${primaryTimeline} forked from it: it can never follow the primary, and promoting it forks the cluster`,
      otherTimeline: null,
    };
  }
  return {
    diverged: null,
    otherTimeline: `this standby is on timeline ${standbyTimeline}, the primary on ${primaryTimeline}${forkPoint === null ? ' (where it forked is not readable: pg_read_server_files)' : ''}: it has not followed the primary's timeline yet`,
  };
}
