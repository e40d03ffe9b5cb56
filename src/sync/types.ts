import type { Lsn, Xid } from './lsn.js';

/** A row of the primary's `pg_replication_slots` (WHERE failover AND NOT temporary). */
export interface RemoteSlot {
  name: string;
  plugin: string;
  database: string;
  confirmedFlushLsn: Lsn | null;
  restartLsn: Lsn | null;
  catalogXmin: Xid | null;
  twoPhase: boolean;
  failover: boolean;
  temporary: boolean;
  invalidationReason: string | null;
}

/** A row of the standby's `pg_replication_slots`. */
export interface LocalSlot {
  name: string;
  slotType: 'logical' | 'physical';
  plugin: string | null;
  database: string | null;
  temporary: boolean;
  active: boolean;
  confirmedFlushLsn: Lsn | null;
  restartLsn: Lsn | null;
  catalogXmin: Xid | null;
  twoPhase: boolean;
  /** Set by PostgreSQL's own slot sync worker: such a slot is never slotsync's. */
  synced: boolean;
  invalidationReason: string | null;
  /** Off on every copy made on a standby; slotsync turns it on after promotion (re-arm). */
  failover: boolean;
  /** The backend using the slot now (a walsender, a decoding session), else null. */
  activePid?: number | null;
  /**
   * When the slot was last released (ms since the epoch), null while in use. PostgreSQL 17+
   * stamps every slot with the server's start when it starts: a slot any session used
   * since carries a later time.
   */
  inactiveSince?: number | null;
}

/**
 * A slot as slotsync just made it, without reading it again: nobody uses it yet, no
 * position is known but the one given.
 */
export function madeSlot(
  name: string,
  fields: Pick<LocalSlot, 'slotType' | 'plugin' | 'database' | 'confirmedFlushLsn'>,
): LocalSlot {
  return {
    name,
    ...fields,
    temporary: false,
    active: false,
    restartLsn: null,
    catalogXmin: null,
    twoPhase: false,
    synced: false,
    invalidationReason: null,
    failover: false,
  };
}

/**
 * Lifecycle of a copy slotsync owns (DESIGN.md, "Staging"). slotsync.c's RS_TEMPORARY is
 * `staging`: the copy lives under its staging name, which no subscriber asks for.
 * - `creating`: write-ahead intent; the staging slot may or may not exist yet.
 * - `staging`: the staging slot exists and is advanced; not usable after promotion.
 * - `publishing`: write-ahead intent of the publication; the copy under the remote slot's
 *   name may or may not exist yet (if it does, it was made from a sync-ready staging slot).
 * - `sync_ready`: RS_PERSISTENT; published under the remote slot's name.
 * - `retiring`: a copy under the remote slot's name that must not stay (moved by someone
 *   else, or made not-ready by an older slotsync): dropped, then staged afresh.
 * - `invalidated`: the primary's slot was invalidated and the copy dropped.
 */
export type CopyState =
  | 'creating'
  | 'staging'
  | 'publishing'
  | 'sync_ready'
  | 'retiring'
  | 'invalidated';

export interface RegistryEntry {
  name: string;
  /** Where the copy lives until it is sync-ready (names.ts). */
  stagingName: string;
  database: string;
  plugin: string;
  twoPhase: boolean;
  state: CopyState;
  /** The copy's confirmed_flush_lsn when it was made (its consistent point). */
  createdLsn: Lsn | null;
  /** The primary's clock right after the copy was made. */
  createdAt: string | null;
  /**
   * Where slotsync last moved the copy, written before every move (write-ahead): a copy
   * found past it was moved by someone else (fencing, DESIGN.md invariant 8).
   */
  confirmedFlushLsn: Lsn | null;
  restartLsn: Lsn | null;
  catalogXmin: Xid | null;
  remoteInvalidation: string | null;
  updatedAt: string;
}

