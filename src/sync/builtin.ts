/**
 * SLOTSYNC_ENGINE=builtin: PostgreSQL copies the slots (its slot sync worker when the
 * standby has sync_replication_slots = on, else slotsync calls pg_sync_replication_slots()
 * on its own cadence). slotsync never creates, moves or drops a slot PostgreSQL syncs; it
 * reads what the server did, says why a slot has no usable copy, and answers "safe" with
 * the same definition as over SQL (sync/safety.ts, syncedCopyFact).
 *
 * Pure: what the standby and the primary showed comes in, the reports and the reason the
 * built-in sync is stuck go out.
 */
import { formatLsn, type Lsn } from './lsn.js';
import {
  isStaleSameName,
  remoteAheadOfStandby,
  remoteInvalidatedMessage,
  remoteSlotsToSync,
  STALE_HINT,
  staleReplacedMessage,
} from './rules.js';
import type { LocalSlot, RemoteSlot, SlotReport } from './types.js';

export type EngineKind = 'sql' | 'builtin';

/** The standby's settings the built-in slot sync needs (slotsync.c ValidateSlotSyncParams). */
export interface BuiltinSettings {
  syncReplicationSlots: boolean;
  walLevel: string;
  hotStandbyFeedback: boolean;
  primarySlotName: string;
  /** primary_conninfo is set; null when this role may not read it (pg_read_all_settings). */
  primaryConninfoSet: boolean | null;
  /** primary_conninfo names a database; null when this role may not read it. */
  conninfoDbname: boolean | null;
}

/** Why PostgreSQL's slot sync cannot run on this standby, naming the setting, else null. */
export function builtinSetupProblem(settings: BuiltinSettings): string | null {
  if (settings.walLevel !== 'logical') {
    return `PostgreSQL's slot sync needs wal_level = logical on the standby (it is ${settings.walLevel})`;
  }
  if (!settings.hotStandbyFeedback) {
    return "PostgreSQL's slot sync needs hot_standby_feedback = on on the standby";
  }
  if (settings.primarySlotName === '') {
    return "PostgreSQL's slot sync needs primary_slot_name on the standby";
  }
  if (settings.primaryConninfoSet === false) {
    return "PostgreSQL's slot sync needs primary_conninfo on the standby";
  }
  if (settings.conninfoDbname === false) {
    return "PostgreSQL's slot sync needs a dbname in the standby's primary_conninfo (it connects to a database to read the primary's slots)";
  }
  return null;
}

/** sync_replication_slots = on and no worker runs (it starts some seconds after the setting). */
export function workerProblem(
  settings: Pick<BuiltinSettings, 'syncReplicationSlots'>,
  workerRunning: boolean | null,
): string | null {
  return settings.syncReplicationSlots && workerRunning === false
    ? 'sync_replication_slots = on but no slot sync worker runs on the standby (PostgreSQL starts it some seconds after the setting, and again 10 s after it stops on an error: the standby log says which)'
    : null;
}

/**
 * primary_conninfo names a database (keyword/value or URL form), as libpq reads it: the
 * last non-empty `dbname` wins, quoted values are values (a `dbname=` inside another
 * keyword's quoted value is not one), and in a URL a `dbname` parameter overrides the path.
 */
