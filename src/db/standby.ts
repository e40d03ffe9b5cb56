/** Statements run on the standby: one function each, typed results. */
import type pg from 'pg';
import { formatLsn, type Lsn, parseLsn } from '../sync/lsn.js';
import type { LocalSlot } from '../sync/types.js';
import { queryWithTimeout } from './pools.js';
import { type SlotJson, toLocalSlot } from './rows.js';

/** Session advisory lock key shared by every slotsync process syncing one standby. */
export const SYNC_LOCK_KEY = 0x736c6f7473796e63n; // 'slotsync'

export interface StandbySettings {
  versionNum: number;
  walLevel: string;
  hotStandbyFeedback: boolean;
  primarySlotName: string;
  /** null when this role may not read it (needs pg_read_all_settings). */
  primaryConninfoSet: boolean | null;
  /** PostgreSQL's own worker (17+): `sync_replication_slots`. */
  syncReplicationSlots: boolean;
}

export interface StandbyState extends StandbySettings {
  /** Whether this session now holds the sync lock. */
  locked: boolean;
  inRecovery: boolean;
  replayLsn: Lsn | null;
  slots: LocalSlot[];
}

interface StandbyRow {
  locked: boolean;
  in_recovery: boolean;
  replay_lsn: string | null;
  version_num: number;
  wal_level: string;
  hot_standby_feedback: string;
  primary_slot_name: string | null;
  primary_conninfo_set: boolean | null;
  sync_replication_slots: string | null;
  slots: SlotJson[] | null;
}

const SETTINGS = `
       pg_catalog.pg_is_in_recovery() AS in_recovery,
       pg_catalog.pg_last_wal_replay_lsn() AS replay_lsn,
       pg_catalog.current_setting('server_version_num')::int AS version_num,
       pg_catalog.current_setting('wal_level') AS wal_level,
       pg_catalog.current_setting('hot_standby_feedback') AS hot_standby_feedback,
       pg_catalog.current_setting('primary_slot_name') AS primary_slot_name,
       (SELECT setting <> '' FROM pg_catalog.pg_settings
         WHERE name = 'primary_conninfo') AS primary_conninfo_set,
       pg_catalog.current_setting('sync_replication_slots', true) AS sync_replication_slots`;

/**
 * Takes the sync lock and, only when it was granted, reads the standby in the same
 * statement: settings (ValidateSlotSyncParams), replay position and every slot.
 */
const LOCK_AND_READ = `
WITH l AS MATERIALIZED (SELECT pg_catalog.pg_try_advisory_lock($1::bigint) AS locked)
SELECT l.locked, ${SETTINGS},
       CASE WHEN l.locked THEN
         (SELECT coalesce(json_agg(s), '[]'::json) FROM pg_catalog.pg_replication_slots s)
       END AS slots
  FROM l`;

const READ = `SELECT true AS locked, ${SETTINGS},
       (SELECT coalesce(json_agg(s), '[]'::json) FROM pg_catalog.pg_replication_slots s) AS slots`;

function toStandbyState(row: StandbyRow): StandbyState {
  return {
    locked: row.locked,
    inRecovery: row.in_recovery,
    replayLsn: parseLsn(row.replay_lsn),
    versionNum: row.version_num,
    walLevel: row.wal_level,
    hotStandbyFeedback: row.hot_standby_feedback === 'on',
    primarySlotName: row.primary_slot_name ?? '',
    primaryConninfoSet: row.primary_conninfo_set,
    syncReplicationSlots: row.sync_replication_slots === 'on',
    slots: (row.slots ?? []).map(toLocalSlot),
  };
}

export async function lockAndReadStandby(client: pg.PoolClient): Promise<StandbyState> {
  const result = await client.query<StandbyRow>(LOCK_AND_READ, [SYNC_LOCK_KEY.toString()]);
  const row = result.rows[0];
  if (row === undefined) throw new Error('the standby answered no row');
  return toStandbyState(row);
}

/** The same read without the lock (shutdown report, health). */
export async function readStandby(pool: pg.Pool | pg.PoolClient): Promise<StandbyState> {
  const result = await pool.query<StandbyRow>(READ);
  const row = result.rows[0];
  if (row === undefined) throw new Error('the standby answered no row');
  return toStandbyState(row);
}

