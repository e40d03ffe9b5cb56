/**
 * Safe to promote: the one definition (DESIGN.md, "Safe to promote") behind GET /ready,
 * `slotsync gate`, `sync_ready` in GET /slots and POST /shutdown, and the slotsync_ready
 * metric. Pure: the facts come in, each with the time it was read, and every verdict names
 * the facts it rests on and their age.
 *
 * A required slot is safe on this standby only when
 *   1. its copy is published and was sync-ready at the last cycle (the registry says so);
 *   2. the copy, as the standby shows it now, is where slotsync left it: not moved by anyone
 *      (its confirmed_flush_lsn is not past the position slotsync recorded before its last
 *      move), not invalidated, not in use, not dropped and made again;
 *   3. no consumer can be ahead of this standby: its confirmed_flush_lsn, as last read on
 *      the primary, is not past the WAL this standby has received, and either the primary
 *      waits for this standby (synchronized_standby_slots names its physical slot and the
 *      slot is a failover slot: a walsender then sends no change the standby has not
 *      flushed) or that read is fresh and the primary still answers.
 * Facts 1 and 3-with-the-setting cannot change once the primary is gone: they carry no age
 * limit. Fact 2 is read at every question.
 */
import { formatLsn, type Lsn, lsnDistance } from './lsn.js';
import { isOwnedCopy } from './rules.js';
import type { LocalSlot, RegistryEntry } from './types.js';

/**
 * What the last read of the primary said about this standby and its consumers. The part
 * that can change the answer once the primary is gone is kept in the registry (written
 * only when it changes); positions are kept in memory.
 */
export interface PrimaryFacts {
  /** The standby's physical slot on the primary (its primary_slot_name). */
  standbySlot: string;
  /** synchronized_standby_slots named standbySlot at that read. */
  waitsForStandby: boolean;
  /** The primary's failover slots that slotsync looks after, sorted. */
  failoverSlots: string[];
  /** Of those, the ones whose confirmed_flush_lsn was past this standby's received WAL. */
  ahead: string[];
  /**
   * The setting is managed by a quorum that names this standby (SLOTSYNC_STANDBY_SLOTS_QUORUM):
   * the manager may remove a standby whose slotsync has been silent this long, so a read older
   * than this does not prove the primary still waits for it. Null otherwise.
   */
  quorumSilentMs?: number | null;
}

/** The primary as last read: its facts, when it last confirmed them, its slots' positions. */
export interface PrimaryRead {
  facts: PrimaryFacts;
  /** When the primary last confirmed the facts (ms since the epoch). */
  at: number;
  /**
   * The consumers' positions at that read (logical slots slotsync looks after, failover or
   * not); null when only the registry's record is known (slotsync started after the primary
   * stopped answering).
   */
  positions: ReadonlyMap<string, { confirmedFlushLsn: Lsn | null; failover: boolean }> | null;
}

/** The standby, read at the moment of asking. */
export interface StandbyRead {
  at: number;
  inRecovery: boolean;
  /** pg_control_system().system_identifier, as text. */
  systemIdentifier: string;
  /** pg_last_wal_receive_lsn(): WAL received and flushed (null when nothing streamed yet). */
  receiveLsn: Lsn | null;
  replayLsn: Lsn | null;
  slots: readonly LocalSlot[];
}

export interface SafetyInput {
  now: number;
  /** The slots asked for; null: every failover slot of the primary and every owned copy. */
  required: readonly string[] | null;
  registry: ReadonlyMap<string, RegistryEntry>;
  /** Why the registry cannot be trusted on this standby (another node's), else null. */
  bindingProblem: string | null;
  /** The standby as last read; null when it could not be read (standbyDown says why). */
  standby: StandbyRead | null;
  standbyDown: string | null;
  primary: PrimaryRead | null;
  /** Why the primary does not answer now (its last contact failed), else null. */
  primaryDown: string | null;
  /** When the last cycle of this engine succeeded (null: none since start or reload). */
  lastCycleAt: number | null;
  /** Set after a reload that swapped the engine, until its first cycle. */
  reloaded: boolean;
  /** How long a read of a primary that does not wait for this standby is trusted. */
  maxAgeMs: number;
}

