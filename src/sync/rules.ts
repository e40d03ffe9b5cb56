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

/** Registry states in which a slot under the remote slot's own name may be slotsync's. */
export function mayHavePublishedCopy(entry: RegistryEntry | undefined): boolean {
  return (
    entry !== undefined &&
    (entry.state === 'sync_ready' || entry.state === 'publishing' || entry.state === 'retiring')
  );
}

/** Why drop_local_obsolete_slots() drops a copy, in words an operator can act on. */
export function obsoleteReason(name: string, database: string): string {
  return `dropped replication slot "${name}" of database "${database}": the remote slot no longer exists or is no longer a failover slot`;
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
 * DESIGN.md "two_phase copies": pg_copy_logical_replication_slot() does not keep two_phase
 * (measured on 17.10 and 18.4: the copy has two_phase = false, two_phase_at NULL), and a
 * copy that is not sync-ready must never carry the remote slot's name. A two_phase copy can
 * therefore not be published over SQL: after promotion its subscriber would get prepared
 * transactions again. Such slots are reported, never copied; the subscriber then gets a
 * clear "replication slot does not exist" after promotion instead of changes sent twice.
 */
/** PostgreSQL's own rule for slot names (ReplicationSlotValidateName). */
const SLOT_NAME = /^[a-z0-9_]{1,63}$/;
/** An output plugin is a shared library's file name: no folder, no parent, no quote. */
const PLUGIN_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$/;

/**
 * Why a slot read from the primary must not reach the standby, or null. The primary is
 * trusted to be PostgreSQL, but what it answers is data: a name PostgreSQL would refuse, a
 * plugin that is a path, a database the standby does not have are reported, never created.
 */
export function untrustedRemoteReason(
  remote: Pick<RemoteSlot, 'name' | 'plugin' | 'database'>,
  standbyDatabases: ReadonlySet<string> | undefined,
): string | null {
  if (!SLOT_NAME.test(remote.name)) {
    return `remote slot ${JSON.stringify(remote.name)} is not a valid replication slot name (lower case letters, numbers and underscores, at most 63 bytes) and is not synchronized`;
  }
  if (!PLUGIN_NAME.test(remote.plugin) || remote.plugin.includes('..')) {
    return `output plugin ${JSON.stringify(remote.plugin)} of remote slot "${remote.name}" is not a plain library name; the slot is not synchronized`;
  }
  if (standbyDatabases !== undefined && !standbyDatabases.has(remote.database)) {
    return `database ${JSON.stringify(remote.database)} of remote slot "${remote.name}" does not exist on the standby (or does not accept connections); the slot is not synchronized`;
  }
  return null;
}

export function twoPhaseUnsupportedMessage(name: string): string {
  return `replication slot "${name}" is a two_phase slot and is not synchronized: pg_copy_logical_replication_slot() does not keep two_phase on PostgreSQL 17 and 18, so a published copy would send prepared transactions again after promotion; use PostgreSQL's own slot sync worker for two_phase slots`;
}

export function reservedNameMessage(name: string): string {
  return `replication slot "${name}" is not synchronized: its name starts with a prefix slotsync reserves for its own slots`;
}

/**
 * Fencing (DESIGN.md invariant 8): a copy slotsync did not move where it now is, or that
 * is ahead of its remote slot, or that the standby invalidated, is not sync-ready from now
 * on. Returns why, or null when the copy is where slotsync left it.
 */
export function fenceReason(
  local: LocalSlot,
  entry: RegistryEntry,
  remote: RemoteSlot,
  published: boolean,
): string | null {
  const what = published ? 'published copy' : 'staging copy';
  if (local.invalidationReason !== null) {
    return `the ${what} of "${remote.name}" was invalidated on the standby (${local.invalidationReason}); it is dropped and staged afresh`;
  }
  const given = entry.confirmedFlushLsn;
  if (given !== null && local.confirmedFlushLsn !== null && local.confirmedFlushLsn > given) {
    return `the ${what} of "${remote.name}" was moved on the standby by someone else (confirmed_flush_lsn ${formatLsn(
      local.confirmedFlushLsn,
    )}, slotsync left it at ${formatLsn(given)}); it is not sync-ready, it is dropped and staged afresh`;
  }
  if (
    published &&
    remote.confirmedFlushLsn !== null &&
    local.confirmedFlushLsn !== null &&
    local.confirmedFlushLsn > remote.confirmedFlushLsn
  ) {
    return `the published copy of "${remote.name}" is ahead of its remote slot (copy at ${formatLsn(
      local.confirmedFlushLsn,
    )}, remote at ${formatLsn(
      remote.confirmedFlushLsn,
    )}: the remote slot was dropped and made again behind it); it is dropped and staged afresh`;
  }
  const changed = propertiesDiffer(remote, local);
  if (changed !== null) {
    return `the remote slot's ${changed} changed; the copy of "${remote.name}" is dropped and will be created again`;
  }
  return null;
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

/**
 * How long after the server's start PostgreSQL stamps the slots it restores (inactive_since
 * is set to the time of the restore, early in the startup process, before the server takes
 * any connection). A slot whose stamp is later was used by some session since.
 */
export const RESTORE_STAMP_MS = 2_000;

/**
 * A same-name slot that is provably the one this node held as a primary before a
 * switchover: logical, failover = true (a copy made on a standby never is), not synchronized
 * by PostgreSQL, the remote's plugin and database, and unused since this node started in
 * recovery: its inactive_since is the stamp PostgreSQL gives every slot at start (a
 * subscription still pointed at this node, retrying, acquires the slot at each attempt and
 * leaves a later stamp). Under SLOTSYNC_REPLACE_STALE it is dropped and a fresh copy staged;
 * its positions are never reused. `startedAt`: the standby's pg_postmaster_start_time().
 */
export function isStaleSameName(
  local: LocalSlot,
  remote: RemoteSlot,
  startedAt?: number | null,
): boolean {
  return looksStale(local, remote) && unusedSinceStart(local, startedAt);
}

/** The shape of a slot left from before a switchover (isStaleSameName without the time). */
function looksStale(local: LocalSlot, remote: RemoteSlot): boolean {
  return (
    local.slotType === 'logical' &&
    !local.active &&
    local.failover &&
    !local.synced &&
    local.plugin === remote.plugin &&
    local.database === remote.database
  );
}

function unusedSinceStart(local: LocalSlot, startedAt: number | null | undefined): boolean {
  const stamp = local.inactiveSince;
  if (stamp === null || stamp === undefined || startedAt === null || startedAt === undefined)
    return false;
  return stamp <= startedAt + RESTORE_STAMP_MS;
}

export const STALE_HINT =
  'it looks like the slot this node held as a primary before a switchover: SLOTSYNC_REPLACE_STALE=on drops it and stages a fresh copy';

export const USED_HINT =
  'it looks like a slot this node held as a primary, but a session used it since this node started (a consumer still pointed at this node?): it is never replaced while in use';

export function conflictMessage(
  name: string,
  local: LocalSlot,
  remote?: RemoteSlot,
  startedAt?: number | null,
): string {
  const base = `exiting from slot synchronization because same name slot "${name}" already exists on the standby`;
  if (local.synced) return `${base} (it is synchronized by PostgreSQL's own slot sync worker)`;
  const hint =
    remote === undefined || !looksStale(local, remote)
      ? ''
      : unusedSinceStart(local, startedAt)
        ? `; ${STALE_HINT}`
        : `; ${USED_HINT}`;
  return `${base}; slotsync did not create it and will not touch it${hint}`;
}

export function staleReplacedMessage(name: string): string {
  return `dropped the stale slot "${name}" on the standby (inactive, failover, same plugin and database as the remote, not slotsync's: left from before a switchover; SLOTSYNC_REPLACE_STALE=on); a fresh copy is staged next`;
}

export function readyMessage(name: string): string {
  return `newly created replication slot "${name}" is sync-ready now`;
}

export function publishedMessage(name: string, stagingName: string): string {
  return `newly created replication slot "${name}" is sync-ready now: published from staging slot "${stagingName}"`;
}

export function remoteInvalidatedMessage(remote: RemoteSlot): string {
  return `replication slot "${remote.name}" was invalidated on the primary (${remote.invalidationReason}); its copy is not kept`;
}
