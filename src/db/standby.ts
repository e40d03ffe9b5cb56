/** Statements run on the standby: one function each, typed results. */

import type pg from 'pg';
import { noRowError, SlotSyncError } from '../errors.js';
import { conninfoHasDbname } from '../sync/builtin.js';
import { formatLsn, type Lsn, parseLsn } from '../sync/lsn.js';
import type { LocalSlot } from '../sync/types.js';
import type { StandbyFacts } from '../sync/validate.js';
import { APPLICATION_NAME } from './pools.js';
import { conninfoHost } from './primary-targets.js';
import { arraysOf, digestOf, LOCAL_COLUMNS, toLocalSlot } from './rows.js';
import type { Queryable } from './standby-pools.js';

/** Session advisory lock key shared by every slotsync process syncing one standby. */
export const SYNC_LOCK_KEY = 0x736c6f7473796e63n; // 'slotsync'

/**
 * True while the session `$1` (the lock session's backend) still holds the sync lock. Every
 * statement that changes a slot runs only under this guard, in the same statement: if the
 * lock session died (terminated, idle_session_timeout, a reset) and another process took
 * the lock, the change does not happen (pg_locks shows a bigint advisory key as
 * classid = high 32 bits, objid = low 32 bits, objsubid = 1).
 */
const HOLDS_LOCK = `EXISTS (SELECT 1 FROM pg_catalog.pg_locks
   WHERE locktype = 'advisory' AND granted AND pid = $1::int
     AND classid = ${SYNC_LOCK_KEY >> 32n}::oid AND objid = ${SYNC_LOCK_KEY & 0xffffffffn}::oid
     AND objsubid = 1)`;

/** Raised when a guarded statement found the lock gone (see HOLDS_LOCK). */
export function lockLostError(): SlotSyncError {
  return new SlotSyncError(
    'SLOTSYNC_LOCK_LOST',
    "SLOTSYNC_STANDBY_URL: the standby session holding slotsync's sync lock was lost during the cycle (terminated, timed out or restarted); the cycle stopped before its next change",
  );
}

/** What ValidateSlotSyncParams() checks, as read by one statement. */
export type StandbySettings = Omit<StandbyFacts, 'inRecovery'>;

export interface StandbyState extends StandbySettings {
  /** Whether this session now holds the sync lock. */
  locked: boolean;
  /** The backend of the session that read (the lock session, for HOLDS_LOCK). */
  pid: number;
  /** pg_control_system().system_identifier: the cluster (shared by physical replicas). */
  systemIdentifier: string;
  /** The timeline of the standby's last restartpoint. */
  timeline: number | null;
  /**
   * The timeline of the WAL its walreceiver receives (received_tli), null when none runs or
   * this role may not see it (pg_read_all_stats). The last restartpoint's timeline is no
   * substitute: it lags a timeline switch by up to checkpoint_timeout.
   */
  walTimeline: number | null;
  /**
   * Whether the walreceiver streams now: true, false (none, or not streaming), null when this
   * role may not see its state (pg_read_all_stats).
   */
  streaming: boolean | null;
  inRecovery: boolean;
  replayLsn: Lsn | null;
  /** pg_last_wal_receive_lsn(): WAL received and flushed; null when nothing streamed yet. */
  receiveLsn: Lsn | null;
  /** pg_postmaster_start_time(): when this node last started (in recovery, if a standby). */
  startedAt: Date;
  /** null when the fingerprint equals the one passed in: the caller's copy is current. */
  slots: LocalSlot[] | null;
  fingerprint: string;
  /** Creations or advances still running for a slotsync process that died (kill -9). */
  orphanedStatements: number;
  /** Databases on the standby that accept connections: a copy can only live in one. */
  databases: string[];
  /** host and port of primary_conninfo (null when this role may not read it). */
  upstream: { host: string | null; port: string | null } | null;
  /** primary_conninfo names a database (PostgreSQL's slot sync needs one); null: not readable. */
  conninfoDbname: boolean | null;
}

