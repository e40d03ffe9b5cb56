/**
 * Quorum for synchronized_standby_slots (SLOTSYNC_STANDBY_SLOTS_QUORUM='ANY k (s1, s2, …)').
 * PostgreSQL's setting has ALL semantics: one lagging or stopped standby stalls every
 * logical consumer of the cluster. slotsync keeps the setting equal to k of the named
 * standbys' physical slots, chosen among those that stream and have received everything the
 * consumers confirmed, and replaces a member only once it has stopped streaming for a while
 * (no flapping on a hiccup). Pure: the manager (engine/quorum.ts) reads the primary, asks
 * this what the set should be, and applies it.
 *
 * Removing a standby is what can make its "safe to promote" answer wrong: consumers may go
 * past its WAL from then on. So a removal is announced first and applied only once that
 * standby's own slotsync has acknowledged it (it then never answers safe from the old set),
 * or once it has been silent for SLOTSYNC_QUORUM_SILENT_MS — and a standby whose slotsync
 * last read the primary longer ago than that never answers safe from that read.
 */
import { SlotSyncError } from '../errors.js';
import { compareLsnDesc, type Lsn } from './lsn.js';
import { standbySlotNames } from './safety.js';

export interface Quorum {
  /** How many named standbys synchronized_standby_slots holds. */
  k: number;
  /** Physical slot names of the standbys, as the primary knows them. */
  slots: string[];
}

/** `ANY 1 (sb1, sb2)` (the form of synchronous_standby_names); null when unset. */
export function parseQuorum(text: string | undefined): Quorum | null {
  if (text === undefined || text.trim() === '') return null;
  const match = /^\s*ANY\s+(\d+)\s*\(([^()]*)\)\s*$/i.exec(text);
  const problem = (why: string) =>
    new SlotSyncError(
      'SLOTSYNC_CONFIG',
      `SLOTSYNC_STANDBY_SLOTS_QUORUM ${why}: write it as ANY k (slot1, slot2, …), got "${text}"`,
    );
  if (!match) throw problem('is not a quorum');
  const k = Number(match[1]);
  const slots = standbySlotNames(match[2] ?? '');
  if (slots.some((s) => !/^[a-z0-9_]{1,63}$/.test(s)))
    throw problem('names a slot that cannot be one');
  if (new Set(slots).size !== slots.length) throw problem('names a slot twice');
  if (k < 1 || k > slots.length) throw problem(`needs 1 ≤ k ≤ ${slots.length}`);
  return { k, slots };
}

/** What the manager read of one named standby's physical slot on the primary. */
export interface StandbySlotState {
  slot: string;
  exists: boolean;
  /** A walsender streams through it. */
  active: boolean;
  /** What the standby has flushed (its physical slot's restart_lsn). */
  flushedLsn: Lsn | null;
  /** Its slotsync is connected to the primary (its presence lock is held). */
  present: boolean;
  /** Its slotsync acknowledged the announced removal (recorded "not protected" first). */
  acknowledged: boolean;
}

/** What the manager remembers between its rounds, per slot. */
export interface SlotHistory {
  /** Since when the slot has streamed without a break (ms); null when it does not. */
  activeSince: number | null;
  /** Since when it has not streamed (ms); null while it does. */
  inactiveSince: number | null;
  /** Since when its slotsync has not been present (ms); null while it is. */
  absentSince: number | null;
}

export interface QuorumTiming {
  /** A member is replaced after it has not streamed this long. */
  removeAfterMs: number;
  /** A standby joins only after it has streamed this long. */
  addAfterMs: number;
  /** A removal nobody acknowledges waits this long after its slotsync went silent. */
  silentMs: number;
}

export interface QuorumDecision {
  /** The set to apply now (sorted as named in the configuration). */
  apply: string[];
  /** Members to remove, announced and waiting for an acknowledgement. */
  pending: string[];
  /** Why, for the log and /health. */
  reasons: string[];
}

/**
 * The next set. Members stay while they stream; a member that has not streamed for
 * removeAfterMs is replaced by the most caught-up named standby that streams (for at least
 * addAfterMs) and has received everything the consumers confirmed (adding it makes no
 * consumer wait). A set short of k is topped up the same way. A removal is applied only
 * once acknowledged, or once the standby's slotsync has been silent silentMs; the set never
 * shrinks below k (nor to nothing).
 */
