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
}

/**
 * Lifecycle of a copy slotsync owns, mirroring slotsync.c's persistency:
 * `creating` is a write-ahead intent (the create call may or may not have happened),
 * `temporary` is RS_TEMPORARY (not usable after promotion), `sync_ready` is RS_PERSISTENT,
 * `invalidated` records that the primary's slot was invalidated and the copy dropped.
 */
export type CopyState = 'creating' | 'temporary' | 'sync_ready' | 'invalidated';

export interface RegistryEntry {
  name: string;
  database: string;
  plugin: string;
  twoPhase: boolean;
  state: CopyState;
  /** The copy's confirmed_flush_lsn when it was made (its consistent point). */
  createdLsn: Lsn | null;
  /** The primary's clock right after the copy was made (two_phase rule). */
  createdAt: string | null;
  confirmedFlushLsn: Lsn | null;
  restartLsn: Lsn | null;
  catalogXmin: Xid | null;
  remoteInvalidation: string | null;
  updatedAt: string;
}

export interface PlanInput {
  remote: readonly RemoteSlot[];
  local: readonly LocalSlot[];
  registry: ReadonlyMap<string, RegistryEntry>;
  /** `pg_last_wal_replay_lsn()` on the standby. */
  standbyReplayLsn: Lsn;
  /** Earliest `pg_prepared_xacts.prepared` per database on the primary. */
  oldestPreparedAt: ReadonlyMap<string, Date>;
  /** The primary's `now()` when it was read. */
  primaryNow: Date;
}

interface ActionBase {
  name: string;
  reason: string | null;
}

export type Action =
  | (ActionBase & { kind: 'create'; remote: RemoteSlot })
  | (ActionBase & {
      kind: 'advance';
      remote: RemoteSlot;
      from: Lsn;
      to: Lsn;
      /** Mark the copy sync-ready once it reaches `to`. */
      markReady: boolean;
    })
  | (ActionBase & { kind: 'mark_ready'; remote: RemoteSlot })
  | (ActionBase & { kind: 'adopt'; remote: RemoteSlot; local: LocalSlot })
  | (ActionBase & { kind: 'drop'; remoteInvalidation: string | null })
  | (ActionBase & { kind: 'forget' })
  | (ActionBase & { kind: 'record_invalidation'; remoteInvalidation: string })
  | (ActionBase & { kind: 'skip'; state: ReportState })
  | (ActionBase & { kind: 'conflict' })
  | (ActionBase & { kind: 'none'; state: ReportState });

export type ActionKind = Action['kind'];

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
  | 'failed';

export interface SlotReport {
  name: string;
  action: ReportAction;
  state: ReportState;
  reason: string | null;
}