interface StandbyRow {
  locked: boolean;
  in_recovery: boolean;
  replay_lsn: string | null;
  receive_lsn: string | null;
  started_at: Date;
  version_num: number;
  wal_level: string;
  hot_standby_feedback: string;
  primary_slot_name: string | null;
  primary_conninfo_set: boolean | null;
  primary_conninfo: string | null;
  sync_replication_slots: string | null;
  system_identifier: string;
  timeline: number | null;
  received_tli: number | null;
  walreceiver: string | null;
  walreceiver_visible: boolean;
  pid: number;
  databases: string[] | null;
  fingerprint: string;
  orphaned: number;
  slots: (string | number | boolean | null)[][] | null;
}

const SETTINGS = `
       pg_catalog.pg_is_in_recovery() AS in_recovery,
       pg_catalog.pg_last_wal_replay_lsn() AS replay_lsn,
       pg_catalog.pg_last_wal_receive_lsn() AS receive_lsn,
       pg_catalog.pg_postmaster_start_time() AS started_at,
       pg_catalog.current_setting('server_version_num')::int AS version_num,
       pg_catalog.current_setting('wal_level') AS wal_level,
       pg_catalog.current_setting('hot_standby_feedback') AS hot_standby_feedback,
       pg_catalog.current_setting('primary_slot_name') AS primary_slot_name,
       CASE WHEN pg_catalog.pg_has_role('pg_read_all_settings', 'USAGE')
            THEN pg_catalog.current_setting('primary_conninfo') <> '' END AS primary_conninfo_set,
       CASE WHEN pg_catalog.pg_has_role('pg_read_all_settings', 'USAGE')
            THEN pg_catalog.current_setting('primary_conninfo') END AS primary_conninfo,
       pg_catalog.current_setting('sync_replication_slots', true) AS sync_replication_slots,
       (SELECT system_identifier::text FROM pg_catalog.pg_control_system()) AS system_identifier,
       (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()) AS timeline,
       (SELECT received_tli FROM pg_catalog.pg_stat_wal_receiver) AS received_tli,
       (SELECT status FROM pg_catalog.pg_stat_wal_receiver) AS walreceiver,
       pg_catalog.pg_has_role('pg_read_all_stats', 'USAGE') AS walreceiver_visible,
       (SELECT pg_catalog.array_agg(datname::text) FROM pg_catalog.pg_database
         WHERE datallowconn) AS databases,
       pg_catalog.pg_backend_pid() AS pid`;

/**
 * Creations and advances a slotsync process left running on the standby (it died, its
 * statements did not): slotsync's standby sessions other than this one, busy with either.
 */
const ORPHANED_WHERE = `application_name = '${APPLICATION_NAME.standby}' AND state = 'active'
           AND pid <> pg_catalog.pg_backend_pid()
           AND (query LIKE '%pg_create_logical_replication_slot%'
                OR query LIKE '%pg_replication_slot_advance%')
           AND query NOT LIKE '%pg_stat_activity%'`;

const ORPHANED = `(SELECT count(*)::int FROM pg_catalog.pg_stat_activity WHERE ${ORPHANED_WHERE})`;

/**
 * `active` means in use by someone else: a slot slotsync's own sessions hold for a moment
 * (an advance, a copy) is not a consumer connected to the wrong server, nor is a synced slot
 * PostgreSQL's slot sync worker holds while it moves it (SLOTSYNC_ENGINE=builtin).
 */
const SLOTS = `SELECT ${LOCAL_COLUMNS.split(', ')
  .map((column) =>
    column === 'active'
      ? `(active AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity sa
           WHERE sa.pid = active_pid AND (sa.application_name = '${APPLICATION_NAME.standby}'
                                          OR (synced AND sa.backend_type = 'slotsync worker'))))
         AS active`
      : column,
  )
  .join(', ')} FROM pg_catalog.pg_replication_slots`;

/**
 * Takes the sync lock and, only when it was granted, reads the standby in the same
 * statement: settings (ValidateSlotSyncParams), replay position, a digest of every slot,
 * and the slots themselves only when the digest differs from $2 (the caller's copy).
 */