export function conninfoHasDbname(conninfo: string): boolean {
  if (/^postgres(ql)?:\/\//i.test(conninfo)) {
    let url: URL;
    try {
      url = new URL(conninfo);
    } catch {
      return false;
    }
    const params = url.searchParams.getAll('dbname');
    if (params.length > 0) return (params.at(-1) ?? '') !== '';
    return decodeURIComponent(url.pathname.replace(/^\//, '')) !== '';
  }
  let dbname = '';
  for (const [key, value] of conninfoPairs(conninfo)) if (key === 'dbname') dbname = value;
  return dbname !== '';
}

/** The keyword = value pairs of a libpq connection string (values unquoted). */
function conninfoPairs(conninfo: string): [string, string][] {
  const pairs: [string, string][] = [];
  let i = 0;
  const n = conninfo.length;
  const space = (c: string | undefined) => c !== undefined && /\s/.test(c);
  while (i < n) {
    while (space(conninfo[i])) i++;
    if (i >= n) break;
    let key = '';
    while (i < n && conninfo[i] !== '=' && !space(conninfo[i])) key += conninfo[i++];
    while (space(conninfo[i])) i++;
    if (conninfo[i] !== '=') break; // malformed: libpq refuses it, PostgreSQL's sync too
    i++;
    while (space(conninfo[i])) i++;
    let value = '';
    if (conninfo[i] === "'") {
      i++;
      while (i < n && conninfo[i] !== "'") {
        if (conninfo[i] === '\\' && i + 1 < n) i++;
        value += conninfo[i++];
      }
      i++;
    } else {
      while (i < n && !space(conninfo[i])) {
        if (conninfo[i] === '\\' && i + 1 < n) i++;
        value += conninfo[i++];
      }
    }
    pairs.push([key, value]);
  }
  return pairs;
}

export interface BuiltinInput {
  /** The primary's slots (failover ones are synced). */
  remote: readonly RemoteSlot[];
  /** The standby's slots, read after the last sync call. */
  local: readonly LocalSlot[];
  standbyReplayLsn: Lsn;
  /** SLOTSYNC_REPLACE_STALE: a provably stale same-name slot is dropped. */
  replaceStale: boolean;
  /** The standby's pg_postmaster_start_time() (ms). */
  standbyStartedAt: number | null;
}

export interface BuiltinPlan {
  reports: SlotReport[];
  /** Same-name slots slotsync drops (SLOTSYNC_REPLACE_STALE, provably stale): then the sync resumes. */
  replace: string[];
  /**
   * Why the built-in sync stops for every slot (a same-name slot that is not synced: the
   * worker exits at it, pg_sync_replication_slots() fails), else null.
   */
  blocked: string | null;
}

export function sameNameMessage(name: string): string {
  return `same name slot "${name}" exists on the standby and is not synced: PostgreSQL's slot sync stops at it ("exiting from slot synchronization because same name slot \\"${name}\\" already exists on the standby") and syncs no other slot while it stays`;
}

/** What PostgreSQL's slot sync made of each failover slot of the primary, and why. */
export function planBuiltin(input: BuiltinInput): BuiltinPlan {
  const localByName = new Map(input.local.map((slot) => [slot.name, slot]));
  const reports: SlotReport[] = [];
  const replace: string[] = [];
  const blockers: string[] = [];
  for (const remote of remoteSlotsToSync(input.remote)) {
    const name = remote.name;
    const local = localByName.get(name);
    if (local !== undefined && !local.synced) {
      if (input.replaceStale && isStaleSameName(local, remote, input.standbyStartedAt)) {
        replace.push(name);
        reports.push({
          name,
          action: 'replaced',
          state: 'absent',
          reason: staleReplacedMessage(name).replace(
            'a fresh copy is staged next',
            "PostgreSQL's slot sync makes a fresh copy",
          ),
        });
        continue;
      }
      blockers.push(name);
      const stale =
        local.slotType === 'logical' &&
        local.failover &&
        isStaleSameName(local, remote, input.standbyStartedAt);
      reports.push({
        name,
        action: 'conflict',
        state: 'conflict',
        reason: `${sameNameMessage(name)}${stale ? `; ${STALE_HINT}` : ''}`,
      });
      continue;
    }
    if (remote.invalidationReason !== null) {
      reports.push({
        name,
        action: 'skipped',
        state: 'invalidated',
        reason: remoteInvalidatedMessage(remote),
      });
      continue;
    }
    if (local === undefined) {
      reports.push({
        name,
        action: 'skipped',
        state: 'absent',
        reason: remoteAheadOfStandby(remote, input.standbyReplayLsn)
          ? `PostgreSQL's slot sync has not made a copy of "${name}" yet: the remote slot (${formatLsn(remote.confirmedFlushLsn)}) is ahead of what the standby replayed (${formatLsn(input.standbyReplayLsn)})`
          : `PostgreSQL's slot sync has not made a copy of "${name}" yet`,
      });
      continue;
    }
    if (local.invalidationReason !== null) {
      reports.push({
        name,
        action: 'skipped',
        state: 'invalidated',
        reason: `the synced copy of "${name}" was invalidated on the standby (${local.invalidationReason}); PostgreSQL's slot sync makes it afresh`,
      });
      continue;
    }
    if (local.temporary) {
      reports.push({
        name,
        action: 'skipped',
        state: 'temporary',
        reason: waitingMessage(remote, local),
      });
      continue;
    }
    reports.push({ name, action: 'unchanged', state: 'sync_ready', reason: null });
  }
  const blocked =
    blockers.length === 0
      ? null
      : `${sameNameMessage(blockers[0] as string)}${blockers.length > 1 ? ` (also: ${blockers.slice(1).join(', ')})` : ''}; SLOTSYNC_REPLACE_STALE=on drops such a slot when it is provably the one this node held before a switchover`;
  return { reports, replace, blocked };
}

/**
 * A temporary synced slot: PostgreSQL's worker made it where the standby's WAL starts and
 * keeps it temporary until the remote slot passes it (update_and_persist_local_synced_slot).
 */
function waitingMessage(remote: RemoteSlot, local: LocalSlot): string {
  return `PostgreSQL's slot sync keeps the copy of "${remote.name}" temporary until its consumer moves past it: the remote slot is at LSN ${formatLsn(remote.confirmedFlushLsn)} (restart_lsn ${formatLsn(remote.restartLsn)}, catalog xmin ${remote.catalogXmin ?? 'none'}), the copy at ${formatLsn(local.confirmedFlushLsn)} (restart_lsn ${formatLsn(local.restartLsn)}, catalog xmin ${local.catalogXmin ?? 'none'}); a temporary copy is dropped at promotion`;
}
