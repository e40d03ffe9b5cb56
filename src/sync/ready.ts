/**
 * The readiness gate an orchestrator asks before promoting: is every required failover
 * slot sync-ready on the standby, as of a cycle recent enough to trust? Pure: answered from
 * the last cycle's views, no query per request.
 */
import type { SlotView } from './view.js';

export interface NotReady {
  name: string;
  reason: string;
}

export interface Readiness {
  ready: boolean;
  /** The slots that had to be ready. */
  required: string[];
  not_ready: NotReady[];
  /** Age of the last successful cycle, null before the first one. */
  age_ms: number | null;
  /** Why the answer as a whole cannot be trusted (no cycle yet, too old), else null. */
  reason: string | null;
}

/**
 * `required`: the names asked for, or null for every failover slot the primary has.
 * `ageMs`: since the last successful cycle (null: none yet); older than `maxAgeMs` is stale.
 */
export function readiness(
  views: readonly SlotView[],
  required: readonly string[] | null,
  ageMs: number | null,
  maxAgeMs: number,
): Readiness {
  const byName = new Map(views.map((v) => [v.name, v]));
  const names = required ?? views.filter((v) => v.remote !== null).map((v) => v.name);
  const notReady: NotReady[] = [];
  for (const name of names) {
    const view = byName.get(name);
    if (view === undefined || view.remote === null) {
      notReady.push({ name, reason: 'no failover slot of that name on the primary' });
    } else if (!view.sync_ready) {
      notReady.push({ name, reason: view.reason ?? `the copy is ${view.state}, not sync-ready` });
    }
  }
  const reason =
    ageMs === null
      ? 'no cycle has succeeded yet'
      : ageMs > maxAgeMs
        ? `the last successful cycle is ${ageMs} ms old (at most ${maxAgeMs} ms is trusted)`
        : null;
  return {
    ready: reason === null && notReady.length === 0,
    required: [...names],
    not_ready: notReady,
    age_ms: ageMs,
    reason,
  };
}

/** `a, b,,c` → [a, b, c]; empty → null (every failover slot). */
export function slotList(text: string | undefined): string[] | null {
  const names = (text ?? '')
    .split(',')
    .map((n) => n.trim())
    .filter((n) => n !== '');
  return names.length === 0 ? null : names;
}