export interface Fact {
  holds: boolean;
  /** How old the fact is; null when it was never read. */
  age_ms: number | null;
  detail: string;
}

export interface SlotVerdict {
  name: string;
  safe: boolean;
  /** Why not, in words an operator can act on; null when safe. */
  reason: string | null;
  facts: { copy: Fact; unmoved: Fact; consumers: Fact };
  /** Bytes between the consumer's confirmed position and the copy's. */
  lag_bytes: number | null;
  /** Where the copy would start a consumer after promotion (its confirmed_flush_lsn). */
  resume_lsn: string | null;
  /** The consumer's confirmed_flush_lsn on the primary, as last read. */
  consumer_confirmed_lsn: string | null;
  /**
   * The consumer is known to be past the WAL this standby holds: after promotion it would
   * skip what the new primary writes there (POST /shutdown drops such a copy).
   */
  consumer_ahead: boolean;
}

export type Role = 'standby' | 'primary' | 'unknown';

export interface Safety {
  ready: boolean;
  /** The slots that had to be safe. */
  required: string[];
  not_ready: { name: string; reason: string }[];
  /** Age of the last successful cycle (null: none since start or reload). */
  age_ms: number | null;
  /** Why no slot can be safe (no cycle yet, this node is the primary, ...), else null. */
  reason: string | null;
  role: Role;
  receive_lsn: string | null;
  replay_lsn: string | null;
  primary: {
    /** The primary answered its last contact. */
    reachable: boolean;
    /** Age of the primary's facts (null: never read). */
    age_ms: number | null;
    waits_for_standby: boolean | null;
    detail: string;
  };
  slots: SlotVerdict[];
}

export const PRIMARY_ROLE_REASON = 'this node is the primary';
export const NEVER_READ_REASON =
  'no cycle has read the primary yet: the failover slots to protect are not known';
export const RELOADED_REASON = 'no cycle since the reload';

/** The one verdict. */
export function assessSafety(input: SafetyInput): Safety {
  const { now, primary } = input;
  const standby: StandbyRead = input.standby ?? {
    at: now,
    inRecovery: true,
    systemIdentifier: '',
    receiveLsn: null,
    replayLsn: null,
    slots: [],
  };
  const required = requiredSlots(input);
  const role: Role =
    input.standby === null ? 'unknown' : standby.inRecovery ? 'standby' : 'primary';
  const received = receivedLsn(standby);
  const reason =
    input.standby === null
      ? `the standby cannot be read: ${input.standbyDown ?? 'not read yet'}`
      : !standby.inRecovery
        ? PRIMARY_ROLE_REASON
        : input.bindingProblem !== null
          ? input.bindingProblem
          : input.reloaded
            ? RELOADED_REASON
            : primary === null
              ? NEVER_READ_REASON
              : null;
  const local = new Map(standby.slots.map((slot) => [slot.name, slot]));
  const slots = required.map((name) =>
    verdictOf(name, input, local.get(name), input.registry.get(name), received),
  );
  const blocked = reason !== null;
  const verdicts = blocked
    ? slots.map((v) => ({ ...v, safe: false, reason: v.reason ?? reason }))
    : slots;
  return {
    ready: !blocked && verdicts.every((v) => v.safe),
    required,
    not_ready: verdicts
      .filter((v) => !v.safe)
      .map((v) => ({ name: v.name, reason: v.reason ?? 'not safe' })),
    age_ms: input.lastCycleAt === null ? null : Math.max(0, now - input.lastCycleAt),
    reason,
    role,
    receive_lsn: formatLsn(standby.receiveLsn),
    replay_lsn: formatLsn(standby.replayLsn),
    primary: {
      reachable: input.primaryDown === null && primary !== null,
      age_ms: primary === null ? null : Math.max(0, now - primary.at),
      waits_for_standby: primary?.facts.waitsForStandby ?? null,
      detail:
        input.primaryDown ??
        (primary === null
          ? 'never read'
          : primary.facts.waitsForStandby
            ? `synchronized_standby_slots names "${primary.facts.standbySlot}": consumers of failover slots never get WAL this standby has not flushed`
            : `synchronized_standby_slots does not name "${primary.facts.standbySlot}": consumers may receive WAL this standby has not received`),
    },
    slots: verdicts,
  };
}

