/**
 * Statements of the quorum for synchronized_standby_slots (sync/quorum.ts), on the primary.
 * Coordination is by session advisory locks there, keyed (namespace, hashtext(slot)):
 * - MANAGER: held by the one slotsync that manages the setting;
 * - PRESENT: held by the slotsync beside each named standby while it is connected;
 * - PENDING: held by the manager while it waits to remove that standby;
 * - ACK: held by that standby's slotsync once it recorded that it is no longer protected.
 * pg_locks shows a two-int4 advisory key as classid = first, objid = second, objsubid = 2.
 */
import type pg from 'pg';
import { parseLsn } from '../sync/lsn.js';
import type { StandbySlotState } from '../sync/quorum.js';
import { standbySlotNames } from '../sync/safety.js';

const BASE = 0x736c6f74; // 'slot'
export const LOCK = { manager: BASE, present: BASE + 1, pending: BASE + 2, ack: BASE + 3 } as const;
type Kind = keyof typeof LOCK;

/** Whether the lock (kind, slot) is held by anyone, as SQL on $1 (the slot name). */
export function heldSql(kind: Kind, slot = '$1::text'): string {
  return `EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted
            AND classid = ${LOCK[kind]}::oid AND objsubid = 2
            AND objid = (pg_catalog.hashtext(${slot}))::oid)`;
}

/** Takes (kind, slot) for this session; true when held. The manager's key is slot ''. */
export async function tryLock(client: pg.ClientBase, kind: Kind, slot: string): Promise<boolean> {
  const { rows } = await client.query<{ ok: boolean }>(
    'SELECT pg_catalog.pg_try_advisory_lock($1::int, pg_catalog.hashtext($2::text)) AS ok',
    [LOCK[kind], slot],
  );
  return rows[0]?.ok === true;
}

export async function unlock(client: pg.ClientBase, kind: Kind, slot: string): Promise<void> {
  await client.query(
    'SELECT pg_catalog.pg_advisory_unlock($1::int, pg_catalog.hashtext($2::text))',
    [LOCK[kind], slot],
  );
}

/** Whether the manager announced the removal of `slot`. */
export async function removalPending(client: pg.ClientBase, slot: string): Promise<boolean> {
  const { rows } = await client.query<{ pending: boolean }>(
    `SELECT ${heldSql('pending')} AS pending`,
    [slot],
  );
  return rows[0]?.pending === true;
}

export interface QuorumRead {
  /** synchronized_standby_slots as set now. */
  current: string[];
  /** The furthest confirmed_flush_lsn of the failover slots. */
  consumersAt: bigint | null;
  states: StandbySlotState[];
  /** This role may ALTER SYSTEM synchronized_standby_slots and call pg_reload_conf(). */
  mayAlter: boolean;
  mayReload: boolean;
}

/** What the manager needs in one statement. */
export async function readQuorum(
  client: pg.ClientBase,
  slots: readonly string[],
): Promise<QuorumRead> {
  const { rows } = await client.query<{
    setting: string | null;
    consumers_at: string | null;
    states: [string, boolean, boolean, string | null, boolean, boolean][];
    may_alter: boolean;
    may_reload: boolean;
  }>(
    `SELECT pg_catalog.current_setting('synchronized_standby_slots', true) AS setting,
            (SELECT max(confirmed_flush_lsn)::text FROM pg_catalog.pg_replication_slots
              WHERE slot_type = 'logical' AND failover AND NOT temporary) AS consumers_at,
            (SELECT coalesce(json_agg(json_build_array(n.slot,
                       s.slot_name IS NOT NULL, coalesce(s.active, false), s.restart_lsn::text,
                       ${heldSql('present', 'n.slot')}, ${heldSql('ack', 'n.slot')})), '[]'::json)
               FROM unnest($1::text[]) AS n(slot)
               LEFT JOIN pg_catalog.pg_replication_slots s
                 ON s.slot_name = n.slot AND s.slot_type = 'physical') AS states,
            pg_catalog.has_parameter_privilege('synchronized_standby_slots', 'ALTER SYSTEM') AS may_alter,
            pg_catalog.has_function_privilege('pg_catalog.pg_reload_conf()', 'EXECUTE') AS may_reload`,
    [slots],
  );
  const row = rows[0];
  return {
    current: standbySlotNames(row?.setting ?? ''),
    consumersAt: parseLsn(row?.consumers_at ?? null),
    states: (row?.states ?? []).map(([slot, exists, active, restart, present, ack]) => ({
      slot,
      exists,
      active,
      flushedLsn: parseLsn(restart),
      present,
      acknowledged: ack,
    })),
    mayAlter: row?.may_alter === true,
    mayReload: row?.may_reload === true,
  };
}

/** ALTER SYSTEM SET synchronized_standby_slots = …, then pg_reload_conf(). */
export async function setStandbySlots(
  client: pg.ClientBase,
  slots: readonly string[],
): Promise<void> {
  // Slot names are [a-z0-9_] (checked when the configuration was read): quoting is enough.
  const value = slots.join(',');
  await client.query(`ALTER SYSTEM SET synchronized_standby_slots = '${value}'`);
  await client.query('SELECT pg_catalog.pg_reload_conf()');
}
