/** Statements run on the primary: one function each, typed results. */
import type pg from 'pg';
import { noRowError } from '../errors.js';
import { type Lsn, parseLsn } from '../sync/lsn.js';
import { forkPointOf } from '../sync/timeline.js';
import type { RemoteSlot } from '../sync/types.js';
import { heldSql } from './quorum.js';
import { arraysOf, digestOf, REMOTE_COLUMNS, toRemoteSlot } from './rows.js';

export interface PrimaryState {
  inRecovery: boolean;
  versionNum: number;
  now: Date;
  /** validate_remote_info(): the standby's primary_slot_name exists as a physical slot. */
  physicalSlotExists: boolean;
  /** ... and is in use (the standby streams through it): this is the standby's upstream. */
  physicalSlotActive: boolean;
  systemIdentifier: string;
  synchronizedStandbySlots: string | null;
  /** null when the fingerprint equals the one passed in: the caller's copy is current. */
  slots: RemoteSlot[] | null;
  /**
   * Logical slots of the names asked for that are not failover slots (a copy's remote slot
   * right after a failover, before its failover flag is turned on again); null with `slots`.
   */
  others: RemoteSlot[] | null;
  /** Digest of what a cycle acts on: the failover slots, the others, the setting. */
  fingerprint: string;
  /**
   * The same digest without positions (readShapeFingerprint), read in the same statement;
   * null unless asked for (only SLOTSYNC_ENGINE=builtin probes it: one scan less otherwise).
   */
  shape: string | null;
  /** The quorum manager announced it will remove this standby's slot from the setting. */
  removalPending: boolean;
  /** pg_current_wal_flush_lsn(): no walsender had sent WAL past it (null in recovery). */
  flushLsn: Lsn | null;
  /** The timeline the primary writes (null in recovery). */
  timeline: number | null;
  /** The standby's physical slot here: its restart_lsn (null: none, or never reserved). */
  physicalSlotRestartLsn: Lsn | null;
}

interface PrimaryRow {
  in_recovery: boolean;
  version_num: number;
  now: Date;
  physical_slot_exists: boolean;
  physical_slot_active: boolean;
  system_identifier: string;
  synchronized_standby_slots: string | null;
  slots: (string | number | boolean | null)[][] | null;
  others: (string | number | boolean | null)[][] | null;
  fingerprint: string;
  shape: string | null;
  removal_pending: boolean;
  flush_lsn: string | null;
  timeline: number | null;
  physical_restart_lsn: string | null;
}

const FAILOVER_SLOTS = `SELECT ${REMOTE_COLUMNS} FROM pg_catalog.pg_replication_slots
                         WHERE failover AND NOT temporary`;
/** Logical slots named in $1 that are not failover slots (see PrimaryState.others). */
const OTHER_SLOTS = `SELECT ${REMOTE_COLUMNS} FROM pg_catalog.pg_replication_slots
                      WHERE slot_type = 'logical' AND NOT failover AND NOT temporary
                        AND slot_name = ANY($1::text[])`;
/** Every slot once (the view is not free): the failover ones and the physical one. */
const ALL_SLOTS = `SELECT ${REMOTE_COLUMNS}, slot_type, active FROM pg_catalog.pg_replication_slots`;
/** The others' positions move with their consumers: only whether they exist counts. */
const OTHER_KEY = 'slot_name, plugin, database';
/**
 * What a cycle acts on, as one digest: the failover slots, the others (by name), and
 * synchronized_standby_slots (promotion readiness rests on it). The worker's change probe
 * computes the same digest.
 */
const FINGERPRINT = `pg_catalog.md5(${digestOf('s', REMOTE_COLUMNS)} || '|' || ${digestOf('o', OTHER_KEY)}
  || '|' || coalesce(pg_catalog.current_setting('synchronized_standby_slots', true), ''))`;

/**
 * SLOTSYNC_ENGINE=builtin's change probe: what the failover slots are (not where they are,
 * which PostgreSQL's sync follows by itself) and synchronized_standby_slots. On a primary
 * that writes all the time it stays the same, so the worker naps, and a new slot, a dropped
 * one or an edit of the setting still wakes it within a poll.
 */
const SHAPE = `pg_catalog.md5(coalesce((SELECT string_agg(concat_ws('/', slot_name, plugin, database,
    two_phase, failover, invalidation_reason), ',' ORDER BY slot_name)
    FROM pg_catalog.pg_replication_slots
   WHERE slot_type = 'logical' AND failover AND NOT temporary), '')
  || '|' || coalesce(pg_catalog.current_setting('synchronized_standby_slots', true), ''))`;