/**
 * The slots that must be safe: the ones asked for, else every failover slot the primary had
 * at its last read and every copy slotsync owns (a slot whose failover flag is off for a
 * moment, after a failover, stays required: the answer is never vacuously yes).
 */
export function requiredSlots(
  input: Pick<SafetyInput, 'required' | 'registry' | 'primary'>,
): string[] {
  if (input.required !== null) return [...new Set(input.required)];
  const names = new Set(input.primary?.facts.failoverSlots ?? []);
  for (const entry of input.registry.values()) names.add(entry.name);
  return [...names].sort();
}

/** WAL this standby holds: received and flushed, or replayed when nothing streamed yet. */
export function receivedLsn(standby: Pick<StandbyRead, 'receiveLsn' | 'replayLsn'>): Lsn | null {
  if (standby.receiveLsn === null) return standby.replayLsn;
  if (standby.replayLsn === null) return standby.receiveLsn;
  // biome-ignore lint/complexity/useMathMinMax: LSNs are bigints, which Math.max refuses
  return standby.receiveLsn > standby.replayLsn ? standby.receiveLsn : standby.replayLsn;
}

function verdictOf(
  name: string,
  input: SafetyInput,
  slot: LocalSlot | undefined,
  entry: RegistryEntry | undefined,
  received: Lsn | null,
): SlotVerdict {
  const { now, primary } = input;
  const remote = primary?.positions?.get(name) ?? null;
  const copy = copyFact(name, entry, input);
  const unmoved = unmovedFact(name, entry, slot, now - (input.standby?.at ?? now));
  const { fact: consumers, ahead } = consumersFact(name, input, received);
  const failed = [copy, unmoved, consumers].find((fact) => !fact.holds);
  const confirmed = remote?.confirmedFlushLsn ?? null;
  const resume = unmoved.holds ? (slot?.confirmedFlushLsn ?? null) : null;
  return {
    name,
    safe: failed === undefined,
    reason: failed?.detail ?? null,
    facts: { copy, unmoved, consumers },
    lag_bytes: resume === null ? null : lsnDistance(resume, confirmed),
    resume_lsn: formatLsn(resume),
    consumer_confirmed_lsn: formatLsn(confirmed),
    consumer_ahead: ahead,
  };
}

/** Fact 1: published and sync-ready as of the last cycle (the registry's record). */
function copyFact(name: string, entry: RegistryEntry | undefined, input: SafetyInput): Fact {
  const age = entry === undefined ? null : Math.max(0, input.now - Date.parse(entry.updatedAt));
  if (entry === undefined) {
    const known = input.primary?.facts.failoverSlots.includes(name) ?? false;
    return {
      holds: false,
      age_ms: null,
      detail: known
        ? `replication slot "${name}" has no copy on this standby yet`
        : `no failover slot "${name}" on the primary and no copy of it on this standby`,
    };
  }
  if (entry.state !== 'sync_ready') {
    return {
      holds: false,
      age_ms: age,
      detail:
        entry.state === 'invalidated'
          ? `replication slot "${name}" was invalidated on the primary (${entry.remoteInvalidation ?? 'unknown reason'}); its copy is not kept`
          : `the copy of "${name}" is not sync-ready yet (${entry.state === 'retiring' ? 'it is being dropped and staged afresh' : 'it lives under its staging name until the remote slot catches up with it'})`,
    };
  }
  return { holds: true, age_ms: age, detail: `the copy of "${name}" is published and sync-ready` };
}

