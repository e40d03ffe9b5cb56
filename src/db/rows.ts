/**
 * Rows of pg_replication_slots, fetched as compact JSON arrays (one aggregate per side keeps
 * a cycle to one round trip; only the columns a cycle uses, so 1,000 slots stay cheap) and
 * parsed at the edge.
 */
import { parseLsn, parseXid } from '../sync/lsn.js';
import type { LocalSlot, RemoteSlot } from '../sync/types.js';

/** The primary's columns, in the order REMOTE_COLUMNS lists them. */
export const REMOTE_COLUMNS =
  'slot_name, plugin, database, confirmed_flush_lsn, restart_lsn, catalog_xmin, two_phase, failover, temporary, invalidation_reason';

type Cell = string | number | boolean | null;

export function toRemoteSlot(row: Cell[]): RemoteSlot {
  const [
    name,
    plugin,
    database,
    confirmed,
    restart,
    xmin,
    twoPhase,
    failover,
    temporary,
    invalidation,
  ] = row;
  return {
    name: String(name),
    plugin: plugin === null ? '' : String(plugin),
    database: database === null ? '' : String(database),
    confirmedFlushLsn: parseLsn(confirmed as string | null),
    restartLsn: parseLsn(restart as string | null),
    catalogXmin: parseXid(xmin as string | number | null),
    twoPhase: twoPhase === true,
    failover: failover === true,
    temporary: temporary === true,
    invalidationReason: (invalidation as string | null) ?? null,
  };
}

/** The standby's columns, in the order LOCAL_COLUMNS lists them. */
export const LOCAL_COLUMNS =
  'slot_name, slot_type, plugin, database, temporary, active, confirmed_flush_lsn, restart_lsn, catalog_xmin, two_phase, synced, invalidation_reason, failover, active_pid, inactive_since';

export function toLocalSlot(row: Cell[]): LocalSlot {
  const [
    name,
    type,
    plugin,
    database,
    temporary,
    active,
    confirmed,
    restart,
    xmin,
    twoPhase,
    synced,
    invalidation,
    failover,
    activePid,
    inactiveSince,
  ] = row;
  return {
    name: String(name),
    slotType: type === 'physical' ? 'physical' : 'logical',
    plugin: (plugin as string | null) ?? null,
    database: (database as string | null) ?? null,
    temporary: temporary === true,
    active: active === true,
    confirmedFlushLsn: parseLsn(confirmed as string | null),
    restartLsn: parseLsn(restart as string | null),
    catalogXmin: parseXid(xmin as string | number | null),
    twoPhase: twoPhase === true,
    synced: synced === true,
    invalidationReason: (invalidation as string | null) ?? null,
    failover: failover === true,
    activePid: typeof activePid === 'number' ? activePid : null,
    inactiveSince: typeof inactiveSince === 'string' ? Date.parse(inactiveSince) : null,
  };
}

/** A digest of the given columns over every row of `relation` (md5 of the sorted rows). */
export function digestOf(relation: string, columns: string): string {
  return `(SELECT pg_catalog.md5(coalesce(string_agg(concat_ws('/', ${columns}), ',' ORDER BY slot_name), '')) FROM ${relation})`;
}

export function arraysOf(relation: string, columns: string): string {
  return `(SELECT coalesce(json_agg(json_build_array(${columns})), '[]'::json) FROM ${relation})`;
}