export function decideQuorum(input: {
  quorum: Quorum;
  current: readonly string[];
  states: ReadonlyMap<string, StandbySlotState>;
  history: ReadonlyMap<string, SlotHistory>;
  /** The furthest confirmed_flush_lsn of the failover slots (what consumers have). */
  consumersAt: Lsn | null;
  now: number;
  timing: QuorumTiming;
}): QuorumDecision {
  const { quorum, states, history, now, timing } = input;
  const named = (slot: string) => quorum.slots.includes(slot);
  const reasons: string[] = [];
  const streamedFor = (slot: string) => {
    const since = history.get(slot)?.activeSince;
    return since === null || since === undefined ? -1 : now - since;
  };
  const down = (slot: string) => {
    const since = history.get(slot)?.inactiveSince;
    return since !== null && since !== undefined && now - since >= timing.removeAfterMs;
  };
  const caughtUp = (slot: string) => {
    const flushed = states.get(slot)?.flushedLsn ?? null;
    return input.consumersAt === null || (flushed !== null && flushed >= input.consumersAt);
  };
  const eligible = (slot: string) =>
    states.get(slot)?.active === true && streamedFor(slot) >= timing.addAfterMs && caughtUp(slot);

  // Members kept: named ones that are not down (slots not named are never kept).
  const members = input.current.filter((s) => named(s));
  const keep = members.filter((s) => !down(s));
  for (const s of input.current.filter((s) => !named(s))) {
    reasons.push(`${s} is not named in SLOTSYNC_STANDBY_SLOTS_QUORUM`);
  }
  // Newcomers: the most caught-up eligible standbys, while the set is short of k.
  const candidates = quorum.slots
    .filter((s) => !keep.includes(s) && eligible(s))
    .sort((a, b) =>
      compareLsnDesc(states.get(a)?.flushedLsn ?? null, states.get(b)?.flushedLsn ?? null),
    );
  const wanted = [...keep];
  for (const s of candidates) {
    if (wanted.length >= quorum.k) break;
    wanted.push(s);
    reasons.push(`${s} joins: it streams and has received everything the consumers confirmed`);
  }
  // More members than k (a configuration that was ALL, or k lowered): the least caught-up go.
  while (wanted.length > quorum.k) {
    const last = [...wanted].sort((a, b) =>
      compareLsnDesc(states.get(a)?.flushedLsn ?? null, states.get(b)?.flushedLsn ?? null),
    )[wanted.length - 1] as string;
    wanted.splice(wanted.indexOf(last), 1);
    reasons.push(`${last} leaves: more than ${quorum.k} standbys are named`);
  }
  // Down members with no replacement stay: the set never shrinks below k.
  for (const s of members) {
    if (wanted.length >= quorum.k) break;
    if (!wanted.includes(s)) {
      wanted.push(s);
      reasons.push(`${s} stays although it does not stream: no other standby can replace it yet`);
    }
  }
  // Removals wait for an acknowledgement, or for the standby's slotsync to be silent long enough.
  const removals = input.current.filter((s) => !wanted.includes(s));
  const pending: string[] = [];
  const apply = [...wanted];
  for (const s of removals) {
    const state = states.get(s);
    const absent = history.get(s)?.absentSince;
    const silent = absent !== null && absent !== undefined && now - absent >= timing.silentMs;
    if (!named(s) || state?.acknowledged === true || silent) {
      if (named(s)) {
        reasons.push(
          state?.acknowledged === true
            ? `${s} leaves: its slotsync acknowledged`
            : `${s} leaves: its slotsync has been silent for ${Math.round((now - (absent ?? now)) / 1000)} s`,
        );
      }
      continue;
    }
    if (members.includes(s) && down(s)) {
      reasons.push(
        `${s} has not streamed for ${Math.round((now - (history.get(s)?.inactiveSince ?? now)) / 1000)} s: its removal waits for its slotsync to acknowledge`,
      );
    }
    pending.push(s);
    apply.push(s); // kept until acknowledged
  }
  return { apply: order(apply, quorum), pending: order(pending, quorum), reasons };
}

function order(slots: readonly string[], quorum: Quorum): string[] {
  return [...new Set(slots)].sort(
    (a, b) => indexOr(quorum.slots, a) - indexOr(quorum.slots, b) || a.localeCompare(b),
  );
}

function indexOr(list: readonly string[], item: string): number {
  const i = list.indexOf(item);
  return i < 0 ? Number.MAX_SAFE_INTEGER : i;
}

/** The next history, from the last one and this round's states. */
export function nextHistory(
  previous: ReadonlyMap<string, SlotHistory>,
  states: ReadonlyMap<string, StandbySlotState>,
  now: number,
): Map<string, SlotHistory> {
  const out = new Map<string, SlotHistory>();
  for (const [slot, state] of states) {
    const last = previous.get(slot) ?? {
      activeSince: null,
      inactiveSince: null,
      absentSince: null,
    };
    out.set(slot, {
      activeSince: state.active ? (last.activeSince ?? now) : null,
      inactiveSince: state.active ? null : (last.inactiveSince ?? now),
      absentSince: state.present ? null : (last.absentSince ?? now),
    });
  }
  return out;
}
