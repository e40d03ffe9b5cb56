/**
 * The facts promotion readiness rests on (sync/safety.ts), gathered as late as possible:
 * what a cycle read, what the worker's check between cycles reads, and what a question
 * (GET /ready, the gate, POST /shutdown) reads at the moment it is asked.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { type PrimaryState, readForkPoint, readPrimary } from '../db/primary.js';
import type { Received, StandbyState } from '../db/standby.js';
import { messageOf } from '../errors.js';
import type { RecordedPrimary, Registry } from '../registry/registry.js';
import type { Lsn } from '../sync/lsn.js';
import { isNodeMarkerName } from '../sync/names.js';
import {
  narrowerFacts,
  narrows,
  type PrimaryRead,
  primaryFactsOf,
  receivedLsn,
  type StandbyRead,
  sameFacts,
} from '../sync/safety.js';
import { timelineVerdict } from '../sync/timeline.js';
import type { LocalSlot, RemoteSlot } from '../sync/types.js';
import type { CycleCache } from './cycle.js';

/** What a quorum for synchronized_standby_slots means to this standby's facts. */
export interface QuorumFacts {
  slots: readonly string[];
  silentMs: number;
}

/** The standby as promotion readiness reads it (`at`: when the read began). */
export function standbyReadOf(
  standby: Pick<StandbyState, 'inRecovery' | 'receiveLsn' | 'replayLsn' | 'systemIdentifier'> &
    Partial<Pick<StandbyState, 'versionNum'>>,
  slots: readonly LocalSlot[],
  at: number,
  /** The timeline of its WAL as this process knows it (CycleCache.timelineOf). */
  timeline: number | null,
): StandbyRead {
  return {
    at,
    inRecovery: standby.inRecovery,
    receiveLsn: standby.receiveLsn,
    replayLsn: standby.replayLsn,
    timeline,
    systemIdentifier: standby.systemIdentifier,
    versionNum: standby.versionNum ?? null,
    slots,
  };
}

/** The standby as the facts about the primary need it: read after the primary was. */
export type StandbyForFacts = Pick<StandbyState, 'primarySlotName' | 'receiveLsn' | 'replayLsn'> &
  Partial<Pick<StandbyState, 'streaming' | 'walTimeline'>>;

/** What the primary read said beyond its slots (db/primary.ts PrimaryState). */
export type PrimaryForFacts = Pick<PrimaryState, 'synchronizedStandbySlots' | 'removalPending'> &
  Partial<
    Pick<PrimaryState, 'flushLsn' | 'timeline' | 'physicalSlotRestartLsn' | 'physicalSlotActive'>
  >;

export interface ReadContext {
  /** When the read of the primary began and ended (ms since the epoch). */
  startedAt: number;
  endedAt: number;
  /** Where the primary's timeline forked from the standby's, when they differ. */
  forkPoint?: Lsn | null;
  /** The setting names this standby only since the primary had flushed this (CycleCache). */
  namedFrom?: Lsn | null;
  /** The timeline of the standby's WAL as this process knows it (CycleCache.timelineOf). */
  standbyTimeline?: number | null;
}

/** A read of the primary as readiness keeps it: its facts and its consumers' positions. */
export function primaryReadOf(
  standby: StandbyForFacts,
  failover: readonly RemoteSlot[],
  others: readonly RemoteSlot[],
  read: PrimaryForFacts,
  quorum: QuorumFacts | null,
  context: ReadContext = { startedAt: Date.now(), endedAt: Date.now() },
): PrimaryRead {
  const slots = [...failover.filter((s) => s.failover && !s.temporary), ...others];
  const received = receivedLsn(standby);
  const standbyTimeline = context.standbyTimeline ?? null;
  const timeline = timelineVerdict(
    standbyTimeline,
    received,
    read.timeline ?? null,
    context.forkPoint ?? null,
  );
  return {
    facts: primaryFactsOf({
      standbySlot: standby.primarySlotName,
      synchronizedStandbySlots: read.synchronizedStandbySlots,
      slots,
      received,
      removalPending: read.removalPending,
      quorumSilentMs: quorum?.slots.includes(standby.primarySlotName) ? quorum.silentMs : null,
      physicalSlot:
        read.physicalSlotRestartLsn === undefined
          ? undefined
          : { restartLsn: read.physicalSlotRestartLsn, active: read.physicalSlotActive ?? false },
      streaming: standby.streaming ?? null,
      namedFrom: context.namedFrom ?? null,
      diverged: timeline.diverged,
      otherTimeline: timeline.otherTimeline,
      standbyTimeline,
    }),
    at: context.startedAt,
    endedAt: context.endedAt,
    flushLsn: read.flushLsn ?? null,
    positions: new Map(
      slots.map((s) => [s.name, { confirmedFlushLsn: s.confirmedFlushLsn, failover: s.failover }]),
    ),
  };
}