/**
 * Fact 2: the copy as the standby shows it now is the one slotsync left. Its
 * confirmed_flush_lsn may be behind the recorded position (an advance in flight: the target
 * is recorded before the move), never past it: a copy past it was moved by someone else (a
 * slot made again after a drop starts past it too: its consistent point comes after the
 * standby's replay position, which bounds every position slotsync records).
 */
export function unmovedFact(
  name: string,
  entry: RegistryEntry | undefined,
  slot: LocalSlot | undefined,
  ageMs: number,
): Fact {
  const age = Math.max(0, ageMs);
  const problem = movedReason(name, entry, slot);
  return problem === null
    ? {
        holds: true,
        age_ms: age,
        detail: `the copy of "${name}" is at ${formatLsn(slot?.confirmedFlushLsn ?? null)}, where slotsync left it`,
      }
    : { holds: false, age_ms: age, detail: problem };
}

/** Why the published copy is not the one slotsync left, or null. */
export function movedReason(
  name: string,
  entry: RegistryEntry | undefined,
  slot: LocalSlot | undefined,
): string | null {
  if (entry === undefined || entry.state !== 'sync_ready') return `"${name}" has no published copy`;
  if (slot === undefined) return `the copy of "${name}" is gone from the standby (dropped)`;
  if (!isOwnedCopy(slot, entry)) {
    return `the slot "${name}" on the standby is not slotsync's copy (its type, plugin or database differs, or PostgreSQL's own worker syncs it)`;
  }
  if (slot.invalidationReason !== null) {
    return `the copy of "${name}" was invalidated on the standby (${slot.invalidationReason})`;
  }
  const given = entry.confirmedFlushLsn;
  if (given !== null && slot.confirmedFlushLsn !== null && slot.confirmedFlushLsn > given) {
    return `the copy of "${name}" was moved on the standby by someone else (confirmed_flush_lsn ${formatLsn(slot.confirmedFlushLsn)}, slotsync left it at ${formatLsn(given)})`;
  }
  if (slot.active) {
    return `the copy of "${name}" is in use on the standby: a consumer connected to the wrong server may move it at any moment`;
  }
  return null;
}

