/** Statements run on the primary: one function each, typed results. */
import type pg from 'pg';
import type { RemoteSlot } from '../sync/types.js';
import { type SlotJson, toRemoteSlot } from './rows.js';

export interface PrimaryState {
  inRecovery: boolean;
  versionNum: number;
  now: Date;
  /** validate_remote_info(): the standby's primary_slot_name exists as a physical slot. */
  physicalSlotExists: boolean;
  synchronizedStandbySlots: string | null;
  slots: RemoteSlot[];
  oldestPreparedAt: Map<string, Date>;
  /** Digest of every failover slot's state: the worker polls it to wake on a change. */
  fingerprint: string;
}

interface PrimaryRow {
  in_recovery: boolean;
  version_num: number;
  now: Date;
  physical_slot_exists: boolean;
  synchronized_standby_slots: string | null;
  slots: SlotJson[];
  prepared: Record<string, string>;
  fingerprint: string;
}

/** One digest over what a cycle acts on; compared between cycles, never stored. */
const FINGERPRINT = `
  (SELECT pg_catalog.md5(coalesce(string_agg(
            f.slot_name || '/' || coalesce(f.confirmed_flush_lsn::text, '') || '/' ||
            coalesce(f.restart_lsn::text, '') || '/' || coalesce(f.catalog_xmin::text, '') || '/' ||
            coalesce(f.invalidation_reason, '') || '/' || f.plugin || '/' || f.two_phase::text,
            ',' ORDER BY f.slot_name), ''))
     FROM pg_catalog.pg_replication_slots f WHERE f.failover AND NOT f.temporary)`;

/**
 * Everything a cycle needs from the primary in one statement: slotsync.c's slot query,
 * validate_remote_info(), the clock, and the prepared transactions (two_phase rule).
 */
const READ_PRIMARY = `
SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
       pg_catalog.current_setting('server_version_num')::int AS version_num,
       pg_catalog.now() AS now,
       EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots
                WHERE slot_type = 'physical' AND slot_name = $1::text) AS physical_slot_exists,
       pg_catalog.current_setting('synchronized_standby_slots', true) AS synchronized_standby_slots,
       (SELECT coalesce(json_agg(s), '[]'::json) FROM pg_catalog.pg_replication_slots s
         WHERE s.failover AND NOT s.temporary) AS slots,
       (SELECT coalesce(json_object_agg(p.database, p.oldest), '{}'::json)
          FROM (SELECT database, min(prepared) AS oldest
                  FROM pg_catalog.pg_prepared_xacts GROUP BY database) p) AS prepared,
       ${FINGERPRINT} AS fingerprint`;

export async function readPrimary(pool: pg.Pool, primarySlotName: string): Promise<PrimaryState> {
  const result = await pool.query<PrimaryRow>(READ_PRIMARY, [primarySlotName]);
  const row = result.rows[0];
  if (row === undefined) throw new Error('the primary answered no row');
  return {
    inRecovery: row.in_recovery,
    versionNum: row.version_num,
    now: row.now,
    physicalSlotExists: row.physical_slot_exists,
    synchronizedStandbySlots: row.synchronized_standby_slots,
    slots: row.slots.map(toRemoteSlot),
    oldestPreparedAt: new Map(
      Object.entries(row.prepared).map(([database, at]) => [database, new Date(at)]),
    ),
    fingerprint: row.fingerprint,
  };
}

/**
 * Makes copy creations on the standby return at once: they wait for a running-xacts record,
 * and the flushing message pushes it past the WAL writer's delay (DESIGN.md, measured facts).
 */
export async function logStandbySnapshot(pool: pg.Pool): Promise<void> {
  await pool.query(
    `SELECT pg_catalog.pg_log_standby_snapshot(),
            pg_catalog.pg_logical_emit_message(false, 'slotsync', '', true)`,
  );
}

export async function primaryNow(pool: pg.Pool): Promise<Date> {
  const result = await pool.query<{ now: Date }>('SELECT pg_catalog.clock_timestamp() AS now');
  const row = result.rows[0];
  if (row === undefined) throw new Error('the primary answered no row');
  return row.now;
}

export interface PrimaryProbe {
  inRecovery: boolean;
  versionNum: number;
  physicalSlotExists: boolean;
  synchronizedStandbySlots: string | null;
}

/** validate_remote_info() and synchronized_standby_slots, for /health (no slot list). */
export async function probePrimary(pool: pg.Pool, primarySlotName: string): Promise<PrimaryProbe> {
  const result = await pool.query<Omit<PrimaryRow, 'slots' | 'prepared' | 'now'>>(
    `SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
            pg_catalog.current_setting('server_version_num')::int AS version_num,
            EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots
                     WHERE slot_type = 'physical' AND slot_name = $1::text) AS physical_slot_exists,
            pg_catalog.current_setting('synchronized_standby_slots', true) AS synchronized_standby_slots`,
    [primarySlotName],
  );
  const row = result.rows[0];
  if (row === undefined) throw new Error('the primary answered no row');
  return {
    inRecovery: row.in_recovery,
    versionNum: row.version_num,
    physicalSlotExists: row.physical_slot_exists,
    synchronizedStandbySlots: row.synchronized_standby_slots,
  };
}

/** The cheap change probe the worker runs while it naps (one digest, no rows). */
export async function readFingerprint(pool: pg.Pool): Promise<string> {
  const result = await pool.query<{ fingerprint: string }>(`SELECT ${FINGERPRINT} AS fingerprint`);
  return result.rows[0]?.fingerprint ?? '';
}