/**
 * Whether the facts of a read rest on what the standby held before the primary was read, and
 * would say less than a read of the standby made now: a consumer ahead, or the primary not
 * waiting for this standby (then what it had flushed is compared with the standby). Then the standby's WAL position is read again first (it only
 * grows): a position read before the primary's proves nothing against it.
 */
export function needsFreshReceive(read: PrimaryRead): boolean {
  return read.facts.ahead.length > 0 || !read.facts.waitsForStandby;
}

/**
 * Keeps a read of the primary: durably first when its facts differ from the registry's
 * record (what readiness rests on once the primary is gone, and what a restarted slotsync,
 * the gate and candidates answer from), then in memory. A record that could not be written
 * is kept in memory only for what it takes away. The registry serialises its writes.
 */
export async function recordPrimaryRead(
  cache: CycleCache,
  registry: Registry,
  read: PrimaryRead,
  logger?: Logger,
): Promise<void> {
  const kept = cache.maskQuorum(read);
  let written: RecordedPrimary | undefined;
  try {
    await registry.writePrimary((recorded) => {
      written = nextRecord(recorded, kept);
      return written;
    });
  } catch (error) {
    cache.narrowRead(kept);
    throw error;
  }
  cache.keepNewerRead(kept);
  if (written !== undefined) {
    // What promotion readiness rests on once the primary is gone: an operator (and a chaos
    // run's log) can tell when each "yes" or "no" of the primary began.
    const { facts } = written;
    logger?.info(
      {
        waitsForStandby: facts.waitsForStandby,
        standbySlots: facts.standbySlots ?? null,
        unprotected: facts.unprotected ?? null,
        ahead: facts.ahead,
        otherTimeline: facts.otherTimeline ?? null,
        readAt: new Date(kept.at).toISOString(),
      },
      "the primary's facts about this standby changed",
    );
  }
}

/**
 * What the record becomes after `read`: its facts when they differ and the read is not
 * older than the record; a read older than the record only takes away (it may have ended
 * after a newer one: a read that outlived its wait); undefined: nothing to write.
 */
export function nextRecord(
  recorded: RecordedPrimary | null,
  read: PrimaryRead,
): RecordedPrimary | undefined {
  if (recorded !== null && read.at < recorded.since) {
    return narrows(recorded.facts, read.facts)
      ? { ...recorded, facts: narrowerFacts(recorded.facts, read.facts) }
      : undefined;
  }
  return sameFacts(recorded?.facts ?? null, read.facts)
    ? undefined
    : { ...recorded, facts: read.facts, since: read.at };
}

/**
 * A read that cannot be taken as the upstream's (validation failed, or the cycle stops
 * before its record): what it takes away is recorded all the same, durably first. A
 * primary that stopped naming this standby in synchronized_standby_slots is a fact even
 * when the standby no longer streams from it.
 */
export async function recordNarrowing(
  cache: CycleCache,
  registry: Registry,
  read: PrimaryRead,
): Promise<void> {
  const masked = cache.maskQuorum(read);
  // Memory first: taking away never needs to wait for the disk (a failed write still leaves
  // the running process answering "no").
  cache.narrowRead(masked);
  await registry.writePrimary((recorded) =>
    recorded === null || !narrows(recorded.facts, masked.facts)
      ? undefined
      : { ...recorded, facts: narrowerFacts(recorded.facts, masked.facts) },
  );
}