/** Fact 3: no consumer of the slot can be ahead of the WAL this standby holds. */
function consumersFact(
  name: string,
  input: SafetyInput,
  received: Lsn | null,
): { fact: Fact; ahead: boolean } {
  const { primary, now } = input;
  const no = (age: number | null, detail: string, ahead = false) => ({
    fact: { holds: false, age_ms: age, detail },
    ahead,
  });
  const yes = (age: number, detail: string) => ({
    fact: { holds: true, age_ms: age, detail },
    ahead: false,
  });
  if (primary === null) return no(null, NEVER_READ_REASON);
  const age = Math.max(0, now - primary.at);
  const { facts } = primary;
  const position = primary.positions?.get(name);
  const failover = position?.failover ?? facts.failoverSlots.includes(name);
  const confirmed = position?.confirmedFlushLsn ?? null;
  if (position === undefined && primary.positions !== null) {
    return no(age, `replication slot "${name}" does not exist on the primary`);
  }
  // Ahead: known from the positions (against what the standby holds now, which only
  // grows), else from the record of the last read.
  const ahead =
    position !== undefined
      ? confirmed !== null && (received === null || confirmed > received)
      : facts.ahead.includes(name);
  if (ahead) {
    return no(
      age,
      `the consumer of "${name}" confirmed ${formatLsn(confirmed) ?? 'a position'} past the WAL this standby has received (${formatLsn(received) ?? 'none'}): after promotion it would skip what the new primary writes there`,
      true,
    );
  }
  if (!failover) {
    return no(
      age,
      primary.positions === null
        ? `replication slot "${name}" was not a failover slot of the primary at its last read`
        : `replication slot "${name}" is not a failover slot on the primary (waiting for failover on the new primary): its consumers do not wait for this standby`,
    );
  }
  const quorumSilent = facts.quorumSilentMs ?? null;
  if (facts.waitsForStandby && quorumSilent !== null && age > quorumSilent) {
    return no(
      age,
      `the primary waited for this standby at a read ${Math.round(age / 1000)} s ago, but a quorum manages synchronized_standby_slots and may have removed it since (a standby silent for ${Math.round(quorumSilent / 1000)} s may be removed: SLOTSYNC_QUORUM_SILENT_MS)`,
    );
  }
  if (facts.waitsForStandby) {
    return yes(
      age,
      `the primary waits for this standby (synchronized_standby_slots names "${facts.standbySlot}") and the consumer of "${name}" was not ahead of it`,
    );
  }
  if (quorumSilent !== null) {
    // A quorum manages the setting and this standby is outside its set: the consumers do not
    // wait for it, whatever a fresh read says (it is safe again once back in the set).
    return no(
      age,
      `consumers may be ahead: this standby is outside the quorum's synchronized_standby_slots (SLOTSYNC_STANDBY_SLOTS_QUORUM), so the primary does not wait for it`,
    );
  }
  if (input.primaryDown !== null || age > input.maxAgeMs) {
    return no(
      age,
      `consumers may be ahead: the primary does not wait for this standby (synchronized_standby_slots does not name "${facts.standbySlot}")${input.primaryDown !== null ? ' and it does not answer' : ` and its last read is ${age} ms old (at most ${input.maxAgeMs} ms is trusted)`}`,
    );
  }
  return yes(
    age,
    `the consumer of "${name}" was not ahead of this standby at a read of the primary ${age} ms ago (the primary does not wait for this standby: this holds only while it answers)`,
  );
}

/** The record of one read of the primary: what the registry keeps (see PrimaryFacts). */
export function primaryFactsOf(read: {
  standbySlot: string;
  synchronizedStandbySlots: string | null;
  slots: readonly { name: string; confirmedFlushLsn: Lsn | null; failover: boolean }[];
  received: Lsn | null;
  /** The quorum manager announced this standby's removal: no longer protected. */
  removalPending?: boolean;
  /** SLOTSYNC_QUORUM_SILENT_MS when a quorum names this standby's slot, else null. */
  quorumSilentMs?: number | null;
}): PrimaryFacts {
  const failover = read.slots.filter((s) => s.failover);
  return {
    standbySlot: read.standbySlot,
    waitsForStandby:
      namesSlot(read.synchronizedStandbySlots, read.standbySlot) && read.removalPending !== true,
    quorumSilentMs: read.quorumSilentMs ?? null,
    failoverSlots: failover.map((s) => s.name).sort(),
    ahead: failover
      .filter(
        (s) =>
          s.confirmedFlushLsn !== null &&
          (read.received === null || s.confirmedFlushLsn > read.received),
      )
      .map((s) => s.name)
      .sort(),
  };
}

/** The slot names of a synchronized_standby_slots-style list (comma-separated, maybe quoted). */
export function standbySlotNames(list: string): string[] {
  return list
    .split(',')
    .map((s) => s.trim().replace(/^"(.*)"$/, '$1'))
    .filter((s) => s !== '');
}

/** Whether synchronized_standby_slots names `slot`. */
export function namesSlot(setting: string | null, slot: string): boolean {
  if (setting === null || slot === '') return false;
  return standbySlotNames(setting).includes(slot);
}

export function sameFacts(a: PrimaryFacts | null, b: PrimaryFacts | null): boolean {
  if (a === null || b === null) return a === b;
  return (
    a.standbySlot === b.standbySlot &&
    a.waitsForStandby === b.waitsForStandby &&
    a.failoverSlots.join(',') === b.failoverSlots.join(',') &&
    a.ahead.join(',') === b.ahead.join(',') &&
    (a.quorumSilentMs ?? null) === (b.quorumSilentMs ?? null)
  );
}
