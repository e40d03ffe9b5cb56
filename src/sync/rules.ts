/**
 * The rules of PostgreSQL's slotsync.c, one small function each, over plain values.
 * Each names the place in slotsync.c it mirrors.
 */
import { formatLsn, type Lsn } from './lsn.js';
import type { LocalSlot, RegistryEntry, RemoteSlot } from './types.js';

/**
 * synchronize_slots(): a remote slot whose LSNs or catalog_xmin are NULL while it is valid
 * was fetched in its RS_EPHEMERAL state; it is left out and synced in a later cycle.
 */
export function isEphemeral(remote: RemoteSlot): boolean {
  const incomplete =
    remote.confirmedFlushLsn === null ||
    remote.confirmedFlushLsn === 0n ||
    remote.restartLsn === null ||
    remote.restartLsn === 0n ||
    remote.catalogXmin === null ||
    remote.catalogXmin === 0;
  return incomplete && remote.invalidationReason === null;
}

/** The remote list slotsync.c works from: failover, not temporary, not ephemeral. */
export function remoteSlotsToSync(remote: readonly RemoteSlot[]): RemoteSlot[] {
  return remote.filter((slot) => slot.failover && !slot.temporary && !isEphemeral(slot));
}

/**
 * A local slot is slotsync's only if the registry says it made it and the slot still looks
 * like what it made. A slot synced by PostgreSQL's own worker (`synced`) is never ours
 * (DESIGN.md: it cannot be advanced or dropped by anyone).
 */
export function isOwnedCopy(local: LocalSlot, entry: RegistryEntry | undefined): boolean {
  if (entry === undefined || entry.state === 'invalidated') return false;
  return (
    local.slotType === 'logical' &&
    !local.synced &&
    !local.temporary &&
    local.database === entry.database &&
    local.plugin === entry.plugin
  );
}

/**
 * local_sync_slot_required(): keep a copy only while its remote slot exists (in the failover
 * list) and the copy was not invalidated locally while the remote one is valid.
 */
export function localCopyRequired(local: LocalSlot, remote: RemoteSlot | undefined): boolean {
  if (remote === undefined) return false;
  const locallyInvalidated =
    remote.invalidationReason === null && local.invalidationReason !== null;
  return !locallyInvalidated;
}

/** Why drop_local_obsolete_slots() drops a copy, in words an operator can act on. */
export function obsoleteReason(local: LocalSlot, remote: RemoteSlot | undefined): string {
  if (remote === undefined) {
    return `dropped replication slot "${local.name}" of database "${local.database}": the remote slot no longer exists or is no longer a failover slot`;
  }
  return `dropped replication slot "${local.name}" of database "${local.database}": it was invalidated on the standby (${local.invalidationReason}) while the remote slot is valid; it will be created again`;
}

/**
 * synchronize_one_slot(): never sync a slot to a position the standby has not replayed
 * (GetStandbyFlushRecPtr; slotsync uses pg_last_wal_replay_lsn(), which advance clamps to).
 */
export function remoteAheadOfStandby(remote: RemoteSlot, standbyReplayLsn: Lsn): boolean {
  return remote.confirmedFlushLsn !== null && remote.confirmedFlushLsn > standbyReplayLsn;
}

export function aheadOfStandbyMessage(remote: RemoteSlot, standbyReplayLsn: Lsn): string {
  return `skipping slot synchronization because the received slot sync LSN ${formatLsn(
    remote.confirmedFlushLsn,
  )} for slot "${remote.name}" is ahead of the standby position ${formatLsn(standbyReplayLsn)}`;
}

/**
 * update_local_synced_slot(): never move a copy backwards. Over SQL the copy is moved by
 * pg_replication_slot_advance(), which keeps restart_lsn and catalog_xmin consistent by
 * decoding, so the position that matters is confirmed_flush_lsn.
 */
export function remotePrecedesLocal(remote: RemoteSlot, local: LocalSlot): boolean {
  if (remote.confirmedFlushLsn === null || local.confirmedFlushLsn === null) return false;
  return remote.confirmedFlushLsn < local.confirmedFlushLsn;
}

export function remotePrecedesMessage(
  remote: RemoteSlot,
  local: LocalSlot,
  syncReady: boolean,
): string {
  if (syncReady) {
    return `cannot synchronize local slot "${remote.name}": Local slot's start streaming location LSN(${formatLsn(
      local.confirmedFlushLsn,
    )}) is ahead of remote slot's LSN(${formatLsn(remote.confirmedFlushLsn)}).`;
  }
  return `could not synchronize replication slot "${remote.name}" because remote slot precedes local slot: The remote slot has LSN ${formatLsn(
    remote.confirmedFlushLsn,
  )} and catalog xmin ${remote.catalogXmin}, but the local slot has LSN ${formatLsn(
    local.confirmedFlushLsn,
  )} and catalog xmin ${local.catalogXmin}.`;
}

/**
 * The copy needs the slot machinery to move it (LogicalSlotAdvanceAndCheckSnapState): only
 * when the remote position is strictly ahead, because advancing to the same LSN re-reads WAL
 * and asking to move back aborts the statement.
 */
export function needsAdvance(remote: RemoteSlot, local: LocalSlot): boolean {
  return (
    remote.confirmedFlushLsn !== null &&
    local.confirmedFlushLsn !== null &&
    remote.confirmedFlushLsn > local.confirmedFlushLsn
  );
}

/**
 * DESIGN.md "two_phase copies": SQL cannot copy two_phase_at, so a two_phase copy is
 * sync-ready only when the primary holds no transaction prepared (in the slot's database)
 * before the copy was made; otherwise such a transaction could be sent twice after promotion.
 */
export function twoPhaseBlocksReady(
  entry: Pick<RegistryEntry, 'twoPhase' | 'createdAt' | 'database'>,
  oldestPreparedAt: ReadonlyMap<string, Date>,
): boolean {
  if (!entry.twoPhase) return false;
  const oldest = oldestPreparedAt.get(entry.database);
  if (oldest === undefined) return false;
  if (entry.createdAt === null) return true;
  // Timestamps reach us with millisecond precision: count a tie as "before" (conservative).
  return oldest.getTime() <= new Date(entry.createdAt).getTime() + 1;
}

export function twoPhaseBlockedMessage(name: string): string {
  return `replication slot "${name}" is not sync-ready yet: the primary holds a transaction prepared before the copy was made (two_phase)`;
}

/**
 * The properties slotsync.c copies onto a synced slot but SQL cannot change on an existing
 * slot: a copy whose remote slot changed them is dropped and made again.
 */
export function propertiesDiffer(remote: RemoteSlot, local: LocalSlot): string | null {
  if (remote.plugin !== local.plugin) return 'plugin';
  if (remote.database !== local.database) return 'database';
  if (remote.twoPhase !== local.twoPhase) return 'two_phase';
  return null;
}

export function conflictMessage(name: string, local: LocalSlot): string {
  const base = `exiting from slot synchronization because same name slot "${name}" already exists on the standby`;
  return local.synced
    ? `${base} (it is synchronized by PostgreSQL's own slot sync worker)`
    : `${base}; slotsync did not create it and will not touch it`;
}

export function readyMessage(name: string): string {
  return `newly created replication slot "${name}" is sync-ready now`;
}

export function remoteInvalidatedMessage(remote: RemoteSlot): string {
  return `replication slot "${remote.name}" was invalidated on the primary (${remote.invalidationReason}); its copy is not kept`;
}
