/**
 * The facts promotion readiness rests on (sync/safety.ts), gathered as late as possible:
 * what a cycle read, what the worker's check between cycles reads, and what a question
 * (GET /ready, the gate, POST /shutdown) reads at the moment it is asked.
 */
import type pg from 'pg';
import { type PrimaryState, readPrimary } from '../db/primary.js';
import type { StandbyState } from '../db/standby.js';
import { messageOf } from '../errors.js';
import type { Registry } from '../registry/registry.js';
import { isNodeMarkerName } from '../sync/names.js';
import {
  type PrimaryRead,
  primaryFactsOf,
  receivedLsn,
  type StandbyRead,
  sameFacts,
} from '../sync/safety.js';
import type { LocalSlot, RemoteSlot } from '../sync/types.js';
import type { CycleCache } from './cycle.js';

/** What a quorum for synchronized_standby_slots means to this standby's facts. */
export interface QuorumFacts {
  slots: readonly string[];
  silentMs: number;
}

/** The standby as promotion readiness reads it. */
export function standbyReadOf(
  standby: Pick<
    StandbyState,
    'inRecovery' | 'receiveLsn' | 'replayLsn' | 'systemIdentifier' | 'timeline'
  >,
  slots: readonly LocalSlot[],
  at = Date.now(),
): StandbyRead {
  return {
    at,
    inRecovery: standby.inRecovery,
    receiveLsn: standby.receiveLsn,
    replayLsn: standby.replayLsn,
    systemIdentifier: standby.systemIdentifier,
    slots,
  };
}

/** A read of the primary as readiness keeps it: its facts and its consumers' positions. */
export function primaryReadOf(
  standby: Pick<StandbyState, 'primarySlotName' | 'receiveLsn' | 'replayLsn'>,
  failover: readonly RemoteSlot[],
  others: readonly RemoteSlot[],
  read: Pick<PrimaryState, 'synchronizedStandbySlots' | 'removalPending'>,
  quorum: QuorumFacts | null,
  at = Date.now(),
): PrimaryRead {
  const slots = [...failover.filter((s) => s.failover && !s.temporary), ...others];
  return {
    facts: primaryFactsOf({
      standbySlot: standby.primarySlotName,
      synchronizedStandbySlots: read.synchronizedStandbySlots,
      slots,
      received: receivedLsn(standby),
      removalPending: read.removalPending,
      quorumSilentMs: quorum?.slots.includes(standby.primarySlotName) ? quorum.silentMs : null,
    }),
    at,
    positions: new Map(
      slots.map((s) => [s.name, { confirmedFlushLsn: s.confirmedFlushLsn, failover: s.failover }]),
    ),
  };
}

/**
 * Keeps a read of the primary: in memory, and in the registry when its facts changed (what
 * readiness rests on once the primary is gone). The caller holds the sync lock.
 */
export async function recordPrimaryRead(
  cache: CycleCache,
  registry: Registry,
  read: PrimaryRead,
): Promise<void> {
  const kept = cache.keepPrimaryRead(read) ?? read;
  cache.primaryDown = null;
  if (!sameFacts(registry.primary?.facts ?? null, kept.facts)) {
    await registry.write(registry.entries, { primary: { facts: kept.facts, since: kept.at } });
  }
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
 * A read of the primary at the moment of asking, on the caller's own connection: facts
 * re-confirmed when its digest is unchanged, replaced when not. The server must still be
 * this standby's upstream (not in recovery, same system identifier, the physical slot
 * there), else it counts as not answering. Never throws: a failure is recorded in the cache
 * (primaryDown).
 */
export async function refreshPrimary(
  pool: pg.Pool,
  cache: CycleCache,
  standby: Pick<StandbyState, 'primarySlotName' | 'receiveLsn' | 'replayLsn' | 'systemIdentifier'>,
  copies: readonly string[],
  selectSlot: (name: string) => boolean,
  quorum: QuorumFacts | null,
): Promise<void> {
  try {
    const known = cache.primaryRead?.positions ? cache.primaryFingerprint : null;
    const read = await readPrimary(pool, standby.primarySlotName, copies, known);
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
    if (read.slots === null && cache.primaryRead !== null) {
      cache.primaryRead = { ...cache.primaryRead, at: Date.now() };
    } else {
      const failover = (read.slots ?? []).filter((s) => selectSlot(s.name));
      const others = (read.others ?? []).filter((s) => selectSlot(s.name));
      cache.keepPrimaryRead(primaryReadOf(standby, failover, others, read, quorum));
    }
    cache.primaryDown = null;
  } catch (error) {
    cache.primaryFailed(`the primary does not answer: ${messageOf(error)}`);
  }
}