export async function unlockSync(client: pg.PoolClient): Promise<void> {
  await client.query('SELECT pg_catalog.pg_advisory_unlock($1::bigint)', [
    SYNC_LOCK_KEY.toString(),
  ]);
}

/**
 * ReplicationSlotCreate() + reserve_wal_for_local_slot(), over SQL: a persistent,
 * non-failover logical slot (a standby refuses failover slots made by anyone but its own
 * worker). Returns the copy's consistent point, its confirmed_flush_lsn.
 */
export async function createCopy(
  client: pg.PoolClient,
  name: string,
  plugin: string,
  twoPhase: boolean,
  timeoutMs: number,
): Promise<Lsn> {
  const result = await queryWithTimeout<{ lsn: string }>(
    client,
    `SELECT lsn FROM pg_catalog.pg_create_logical_replication_slot($1::name, $2::name, false, $3::boolean, false)`,
    [name, plugin, twoPhase],
    timeoutMs,
  );
  const lsn = result.rows[0]?.lsn;
  if (lsn === undefined) throw new Error(`creating replication slot "${name}" returned no row`);
  return parseLsn(lsn);
}

/** LogicalSlotAdvanceAndCheckSnapState(), over SQL. Returns where the slot ended up. */
export async function advanceCopy(
  pool: pg.Pool | pg.PoolClient,
  name: string,
  target: Lsn,
): Promise<Lsn> {
  const result = await pool.query<{ end_lsn: string }>(
    'SELECT end_lsn FROM pg_catalog.pg_replication_slot_advance($1::name, $2::pg_lsn)',
    [name, formatLsn(target)],
  );
  const lsn = result.rows[0]?.end_lsn;
  if (lsn === undefined) throw new Error(`advancing replication slot "${name}" returned no row`);
  return parseLsn(lsn);
}

export async function dropCopy(pool: pg.Pool | pg.PoolClient, name: string): Promise<void> {
  await pool.query('SELECT pg_catalog.pg_drop_replication_slot($1::name)', [name]);
}

/** One slot's current positions (after an advance, or to recheck before a drop). */
export async function readLocalSlot(
  pool: pg.Pool | pg.PoolClient,
  name: string,
): Promise<LocalSlot | null> {
  const result = await pool.query<{ s: SlotJson }>(
    'SELECT row_to_json(s) AS s FROM pg_catalog.pg_replication_slots s WHERE slot_name = $1::name',
    [name],
  );
  const row = result.rows[0];
  return row === undefined ? null : toLocalSlot(row.s);
}

/**
 * Ends creations and advances still running for a slotsync process that died mid-cycle
 * (kill -9). Called while holding the sync lock, before this cycle starts its own: any
 * such statement then belongs to a process that is gone, and a creation finishing later
 * would leave a copy nobody records.
 */
export async function terminateOrphanedStatements(pool: pg.Pool | pg.PoolClient): Promise<number> {
  const result = await pool.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid, 5000))::int AS n
       FROM pg_catalog.pg_stat_activity
      WHERE application_name = 'slotsync-standby'
        AND pid <> pg_catalog.pg_backend_pid()
        AND state = 'active'
        AND (query LIKE '%pg_create_logical_replication_slot%'
             OR query LIKE '%pg_replication_slot_advance%')
        AND query NOT LIKE '%pg_stat_activity%'`,
  );
  return result.rows[0]?.n ?? 0;
}

export interface StandbyProbe extends StandbySettings {
  inRecovery: boolean;
  replayLsn: Lsn | null;
  /** REPLICATION or superuser: needed to create, advance and drop slots. */
  canManageSlots: boolean;
}

/** Settings and privileges only, for /health (no slot list). */
export async function probeStandby(pool: pg.Pool): Promise<StandbyProbe> {
  const result = await pool.query<StandbyRow & { can_manage_slots: boolean }>(
    `SELECT true AS locked, ${SETTINGS}, NULL::json AS slots,
            (SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles
              WHERE rolname = current_user) AS can_manage_slots`,
  );
  const row = result.rows[0];
  if (row === undefined) throw new Error('the standby answered no row');
  return { ...toStandbyState(row), canManageSlots: row.can_manage_slots };
}
