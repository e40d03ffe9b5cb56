/** Rows of pg_replication_slots (as JSON, whatever the major version) parsed at the edge. */
import { parseLsn, parseXid } from '../sync/lsn.js';
import type { LocalSlot, RemoteSlot } from '../sync/types.js';

export interface SlotJson {
  slot_name: string;
  plugin: string | null;
  slot_type: string;
  database: string | null;
  temporary: boolean;
  active: boolean;
  catalog_xmin: string | number | null;
  restart_lsn: string | null;
  confirmed_flush_lsn: string | null;
  two_phase: boolean | null;
  two_phase_at?: string | null;
  failover?: boolean | null;
  synced?: boolean | null;
  invalidation_reason?: string | null;
}

export function toRemoteSlot(row: SlotJson): RemoteSlot {
  return {
    name: row.slot_name,
    plugin: row.plugin ?? '',
    database: row.database ?? '',
    confirmedFlushLsn: parseLsn(row.confirmed_flush_lsn),
    restartLsn: parseLsn(row.restart_lsn),
    catalogXmin: parseXid(row.catalog_xmin),
    twoPhase: row.two_phase === true,
    twoPhaseAt: parseLsn(row.two_phase_at ?? null),
    failover: row.failover === true,
    temporary: row.temporary,
    invalidationReason: row.invalidation_reason ?? null,
  };
}

export function toLocalSlot(row: SlotJson): LocalSlot {
  return {
    name: row.slot_name,
    slotType: row.slot_type === 'physical' ? 'physical' : 'logical',
    plugin: row.plugin,
    database: row.database,
    temporary: row.temporary,
    active: row.active,
    confirmedFlushLsn: parseLsn(row.confirmed_flush_lsn),
    restartLsn: parseLsn(row.restart_lsn),
    catalogXmin: parseXid(row.catalog_xmin),
    twoPhase: row.two_phase === true,
    synced: row.synced === true,
    invalidationReason: row.invalidation_reason ?? null,
  };
}