/** The registry's record of the primary, before any read of it in this process. */
export function recordedPrimaryRead(registry: Registry): PrimaryRead | null {
  const recorded = registry.primary;
  return recorded === null ? null : { facts: recorded.facts, at: recorded.since, positions: null };
}

/**
 * Why the registry cannot speak for this standby, or null (DESIGN.md invariant 8): it
 * describes another cluster, or another node (its marker slot is not here).
 */
export function bindingProblem(registry: Registry, standby: StandbyRead): string | null {
  const node = registry.node;
  if (node === null) {
    return registry.entries.size === 0
      ? null
      : 'the state folder holds copies but is bound to no standby';
  }
  if (node.systemIdentifier !== standby.systemIdentifier) {
    return `the state folder describes a standby of another cluster (system identifier ${node.systemIdentifier}, this standby: ${standby.systemIdentifier})`;
  }
  if (node.pending) return null; // the next cycle completes the binding; no copy exists yet
  const marker = standby.slots.some(
    (s) => s.slotType === 'physical' && isNodeMarkerName(s.name) && s.name === node.marker,
  );
  return marker
    ? null
    : `the state folder describes another node: its marker slot "${node.marker}" is not on this standby`;
}

/**
 * A read of the primary at the moment of asking, on the caller's own connection. The server
 * must still be this standby's upstream (not in recovery, same system identifier, the
 * physical slot there), else it counts as not answering. Facts that rest on the standby's
 * WAL position are computed from a read of the standby made after it (`rereadReceived`),
 * and kept as a cycle keeps them: durably first (recordPrimaryRead). Never throws: a failure
 * is recorded in the cache (primaryDown).
 */
export async function refreshPrimary(
  pool: pg.Pool,
  cache: CycleCache,
  registry: Registry,
  standby: StandbyForFacts & Pick<StandbyState, 'systemIdentifier'>,
  selectSlot: (name: string) => boolean,
  quorum: QuorumFacts | null,
  rereadReceived: () => Promise<Received | null>,
): Promise<void> {
  try {
    const startedAt = Date.now();
    const known = cache.remote !== null ? cache.primaryFingerprint : null;
    const read = await readPrimary(
      pool,
      standby.primarySlotName,
      [...registry.entries.keys()],
      known,
    );
    const endedAt = Date.now();
    const problem = read.inRecovery
      ? 'it is in recovery'
      : read.systemIdentifier !== standby.systemIdentifier
        ? `its system identifier ${read.systemIdentifier} is not the standby's ${standby.systemIdentifier}`
        : !read.physicalSlotExists
          ? `it has no physical slot "${standby.primarySlotName}"`
          : null;
    if (problem !== null) {
      cache.primaryFailed(`the primary is not this standby's upstream: ${problem}`);
      return;
    }
    const failover = (read.slots ?? cache.remote ?? []).filter((s) => selectSlot(s.name));
    const others = (read.others ?? cache.others ?? []).filter((s) => selectSlot(s.name));
    const context: ReadContext = {
      startedAt,
      endedAt,
      forkPoint: await forkPointFor(pool, cache.timelineOf(standby), read),
      namedFrom: cache.namedFrom(read, standby.primarySlotName, startedAt),
      standbyTimeline: cache.timelineOf(standby),
    };
    let fresh = primaryReadOf(standby, failover, others, read, quorum, context);
    if (needsFreshReceive(fresh)) {
      const now = await rereadReceived();
      if (now !== null) {
        fresh = primaryReadOf({ ...standby, ...now }, failover, others, read, quorum, {
          ...context,
          standbyTimeline: cache.timelineOf(now),
        });
      }
    }
    await recordPrimaryRead(cache, registry, fresh);
  } catch (error) {
    cache.primaryFailed(`the primary does not answer: ${messageOf(error)}`);
  }
}

/** Where the primary's timeline forked from the standby's, read only when they differ. */
export async function forkPointFor(
  pool: pg.Pool,
  ours: number | null,
  read: Pick<PrimaryState, 'timeline'>,
): Promise<Lsn | null> {
  if (ours === null || read.timeline === null || ours >= read.timeline) return null;
  return readForkPoint(pool, read.timeline, ours);
}