/** The standby node a registry describes (DESIGN.md, "Ownership registry"). */
export interface NodeBinding {
  /** A physical slot on the standby that reserves no WAL (names.ts). */
  marker: string;
  /** pg_control_system().system_identifier, as text. */
  systemIdentifier: string;
  /** The standby's timeline when the binding was last checked. */
  timeline: number | null;
  /**
   * Write-ahead intent of the binding: the marker may not exist yet. A start that finds it
   * so creates the marker and completes the binding (a kill between the two steps).
   */
  pending?: boolean;
}

export interface PlanInput {
  remote: readonly RemoteSlot[];
  local: readonly LocalSlot[];
  registry: ReadonlyMap<string, RegistryEntry>;
  /** `pg_last_wal_replay_lsn()` on the standby. */
  standbyReplayLsn: Lsn;
  /** The standby's databases; when given, a remote slot of another database is not copied. */
  standbyDatabases?: ReadonlySet<string>;
  /** Failover slots of the primary left out by SLOTSYNC_SLOTS_INCLUDE/EXCLUDE. */
  excluded?: ReadonlySet<string>;
  /** SLOTSYNC_REPLACE_STALE: a stale same-name slot (isStaleSameName) is replaced. */
  replaceStale?: boolean;
  /** The standby's pg_postmaster_start_time() (ms): what tells a stale same-name slot. */
  standbyStartedAt?: number | null;
  /**
   * Remote slots of the copies' names that exist but are not failover slots (right after a
   * failover, before the new primary's slotsync turns failover on again): their copies are
   * kept, not dropped as obsolete.
   */
  notFailover?: ReadonlyMap<string, RemoteSlot>;
}

interface ActionBase {
  /** The remote slot's name (the report's key). */
  name: string;
  reason: string | null;
}

/** What becomes of the registry entry once a drop succeeded. */
export type AfterDrop = 'forget' | 'invalidate' | 'keep';

export type Action =
  | (ActionBase & { kind: 'create'; remote: RemoteSlot; stagingName: string })
  | (ActionBase & { kind: 'adopt'; stage: LocalSlot })
  | (ActionBase & {
      kind: 'advance';
      remote: RemoteSlot;
      /** The slot moved: the staging name while staging, the remote name once published. */
      slot: string;
      from: Lsn;
      to: Lsn;
      /** Publish the staging slot once it reaches `to` (it is then sync-ready). */
      publish: boolean;
    })
  | (ActionBase & { kind: 'publish'; remote: RemoteSlot; stagingName: string })
  | (ActionBase & { kind: 'finish_publish'; stagingName: string; dropStaging: boolean })
  | (ActionBase & { kind: 'restage' })
  | (ActionBase & {
      kind: 'drop';
      /** Slot names to drop on the standby (the published copy and/or the staging slot). */
      slots: string[];
      after: AfterDrop;
      remoteInvalidation: string | null;
      /** Not reported as the slot's outcome (a leftover staging slot, an orphan). */
      quiet: boolean;
      /** A stale same-name slot replaced under SLOTSYNC_REPLACE_STALE (reported `replaced`). */
      replaced?: boolean;
    })
  | (ActionBase & { kind: 'forget' })
  | (ActionBase & { kind: 'record_invalidation'; remoteInvalidation: string })
  | (ActionBase & { kind: 'skip'; state: ReportState })
  | (ActionBase & { kind: 'conflict' })
  | (ActionBase & { kind: 'none'; state: ReportState });

/** State of a slot's copy as the API reports it. */
export type ReportState = 'temporary' | 'sync_ready' | 'invalidated' | 'conflict' | 'absent';

/** What a cycle did to one slot. */
export type ReportAction =
  | 'created'
  | 'advanced'
  | 'ready'
  | 'dropped'
  | 'skipped'
  | 'conflict'
  | 'unchanged'
  | 'failed'
  /** A stale same-name slot dropped under SLOTSYNC_REPLACE_STALE; a fresh copy follows. */
  | 'replaced';

export interface SlotReport {
  name: string;
  action: ReportAction;
  state: ReportState;
  reason: string | null;
}