const LOCK_AND_READ = `
WITH l AS MATERIALIZED (SELECT $4::boolean OR pg_catalog.pg_try_advisory_lock($1::bigint) AS locked),
     s AS MATERIALIZED (SELECT * FROM (${SLOTS}) x WHERE (SELECT locked FROM l)),
     f AS MATERIALIZED (SELECT ${digestOf('s', LOCAL_COLUMNS)} AS fingerprint)
SELECT l.locked, ${SETTINGS}, f.fingerprint,
       CASE WHEN l.locked AND $3::boolean THEN ${ORPHANED} ELSE 0 END AS orphaned,
       CASE WHEN l.locked AND f.fingerprint IS DISTINCT FROM $2::text
            THEN ${arraysOf('s', LOCAL_COLUMNS)} END AS slots
  FROM l, f`;

const READ = `
WITH s AS MATERIALIZED (${SLOTS}),
     f AS MATERIALIZED (SELECT ${digestOf('s', LOCAL_COLUMNS)} AS fingerprint)
SELECT true AS locked, ${SETTINGS}, f.fingerprint, 0 AS orphaned,
       CASE WHEN f.fingerprint IS DISTINCT FROM $1::text
            THEN ${arraysOf('s', LOCAL_COLUMNS)} END AS slots
  FROM f`;

function toStandbyState(row: StandbyRow): StandbyState {
  return {
    locked: row.locked,
    pid: row.pid,
    systemIdentifier: row.system_identifier,
    timeline: row.timeline,
    walTimeline: row.received_tli,
    streaming: row.walreceiver_visible ? row.walreceiver === 'streaming' : null,
    inRecovery: row.in_recovery,
    replayLsn: parseLsn(row.replay_lsn),
    receiveLsn: parseLsn(row.receive_lsn),
    startedAt: row.started_at,
    versionNum: row.version_num,
    walLevel: row.wal_level,
    hotStandbyFeedback: row.hot_standby_feedback === 'on',
    primarySlotName: row.primary_slot_name ?? '',
    primaryConninfoSet: row.primary_conninfo_set,
    // Only where it points: the conninfo may hold a password, which is never kept.
    upstream: conninfoHost(row.primary_conninfo),
    conninfoDbname: row.primary_conninfo === null ? null : conninfoHasDbname(row.primary_conninfo),
    syncReplicationSlots: row.sync_replication_slots === 'on',
    slots: row.slots === null ? null : row.slots.map(toLocalSlot),
    fingerprint: row.fingerprint,
    orphanedStatements: row.orphaned,
    databases: row.databases ?? [],
  };
}

/**
 * `held`: this session holds the lock already (kept since the last cycle): it is not taken
 * again (a session-level lock taken twice needs two unlocks).
 */
export async function lockAndReadStandby(
  client: pg.ClientBase,
  knownFingerprint: string | null = null,
  held = false,
): Promise<StandbyState> {
  // Orphaned statements are looked for on full reads (first cycle, then every minute).
  // A named (prepared) statement: planned once per connection, not every cycle.
  const result = await client.query<StandbyRow>({
    name: 'slotsync-lock-and-read',
    text: LOCK_AND_READ,
    values: [SYNC_LOCK_KEY.toString(), knownFingerprint, knownFingerprint === null, held],
  });
  const row = result.rows[0];
  if (row === undefined) throw noRowError('standby');
  return toStandbyState(row);
}

/** The WAL a standby holds, read alone (after a read of the primary). */
export type Received = Pick<StandbyState, 'receiveLsn' | 'replayLsn' | 'walTimeline'>;

/** pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn() and the walreceiver's timeline. */
export async function readReceived(pool: Queryable): Promise<Received> {
  const result = await pool.query<{
    receive: string | null;
    replay: string | null;
    tli: number | null;
  }>(
    `SELECT pg_catalog.pg_last_wal_receive_lsn()::text AS receive,
            pg_catalog.pg_last_wal_replay_lsn()::text AS replay,
            (SELECT received_tli FROM pg_catalog.pg_stat_wal_receiver) AS tli`,
  );
  const row = result.rows[0];
  return {
    receiveLsn: parseLsn(row?.receive ?? null),
    replayLsn: parseLsn(row?.replay ?? null),
    walTimeline: row?.tli ?? null,
  };
}

