/**
 * ValidateSlotSyncParams(), validate_remote_info() and CheckAndGetDbnameFromConninfo(),
 * over what one read of each side returned. Throws with slotsync.c's wording.
 */

import { SlotSyncError, setupError } from '../errors.js';
import type { EngineKind } from './builtin.js';

export interface StandbyFacts {
  inRecovery: boolean;
  versionNum: number;
  walLevel: string;
  hotStandbyFeedback: boolean;
  primarySlotName: string;
  /** null when this role may not read it (needs pg_read_all_settings). */
  primaryConninfoSet: boolean | null;
  /** PostgreSQL's own worker (17+): `sync_replication_slots`. */
  syncReplicationSlots: boolean;
}

export interface PrimaryFacts {
  inRecovery: boolean;
  versionNum: number;
  physicalSlotExists: boolean;
}

export const MIN_VERSION_NUM = 170000;

/** The standby's own settings: checked before anything is read from the primary. */
export function validateStandby(standby: StandbyFacts, engine: EngineKind = 'sql'): void {
  if (!standby.inRecovery) {
    throw new SlotSyncError(
      'SLOTSYNC_STANDBY_NOT_IN_RECOVERY',
      'replication slots can only be synchronized to a standby server',
      { hint: 'SLOTSYNC_STANDBY_URL points at a server that is not in recovery (promoted?).' },
    );
  }
  if (standby.versionNum < MIN_VERSION_NUM) {
    throw setupError(
      `slotsync needs PostgreSQL 17 or later on the standby (server_version_num ${standby.versionNum})`,
    );
  }
  // Under SLOTSYNC_ENGINE=builtin the settings below are PostgreSQL's slot sync's to need:
  // said as why it is stuck (sync/builtin.ts), never a reason to stop reading the facts.
  if (engine === 'builtin') return;
  if (standby.syncReplicationSlots) {
    throw setupError(
      'the standby runs PostgreSQL\'s own slot synchronization worker ("sync_replication_slots" = on); slotsync and the worker must not both sync one standby',
      'Set sync_replication_slots = off on the standby, or stop slotsync.',
    );
  }
  if (standby.walLevel !== 'logical') {
    throw setupError('replication slot synchronization requires "wal_level" >= "logical"');
  }
  if (standby.primarySlotName === '') {
    throw setupError('replication slot synchronization requires "primary_slot_name" to be set');
  }
  if (!standby.hotStandbyFeedback) {
    throw setupError(
      'replication slot synchronization requires "hot_standby_feedback" to be enabled',
    );
  }
  if (standby.primaryConninfoSet === false) {
    throw setupError('replication slot synchronization requires "primary_conninfo" to be set');
  }
}

export function validatePrimary(primary: PrimaryFacts, standby: StandbyFacts): void {
  if (primary.inRecovery) {
    throw new SlotSyncError(
      'SLOTSYNC_PRIMARY_IN_RECOVERY',
      'cannot synchronize replication slots from a standby server',
    );
  }
  if (Math.floor(primary.versionNum / 10000) !== Math.floor(standby.versionNum / 10000)) {
    throw setupError(
      `the primary (server_version_num ${primary.versionNum}) and the standby (${standby.versionNum}) must run the same major version`,
    );
  }
  if (!primary.physicalSlotExists) {
    throw setupError(
      `replication slot "${standby.primarySlotName}" specified by "primary_slot_name" does not exist on primary server`,
      'Check if "primary_slot_name" is configured correctly.',
    );
  }
}
