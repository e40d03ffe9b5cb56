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
 *   3. no consumer can hold WAL this standby lacks. What a consumer holds is what was sent
 *      to it, not its confirmed_flush_lsn (subscribers confirm late, and restart from their
 *      own origin). Either the primary waits for this standby — synchronized_standby_slots
 *      names its physical slot, that slot is this standby's own (not past what it received,
 *      not streamed into by another server), and this standby's WAL passed everything the
 *      primary had flushed when the setting was first seen naming it — or, while the
 *      primary answers, a fresh read shows the primary had flushed nothing this standby
 *      lacks. Either way no consumer may have confirmed past it (consumerAheadOf).
 * Facts 1 and 3-with-the-setting are valid as of the moment contact with the primary was
 * lost: they carry no age limit, and whatever turns them to "no" is recorded durably before
 * an answer relies on it (engine/facts.ts). Fact 2 is read at every question. A standby on a
 * timeline the primary forked away from is never safe (PrimaryFacts.diverged).
 */
import type { EngineKind } from './builtin.js';
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
  /**
   * Why this standby can never follow the primary (its WAL went past the point where the
   * primary's timeline forked from it), else null: such a node is never safe to promote.
   */
  diverged?: string | null;
  /**
   * Why synchronized_standby_slots names this standby's slot and still does not protect it
   * (the slot is past what this standby received, another server streams into it, or this
   * standby has not yet received what was flushed before the setting named it), else null.
   */
  unprotected?: string | null;
  /** This standby has not followed the primary's timeline yet (sync/timeline.ts). */
  otherTimeline?: string | null;
  /**
   * The timeline this standby's WAL was on at that read (null: not known). Facts about the
   * primary of one timeline say nothing once the standby follows another: a failover
   * happened since, onto another node.
   */
  standbyTimeline?: number | null;
  /**
   * synchronized_standby_slots as that read saw it (its slot names; null: not set or not
   * read). The cluster compares it across nodes: a newer read by another slotsync that no
   * longer names this standby's slot overrides this node's older one (sync/candidates.ts).
   */
  standbySlots?: string[] | null;
}