/** The same read without the lock, every slot included (shutdown, promotion readiness). */
export async function readStandby(pool: Queryable): Promise<StandbyState & { slots: LocalSlot[] }> {
  const state = await pollStandby(pool, null);
  return { ...state, slots: state.slots ?? [] };
}

/**
 * The read without the lock; the slots only when their digest differs from
 * `knownFingerprint` (the worker's check between cycles: cheap while nothing moves).
 */
export async function pollStandby(
  pool: Queryable,
  knownFingerprint: string | null,
): Promise<StandbyState> {
  const result = await pool.query<StandbyRow>({
    name: 'slotsync-read-standby',
    text: READ,
    values: [knownFingerprint],
  });
  const row = result.rows[0];
  if (row === undefined) throw noRowError('standby');
  return toStandbyState(row);
}

export async function unlockSync(client: pg.ClientBase): Promise<void> {
  await client.query('SELECT pg_catalog.pg_advisory_unlock($1::bigint)', [
    SYNC_LOCK_KEY.toString(),
  ]);
}

/**
 * ReplicationSlotCreate() + reserve_wal_for_local_slot(), over SQL, under the staging name:
 * a persistent, non-failover logical slot (a standby refuses failover slots made by anyone
 * but its own worker). Returns the copy's consistent point, its confirmed_flush_lsn.
 */
export async function createCopy(
  pool: Queryable,
  lockPid: number,
  stagingName: string,
  plugin: string,
  twoPhase: boolean,
): Promise<Lsn> {
  // The pool's connections carry the creation timeout (SLOTSYNC_CREATE_TIMEOUT_MS).
  const result = await pool.query<{ lsn: string | null }>(
    `SELECT CASE WHEN ${HOLDS_LOCK} THEN (pg_catalog.pg_create_logical_replication_slot(
              $2::name, $3::name, false, $4::boolean, false)).lsn END AS lsn`,
    [lockPid, stagingName, plugin, twoPhase],
  );
  return lsnOrLockLost(result.rows[0]?.lsn);
}

/** LogicalSlotAdvanceAndCheckSnapState(), over SQL. Returns where the slot ended up. */
export async function advanceCopy(
  pool: Queryable,
  lockPid: number,
  name: string,
  target: Lsn,
): Promise<Lsn> {
  const result = await pool.query<{ end_lsn: string | null }>(
    `SELECT CASE WHEN ${HOLDS_LOCK} THEN (pg_catalog.pg_replication_slot_advance($2::name, $3::pg_lsn)).end_lsn END AS end_lsn`,
    [lockPid, name, formatLsn(target)],
  );
  return lsnOrLockLost(result.rows[0]?.end_lsn);
}

/**
 * Several advances in one statement, in the given order (one round trip and one lock
 * check instead of one per copy: the check is evaluated once, before the first advance).
 * Slots move even when a later one fails (an advance is not transactional): the caller
 * then advances them one by one, where a copy already at its target stays there.
 * Returns where each slot ended up.
 */
export async function advanceCopies(
  pool: Queryable,
  lockPid: number,
  targets: ReadonlyArray<{ name: string; to: Lsn }>,
): Promise<Lsn[]> {
  // A named (prepared) statement: a busy standby runs one every cycle.
  const result = await pool.query<{ end_lsn: string | null }>({
    name: 'slotsync-advance',
    text: `SELECT CASE WHEN ${HOLDS_LOCK} THEN (pg_catalog.pg_replication_slot_advance(t.name, t.target)).end_lsn END AS end_lsn
             FROM unnest($2::name[], $3::pg_lsn[]) WITH ORDINALITY AS t(name, target, n)
            ORDER BY t.n`,
    values: [lockPid, targets.map((t) => t.name), targets.map((t) => formatLsn(t.to))],
  });
  if (result.rows.length !== targets.length) throw lockLostError();
  return result.rows.map((row) => lsnOrLockLost(row.end_lsn));
}