/**
 * Everything a cycle needs from the primary in one statement: slotsync.c's slot query,
 * validate_remote_info() (with the cluster's identity), the clock, and a digest of it all.
 * The slot rows come back only when the digest differs from $3, the one the caller already
 * holds: an idle cycle transfers and parses no slot.
 */
const READ_PRIMARY = `
WITH a AS MATERIALIZED (${ALL_SLOTS}),
     s AS MATERIALIZED (SELECT ${REMOTE_COLUMNS} FROM a WHERE failover AND NOT temporary),
     o AS MATERIALIZED (SELECT ${REMOTE_COLUMNS} FROM a
                         WHERE slot_type = 'logical' AND NOT failover AND NOT temporary
                           AND slot_name = ANY($1::text[])),
     f AS MATERIALIZED (SELECT ${FINGERPRINT} AS fingerprint)
SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
       pg_catalog.current_setting('server_version_num')::int AS version_num,
       pg_catalog.now() AS now,
       EXISTS (SELECT 1 FROM a WHERE slot_type = 'physical' AND slot_name = $2::text)
         AS physical_slot_exists,
       EXISTS (SELECT 1 FROM a WHERE slot_type = 'physical' AND slot_name = $2::text AND active)
         AS physical_slot_active,
       (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS system_identifier,
       pg_catalog.current_setting('synchronized_standby_slots', true) AS synchronized_standby_slots,
       ${heldSql('pending', '$2::text')} AS removal_pending,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery()
            THEN pg_catalog.pg_current_wal_flush_lsn()::text END AS flush_lsn,
       CASE WHEN NOT pg_catalog.pg_is_in_recovery()
            THEN ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS timeline,
       (SELECT restart_lsn::text FROM a WHERE slot_type = 'physical' AND slot_name = $2::text)
         AS physical_restart_lsn,
       f.fingerprint,
       CASE WHEN $4::boolean THEN ${SHAPE} END AS shape,
       CASE WHEN f.fingerprint IS DISTINCT FROM $3::text THEN ${arraysOf('s', REMOTE_COLUMNS)} END AS slots,
       CASE WHEN f.fingerprint IS DISTINCT FROM $3::text THEN ${arraysOf('o', REMOTE_COLUMNS)} END AS others
  FROM f`;

/**
 * `copies`: the names of the copies slotsync owns, whose remote slots are read even when
 * they are not failover slots (PrimaryState.others). `withShape`: read the shape digest too.
 */
export async function readPrimary(
  pool: pg.Pool,
  primarySlotName: string,
  copies: readonly string[],
  knownFingerprint: string | null = null,
  withShape = false,
): Promise<PrimaryState> {
  // A named (prepared) statement: planned once per connection, not every cycle.
  const result = await pool.query<PrimaryRow>({
    name: 'slotsync-read-primary',
    text: READ_PRIMARY,
    values: [copies, primarySlotName, knownFingerprint, withShape],
  });
  const row = result.rows[0];
  if (row === undefined) throw noRowError('primary');
  return {
    inRecovery: row.in_recovery,
    versionNum: row.version_num,
    now: row.now,
    physicalSlotExists: row.physical_slot_exists,
    physicalSlotActive: row.physical_slot_active,
    systemIdentifier: row.system_identifier,
    synchronizedStandbySlots: row.synchronized_standby_slots,
    slots: row.slots === null ? null : row.slots.map(toRemoteSlot),
    others: row.others === null ? null : row.others.map(toRemoteSlot),
    fingerprint: row.fingerprint,
    shape: row.shape,
    removalPending: row.removal_pending,
    flushLsn: parseLsn(row.flush_lsn),
    timeline: row.timeline,
    physicalSlotRestartLsn: parseLsn(row.physical_restart_lsn),
  };
}

/**
 * Where the primary's timeline history says `timeline` ended (the primary's timeline forked
 * from it there): read from the primary's history file, which needs pg_read_server_files or
 * superuser. Null when the history does not list it or cannot be read.
 */