/** The primary as last read: its facts, when it last confirmed them, its slots' positions. */
export interface PrimaryRead {
  facts: PrimaryFacts;
  /** When the primary last confirmed the facts (ms since the epoch), as the read began. */
  at: number;
  /**
   * When that read ended: only a read of the standby that began after it may be compared
   * with the positions (WAL received only grows; an older read of the standby proves
   * nothing against a later read of the primary). Defaults to `at`.
   */
  endedAt?: number;
  /**
   * pg_current_wal_flush_lsn() on the primary at that read: no walsender had sent WAL past
   * it, so no consumer held any (the conservative bound for what consumers were sent; a
   * logical walsender's sent_lsn restarts at confirmed_flush_lsn when its consumer
   * reconnects, below what that consumer holds). Null when not read.
   */
  flushLsn?: Lsn | null;
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
  /** The timeline of the WAL it holds (StandbyState.walTimeline); null or absent: unknown. */
  timeline?: number | null;
  /** server_version_num (null or absent: unknown). */
  versionNum?: number | null;
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
  /**
   * Who copies the slots (SLOTSYNC_ENGINE): `sql`, slotsync's own copies (the registry says
   * which are sync-ready); `builtin`, PostgreSQL's slot sync (the standby's synced slots say).
   * Default `sql`.
   */
  engine?: EngineKind;
  /**
   * SLOTSYNC_ENGINE=builtin: copies found past their remote slot by a read of the primary
   * made after the read of the standby that saw the copy there (the remote made again
   * behind it), by name.
   */
  pastRemote?: ReadonlyMap<string, { copy: Lsn; remote: Lsn }>;
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
  /** The timeline of the WAL this node holds (null: unknown). */
  timeline: number | null;
  /**
   * Why this node can never follow the primary (its WAL went past where the primary's
   * timeline forked from it), else null: never safe, ranked last by candidates.
   */
  diverged: string | null;
  primary: {
    /** The primary answered its last contact. */
    reachable: boolean;
    /** Age of the primary's facts (null: never read). */
    age_ms: number | null;
    waits_for_standby: boolean | null;
    /** This standby's physical slot on the primary (its primary_slot_name). */
    standby_slot?: string | null;
    /** synchronized_standby_slots at that read (null: not read). */
    standby_slots?: string[] | null;
    /** When the primary confirmed these facts (the read's start). */
    read_at?: string | null;
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
    timeline: standby.timeline ?? null,
    diverged: role === 'standby' ? (primary?.facts.diverged ?? null) : null,
    primary: {
      reachable: input.primaryDown === null && primary !== null,
      age_ms: primary === null ? null : Math.max(0, now - primary.at),
      waits_for_standby: primary?.facts.waitsForStandby ?? null,
      standby_slot: primary?.facts.standbySlot ?? null,
      standby_slots: primary?.facts.standbySlots ?? null,
      read_at: primary === null ? null : new Date(primary.at).toISOString(),
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
  const standbyAge = now - (input.standby?.at ?? now);
  const builtin = input.engine === 'builtin';
  const copy = builtin
    ? syncedCopyFact(name, slot, input, standbyAge, input.standby?.versionNum ?? null)
    : copyFact(name, entry, input);
  // Over SQL the copy moves only to positions slotsync read, so the last read of the primary
  // bounds it. PostgreSQL's sync reads the primary by itself and may be ahead of that read:
  // under the builtin engine only a comparison made the right way round counts (the copy read
  // first, the remote after: input.pastRemote).
  const evidence = builtin ? input.pastRemote?.get(name) : undefined;
  const unmoved = builtin
    ? pastRemote(
        name,
        syncedUnmovedFact(name, slot, standbyAge),
        evidence === undefined
          ? undefined
          : { ...(slot as LocalSlot), confirmedFlushLsn: evidence.copy },
        evidence?.remote ?? null,
      )
    : pastRemote(
        name,
        unmovedFact(name, entry, slot, standbyAge),
        slot,
        remote?.confirmedFlushLsn ?? null,
      );
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
 * Fact 1 under SLOTSYNC_ENGINE=builtin: PostgreSQL's slot sync made the copy and keeps it
 * (synced, persistent, failover on, not invalidated), as the standby shows it now. A
 * temporary synced slot is dropped at promotion: never a copy to promote onto.
 */
export function syncedCopyFact(
  name: string,
  slot: LocalSlot | undefined,
  input: Pick<SafetyInput, 'primary'>,
  ageMs: number,
  /** The standby's server_version_num (null: unknown, judged as 17). */
  versionNum: number | null = null,
): Fact {
  const age = Math.max(0, ageMs);
  const no = (detail: string): Fact => ({ holds: false, age_ms: age, detail });
  if (slot === undefined) {
    const known = input.primary?.facts.failoverSlots.includes(name) ?? false;
    return no(
      known
        ? `replication slot "${name}" has no copy on this standby yet (PostgreSQL's slot sync has not made one)`
        : `no failover slot "${name}" on the primary and no copy of it on this standby`,
    );
  }
  if (slot.slotType !== 'logical' || !slot.synced) {
    return no(
      `the slot "${name}" on the standby is not synced by PostgreSQL (a same-name slot: PostgreSQL's slot sync stops at it)`,
    );
  }
  if (slot.temporary) {
    return no(
      `the copy of "${name}" is not sync-ready yet (PostgreSQL's slot sync keeps it temporary until the remote slot catches up with it; it is dropped at promotion)`,
    );
  }
  if (slot.invalidationReason !== null) {
    return no(`the copy of "${name}" was invalidated on the standby (${slot.invalidationReason})`);
  }
  if (!slot.failover) {
    return no(`the synced copy of "${name}" has failover off`);
  }
  // PostgreSQL 17's slot sync does not copy two_phase_at (18 does: slotsync.c): after
  // promotion such a copy would send prepared transactions again at COMMIT PREPARED.
  if (slot.twoPhase && (versionNum === null || versionNum < 180000)) {
    return no(
      `the synced copy of "${name}" has two_phase, whose two_phase_at PostgreSQL 17's slot sync does not copy: after promotion its consumer could get prepared transactions twice`,
    );
  }
  return {
    holds: true,
    age_ms: age,
    detail: `the copy of "${name}" is synced by PostgreSQL and persistent`,
  };
}

/**
 * Fact 2 under SLOTSYNC_ENGINE=builtin: nobody can move a synced slot on a standby
 * (PostgreSQL refuses to decode from it or advance it there), so it is where PostgreSQL's
 * slot sync left it unless a session holds it.
 */
export function syncedUnmovedFact(name: string, slot: LocalSlot | undefined, ageMs: number): Fact {
  const age = Math.max(0, ageMs);
  if (slot === undefined || !slot.synced) {
    return { holds: false, age_ms: age, detail: `"${name}" has no synced copy` };
  }
  if (slot.active) {
    return {
      holds: false,
      age_ms: age,
      detail: `the copy of "${name}" is in use on the standby`,
    };
  }
  return {
    holds: true,
    age_ms: age,
    detail: `the copy of "${name}" is at ${formatLsn(slot.confirmedFlushLsn)}, where PostgreSQL's slot sync left it`,
  };
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

/**
 * A copy past its remote slot (the remote dropped and made again behind it, with the same
 * plugin and database) would start its consumer after changes the consumer never got: not
 * safe, whatever the registry says, until a cycle drops it.
 */
function pastRemote(
  name: string,
  unmoved: Fact,
  slot: LocalSlot | undefined,
  remote: Lsn | null,
): Fact {
  const at = slot?.confirmedFlushLsn ?? null;
  if (!unmoved.holds || at === null || remote === null || at <= remote) return unmoved;
  return {
    ...unmoved,
    holds: false,
    detail: `the copy of "${name}" is at ${formatLsn(at)}, past its remote slot's confirmed_flush_lsn ${formatLsn(remote)} (the remote was made again behind it): its consumer would skip what lies between`,
  };
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

/**
 * Whether a consumer that confirmed `confirmed` may skip, after this standby's promotion, a
 * change the new primary commits. Logical decoding skips a transaction whose commit record
 * *starts* before the start point (snapbuild.c SnapBuildXactNeedsSkip: `ptr <
 * start_decoding_at`, ptr = the record's ReadRecPtr; a client's later START_REPLICATION
 * position becomes start_decoding_at as is, logical.c CreateDecodingContext). Promotion
 * replays all WAL received, then writes XLOG_END_OF_RECOVERY at EndOfLog, the MAXALIGNed end
 * of the last complete record (xlogrecovery.c FinishWalRecovery, xlog.c StartupXLOG): never
 * past what the standby received, and at least 48 bytes long, so no commit of the new
 * timeline starts before EndOfLog + 48. Every LSN a walsender hands a client is the end of a
 * record it read in full (sentPtr, txn->end_lsn), and record ends are 8-byte aligned: a
 * client acknowledging "last WAL byte + 1" as the protocol words it confirms at most
 * received + 1 for WAL this standby holds, which skips nothing. Past received + 1 it confirmed
 * a record this standby lacks. Exactly the protocol's "+ 1": a wider tolerance is unproven
 * (received can point into a partial record, far past EndOfLog).
 */
export function consumerAheadOf(confirmed: Lsn | null, received: Lsn | null): boolean {
  if (confirmed === null) return false;
  return received === null || confirmed > received + 1n;
}

/** Fact 3: no consumer of the slot can hold WAL this standby lacks. */
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
  if (facts.diverged) return no(age, facts.diverged);
  if (facts.otherTimeline) return no(age, facts.otherTimeline);
  const timeline = input.standby?.timeline ?? null;
  const factsTimeline = facts.standbyTimeline ?? null;
  if (timeline !== null && factsTimeline !== null && timeline !== factsTimeline) {
    return no(
      age,
      `this standby follows timeline ${timeline} now, but the primary last confirmed its facts when it was on timeline ${factsTimeline}: a failover onto another node happened since, and what that primary's consumers hold is not known here`,
    );
  }
  const position = primary.positions?.get(name);
  const failover = position?.failover ?? facts.failoverSlots.includes(name);
  const confirmed = position?.confirmedFlushLsn ?? null;
  if (position === undefined && primary.positions !== null) {
    return no(age, `replication slot "${name}" does not exist on the primary`);
  }
  // The record says which consumers were ahead of a read of the standby made after that read
  // of the primary. A later read of the standby (it only receives more) may clear that, never
  // add to it: one made before the primary's read proves nothing either way.
  const standbyAfter =
    input.standby !== null && input.standby.at >= (primary.endedAt ?? primary.at);
  const ahead =
    facts.ahead.includes(name) &&
    !(standbyAfter && position !== undefined && !consumerAheadOf(confirmed, received));
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
      `the primary waits for this standby (synchronized_standby_slots names "${facts.standbySlot}", its own slot) and the consumer of "${name}" was not ahead of it`,
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
  const why =
    facts.unprotected ?? `synchronized_standby_slots does not name "${facts.standbySlot}"`;
  if (input.primaryDown !== null || age > input.maxAgeMs) {
    return no(
      age,
      `consumers may be ahead: the primary does not wait for this standby (${why})${input.primaryDown !== null ? ' and it does not answer' : ` and its last read is ${age} ms old (at most ${input.maxAgeMs} ms is trusted)`}`,
    );
  }
  // A fresh read, the primary not waiting for this standby: what consumers hold is what was
  // sent to them, bounded by what the primary had flushed at that read.
  const flushed = primary.flushLsn;
  if (flushed === undefined) {
    return no(
      age,
      `consumers may be ahead: the primary does not wait for this standby (${why}) and what it had flushed was not read`,
    );
  }
  if (!standbyAfter) {
    return no(
      age,
      `consumers may be ahead: the primary does not wait for this standby (${why}) and this standby was not read after the primary yet`,
    );
  }
  if (flushed === null || received === null || flushed > received) {
    return no(
      age,
      `consumers may be ahead: the primary does not wait for this standby (${why}) and had flushed WAL up to ${formatLsn(flushed) ?? 'an unknown position'}, past what this standby has received (${formatLsn(received) ?? 'none'}): its walsenders may have sent it`,
    );
  }
  return yes(
    age,
    `no consumer of "${name}" can hold WAL this standby lacks: at a read of the primary ${age} ms ago it had flushed nothing this standby has not received (the primary does not wait for this standby: this holds only while it answers)`,
  );
}

/** The record of one read of the primary: what the registry keeps (see PrimaryFacts). */
export function primaryFactsOf(read: {
  standbySlot: string;
  synchronizedStandbySlots: string | null;
  slots: readonly { name: string; confirmedFlushLsn: Lsn | null; failover: boolean }[];
  /** What this standby held, read after the primary was. */
  received: Lsn | null;
  /** The quorum manager announced this standby's removal: no longer protected. */
  removalPending?: boolean;
  /** SLOTSYNC_QUORUM_SILENT_MS when a quorum names this standby's slot, else null. */
  quorumSilentMs?: number | null;
  /** The standby's physical slot on the primary, as that read saw it; undefined: not read. */
  physicalSlot?: { restartLsn: Lsn | null; active: boolean };
  /** This standby's walreceiver streams (null: the role may not see it). */
  streaming?: boolean | null;
  /** The setting names this standby only since a read at which the primary had flushed this. */
  namedFrom?: Lsn | null;
  diverged?: string | null;
  otherTimeline?: string | null;
  standbyTimeline?: number | null;
}): PrimaryFacts {
  const failover = read.slots.filter((s) => s.failover);
  const named = namesSlot(read.synchronizedStandbySlots, read.standbySlot);
  const unprotected = named ? unprotectedReason(read) : null;
  return {
    standbySlot: read.standbySlot,
    waitsForStandby: named && read.removalPending !== true && unprotected === null,
    quorumSilentMs: read.quorumSilentMs ?? null,
    failoverSlots: failover.map((s) => s.name).sort(),
    ahead: failover
      .filter((s) => consumerAheadOf(s.confirmedFlushLsn, read.received))
      .map((s) => s.name)
      .sort(),
    diverged: read.diverged ?? null,
    standbySlots:
      read.synchronizedStandbySlots === null
        ? null
        : standbySlotNames(read.synchronizedStandbySlots),
    unprotected,
    otherTimeline: read.otherTimeline ?? null,
    standbyTimeline: read.standbyTimeline ?? null,
  };
}

/**
 * Why synchronized_standby_slots naming this standby's slot does not protect it, or null. The
 * primary waits for the slot's position, whoever moves it: a slot past what this standby
 * received (advanced by hand, or fed by a clone ahead of it) lets consumers get WAL this
 * standby lacks, and a slot another server streams into while this standby does not can move
 * past it at any time. WAL flushed before the setting named the slot may have been sent
 * already: the standby must hold it first.
 */
function unprotectedReason(read: Parameters<typeof primaryFactsOf>[0]): string | null {
  const slot = read.physicalSlot;
  const received = read.received;
  if (slot !== undefined) {
    if (slot.restartLsn !== null && (received === null || slot.restartLsn > received)) {
      return `its slot "${read.standbySlot}" on the primary is at ${formatLsn(slot.restartLsn)}, past what this standby received (${formatLsn(received) ?? 'none'}): another server or an operator moved it`;
    }
    if (slot.active && read.streaming === false) {
      return `another server streams through its slot "${read.standbySlot}" on the primary while this standby does not`;
    }
  }
  const from = read.namedFrom ?? null;
  if (from !== null && (received === null || received < from)) {
    return `the setting named "${read.standbySlot}" only since the primary had flushed ${formatLsn(from)}, which this standby has not received yet (${formatLsn(received) ?? 'none'}): WAL sent before may be ahead of it`;
  }
  return null;
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
    (a.quorumSilentMs ?? null) === (b.quorumSilentMs ?? null) &&
    // The reasons carry positions that move on every read: whether there is one counts.
    ((a.diverged ?? null) === null) === ((b.diverged ?? null) === null) &&
    ((a.unprotected ?? null) === null) === ((b.unprotected ?? null) === null) &&
    ((a.otherTimeline ?? null) === null) === ((b.otherTimeline ?? null) === null) &&
    (a.standbyTimeline ?? null) === (b.standbyTimeline ?? null) &&
    (a.standbySlots ?? []).join(',') === (b.standbySlots ?? []).join(',')
  );
}

/**
 * What both records allow, no more: used where a read could not be made durable, or could
 * not be trusted as the upstream's, so that it may only take away.
 */
export function narrowerFacts(a: PrimaryFacts | null, b: PrimaryFacts): PrimaryFacts {
  if (a === null || a.standbySlot !== b.standbySlot) {
    return a === null ? b : { ...b, waitsForStandby: false };
  }
  return {
    ...b,
    waitsForStandby: a.waitsForStandby && b.waitsForStandby,
    failoverSlots: [...new Set([...a.failoverSlots, ...b.failoverSlots])].sort(),
    ahead: [...new Set([...a.ahead, ...b.ahead])].sort(),
    diverged: b.diverged ?? a.diverged ?? null,
    unprotected: b.unprotected ?? a.unprotected ?? null,
    otherTimeline: b.otherTimeline ?? a.otherTimeline ?? null,
    standbyTimeline: b.standbyTimeline ?? a.standbyTimeline ?? null,
    // Fewer names is narrower: only what both reads named.
    standbySlots:
      a.standbySlots && b.standbySlots
        ? a.standbySlots.filter((slot) => b.standbySlots?.includes(slot))
        : (a.standbySlots ?? b.standbySlots ?? null),
  };
}

/** Whether `b` takes away something `a` allowed (narrowerFacts(a, b) differs from a). */
export function narrows(a: PrimaryFacts | null, b: PrimaryFacts): boolean {
  return a === null || !sameFacts(a, narrowerFacts(a, b));
}