/**
 * Publication: the sync-ready staging slot copied under the remote slot's name. The copy
 * keeps restart_lsn, confirmed_flush_lsn and catalog_xmin (it is made without looking for a
 * new start point, so it returns at once). Returns the copy's confirmed_flush_lsn.
 */
export async function publishCopy(
  pool: Queryable,
  lockPid: number,
  stagingName: string,
  name: string,
): Promise<Lsn> {
  const result = await pool.query<{ lsn: string | null }>(
    `SELECT CASE WHEN ${HOLDS_LOCK} THEN (pg_catalog.pg_copy_logical_replication_slot($2::name, $3::name)).lsn END AS lsn`,
    [lockPid, stagingName, name],
  );
  return lsnOrLockLost(result.rows[0]?.lsn);
}

export async function dropCopy(pool: Queryable, lockPid: number, name: string): Promise<void> {
  const result = await pool.query<{ done: boolean | null }>(
    `SELECT CASE WHEN ${HOLDS_LOCK} THEN (SELECT true FROM pg_catalog.pg_drop_replication_slot($2::name)) END AS done`,
    [lockPid, name],
  );
  if (result.rows[0]?.done !== true) throw lockLostError();
}

/**
 * The node marker: a physical slot that reserves no WAL, so it costs nothing; slots are
 * never replicated, so only this node holds it (DESIGN.md, "Ownership registry").
 */
export async function createNodeMarker(
  pool: Queryable,
  lockPid: number,
  name: string,
): Promise<void> {
  const result = await pool.query<{ done: boolean | null }>(
    `SELECT CASE WHEN ${HOLDS_LOCK} THEN (SELECT true FROM pg_catalog.pg_create_physical_replication_slot($2::name, false, false)) END AS done`,
    [lockPid, name],
  );
  if (result.rows[0]?.done !== true) throw lockLostError();
}

function lsnOrLockLost(text: string | null | undefined): Lsn {
  if (text === null || text === undefined) throw lockLostError();
  return parseLsn(text);
}

/**
 * Ends creations and advances still running for a slotsync process that died mid-cycle
 * (kill -9). Called while holding the sync lock, before this cycle starts its own: any
 * such statement then belongs to a process that is gone, and a creation finishing later
 * would leave a copy nobody records.
 */
export async function terminateOrphanedStatements(pool: Queryable): Promise<number> {
  const result = await pool.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid, 5000))::int AS n
       FROM pg_catalog.pg_stat_activity WHERE ${ORPHANED_WHERE}`,
  );
  return result.rows[0]?.n ?? 0;
}

export interface StandbyProbe extends StandbySettings {
  inRecovery: boolean;
  replayLsn: Lsn | null;
  /** REPLICATION or superuser: needed to create, advance and drop slots. */
  canManageSlots: boolean;
  /** PostgreSQL 18's idle_replication_slot_timeout (null before 18): it applies to copies. */
  idleSlotTimeout: string | null;
}

/** Settings and privileges only, for /health (no slot list). */
export async function probeStandby(pool: Queryable): Promise<StandbyProbe> {
  const result = await pool.query<
    StandbyRow & { can_manage_slots: boolean; idle_slot_timeout: string | null }
  >(
    `SELECT true AS locked, ${SETTINGS}, '' AS fingerprint, 0 AS orphaned, NULL::json AS slots,
            (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles
              WHERE rolname = current_user) AS can_manage_slots,
            pg_catalog.current_setting('idle_replication_slot_timeout', true) AS idle_slot_timeout`,
  );
  const row = result.rows[0];
  if (row === undefined) throw noRowError('standby');
  return {
    ...toStandbyState(row),
    canManageSlots: row.can_manage_slots,
    idleSlotTimeout: row.idle_slot_timeout,
  };
}