export async function readForkPoint(
  pool: pg.Pool,
  primaryTimeline: number,
  timeline: number,
): Promise<Lsn | null> {
  const file = `pg_wal/${primaryTimeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
  try {
    const { rows } = await pool.query<{ history: string }>(
      'SELECT pg_catalog.pg_read_file($1::text) AS history',
      [file],
    );
    return forkPointOf(rows[0]?.history ?? '', timeline);
  } catch {
    return null;
  }
}

/**
 * Makes copy creations on the standby return at once: they wait for a running-xacts record,
 * which the primary sends only once flushed, and left alone it waits for the WAL writer
 * (about 200 ms). Nothing here reaches a logical consumer: the record is logged first, with
 * no transaction id assigned yet (so it lists no transaction of ours), then an id is taken,
 * so the commit of this statement flushes the WAL written so far. A commit with no change
 * decodes to nothing (reorderbuffer.c skips transactions without a base snapshot), unlike
 * pg_logical_emit_message(), which every consumer asking for messages receives.
 * synchronous_commit = local: flush here, never wait for a synchronous standby.
 */
export async function logStandbySnapshot(pool: pg.Pool): Promise<void> {
  await pool.query(
    `SELECT pg_catalog.set_config('synchronous_commit', 'local', true),
            pg_catalog.pg_log_standby_snapshot(),
            pg_catalog.pg_current_xact_id()`,
  );
}

/** A running-xacts record alone (DecodeWindow); returns where it was written. */
export async function logRunningXacts(pool: pg.Pool): Promise<Lsn> {
  const { rows } = await pool.query<{ lsn: string }>(
    'SELECT pg_catalog.pg_log_standby_snapshot()::text AS lsn',
  );
  const lsn = rows[0]?.lsn;
  if (lsn === undefined) throw noRowError('primary');
  return parseLsn(lsn);
}

export interface PrimaryProbe {
  inRecovery: boolean;
  versionNum: number;
  physicalSlotExists: boolean;
  synchronizedStandbySlots: string | null;
}

/** validate_remote_info() and synchronized_standby_slots, for /health (no slot list). */
export async function probePrimary(pool: pg.Pool, primarySlotName: string): Promise<PrimaryProbe> {
  const result = await pool.query<
    Pick<
      PrimaryRow,
      'in_recovery' | 'version_num' | 'physical_slot_exists' | 'synchronized_standby_slots'
    >
  >(
    `SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
            pg_catalog.current_setting('server_version_num')::int AS version_num,
            EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots
                     WHERE slot_type = 'physical' AND slot_name = $1::text) AS physical_slot_exists,
            pg_catalog.current_setting('synchronized_standby_slots', true) AS synchronized_standby_slots`,
    [primarySlotName],
  );
  const row = result.rows[0];
  if (row === undefined) throw noRowError('primary');
  return {
    inRecovery: row.in_recovery,
    versionNum: row.version_num,
    physicalSlotExists: row.physical_slot_exists,
    synchronizedStandbySlots: row.synchronized_standby_slots,
  };
}

/** What the worker's change probe reads (ChangeProbe). */
export interface ChangeProbe {
  /** The digest the cycle compares: readPrimary()'s fingerprint, or its shape (builtin). */
  fingerprint: string;
  /**
   * The standby's physical slot here: its restart_lsn (null: none, or never reserved). The
   * primary waits for that position, whoever moves it: past what the standby received, the
   * consumers may get WAL the standby lacks, and the digest would not show it.
   */
  physicalSlotRestartLsn: Lsn | null;
}

/**
 * The cheap change probe the worker runs while it naps (one digest, no rows): the same
 * digest as readPrimary() for the same `copies` (`shape`: the builtin engine's digest, as
 * readPrimary(…, withShape)), and the standby's physical slot.
 */
export async function readChangeProbe(
  pool: pg.Pool,
  copies: readonly string[],
  primarySlotName: string,
  shape: boolean,
): Promise<ChangeProbe> {
  const result = await pool.query<{ fingerprint: string; physical_restart_lsn: string | null }>({
    name: shape ? 'slotsync-shape' : 'slotsync-fingerprint',
    text: shape
      ? `SELECT ${SHAPE} AS fingerprint, (SELECT restart_lsn::text FROM pg_catalog.pg_replication_slots
                  WHERE slot_type = 'physical' AND slot_name = $1::text) AS physical_restart_lsn`
      : `WITH s AS MATERIALIZED (${FAILOVER_SLOTS}), o AS MATERIALIZED (${OTHER_SLOTS})
         SELECT ${FINGERPRINT} AS fingerprint,
                (SELECT restart_lsn::text FROM pg_catalog.pg_replication_slots
                  WHERE slot_type = 'physical' AND slot_name = $2::text) AS physical_restart_lsn`,
    values: shape ? [primarySlotName] : [copies, primarySlotName],
  });
  const row = result.rows[0];
  return {
    fingerprint: row?.fingerprint ?? '',
    physicalSlotRestartLsn: parseLsn(row?.physical_restart_lsn ?? null),
  };
}
