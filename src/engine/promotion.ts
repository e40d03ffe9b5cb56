/**
 * After promotion, slotsync's staging slots must go (DESIGN.md invariant 7): in PostgreSQL
 * the not-ready copies are RS_TEMPORARY and vanish at promotion; over SQL they are
 * persistent, but under staging names no subscriber asks for. They are dropped as soon as
 * slotsync sees the standby out of recovery: by the worker's next cycle, or at the next
 * start when slotsync was dead during the promotion. Published sync-ready copies are what
 * the subscribers now use and are never dropped here.
 */

import type pg from 'pg';
import type { Logger } from 'pino';
import { cancelStatement } from '../db/cancel.js';
import { hasSqlState, SQLSTATE } from '../db/sqlstate.js';
import { dropCopy } from '../db/standby.js';
import type { Queryable } from '../db/standby-pools.js';
import { messageOf } from '../errors.js';
import type { Registry } from '../registry/registry.js';
import { formatLsn } from '../sync/lsn.js';
import { isStagingName } from '../sync/names.js';
import { isOwnedCopy } from '../sync/rules.js';
import type { LocalSlot, RegistryEntry } from '../sync/types.js';

export interface PromotionCleanup {
  at: string;
  /** Staging slots dropped (by registry entry or by the reserved prefix). */
  dropped: string[];
  /** Staging slots that could not be dropped, with the server's message. */
  failed: { slot: string; error: string }[];
  /** Published copies whose failover was turned on (SLOTSYNC_REARM). */
  rearmed: string[];
  /** Copies that could not be re-armed yet (retried), with the server's message. */
  rearmFailed: { slot: string; error: string }[];
  /** Slots under a copy's name that are not the copy slotsync left: never re-armed. */
  notRearmed: { slot: string; reason: string }[];
  /** Walsenders ended so that a copy in use could be re-armed in the gap. */
  ended: { slot: string; pid: number }[];
}

/** How long ALTER_REPLICATION_SLOT may wait for a copy to be released before it is cancelled. */
const ALTER_WAIT_MS = 5_000;

/**
 * Why a slot under a sync-ready copy's name must not be re-armed, or null: it must still be
 * the copy slotsync left. A subscriber that streams from it after the promotion moves its
 * confirmed position forward, but its restart_lsn stays at or before the position slotsync
 * gave the copy until decoding passes a running-xacts record written after the promotion;
 * a slot made again after the promotion starts at the new primary's WAL, past that position.
 */
export function rearmRefusal(entry: RegistryEntry, slot: LocalSlot): string | null {
  if (!isOwnedCopy(slot, entry)) {
    return `"${entry.name}" on the new primary is not slotsync's copy (its type, plugin or database differs)`;
  }
  if (slot.invalidationReason !== null) {
    return `the copy of "${entry.name}" was invalidated (${slot.invalidationReason})`;
  }
  const given = entry.confirmedFlushLsn;
  if (given === null || slot.restartLsn === null || slot.restartLsn > given) {
    return `"${entry.name}" on the new primary starts past the position slotsync gave its copy (restart_lsn ${formatLsn(slot.restartLsn) ?? 'unknown'}, copy left at ${formatLsn(given) ?? 'unknown'}): it was made again after the promotion, or has moved too far to tell; it is not re-armed (ALTER SUBSCRIPTION … SET (failover = true) if it is a subscriber's)`;
  }
  return null;
}

export interface RearmDeps {
  registry: Registry;
  logger: Logger;
  replicationClient: (database: string) => pg.Client;
  /** A plain session on the new primary: ends a walsender holding a copy. */
  standbyMain: Queryable;
}

/**
 * Re-arms the published copies after promotion: a copy made over SQL on a standby has
 * failover = false (PostgreSQL refuses failover there), so the subscribers' slots on the new
 * primary would not be synced to its standbys. ALTER_REPLICATION_SLOT … ( FAILOVER true ),
 * over a replication connection to each copy's database, once per copy: a copy re-armed (or
 * found not to be slotsync's any more) leaves the registry, so a later start never touches a
 * slot its owner made again. ALTER_REPLICATION_SLOT waits, with no timeout of its own, for a
 * slot in use: a walsender holding the copy is ended first, the alter runs in the gap before
 * the subscriber reconnects (it resumes from its own position, losing nothing), and the
 * alter is cancelled if the slot is not released within ALTER_WAIT_MS.
 */
export async function rearmCopies(
  deps: RearmDeps,
  local: readonly LocalSlot[],
): Promise<Pick<PromotionCleanup, 'rearmed' | 'rearmFailed' | 'notRearmed' | 'ended'>> {
  const byName = new Map(local.map((s) => [s.name, s]));
  const out: Pick<PromotionCleanup, 'rearmed' | 'rearmFailed' | 'notRearmed' | 'ended'> = {
    rearmed: [],
    rearmFailed: [],
    notRearmed: [],
    ended: [],
  };
  const entries = new Map(deps.registry.entries);
  const candidates: { entry: RegistryEntry; copy: LocalSlot }[] = [];
  for (const entry of deps.registry.entries.values()) {
    if (entry.state !== 'sync_ready') continue;
    const copy = byName.get(entry.name);
    const refusal =
      copy === undefined
        ? `the copy of "${entry.name}" is gone`
        : copy.failover
          ? null
          : rearmRefusal(entry, copy);
    if (copy?.failover === true) {
      entries.delete(entry.name); // already a failover slot: nothing to do, ever
    } else if (refusal !== null || copy === undefined) {
      entries.delete(entry.name);
      out.notRearmed.push({ slot: entry.name, reason: refusal ?? 'gone' });
    } else {
      candidates.push({ entry, copy });
    }
  }
  await Promise.all(
    candidates.map(async ({ entry, copy }) => {
      try {
        const ended = await rearmOne(deps, entry, copy);
        if (ended !== null) out.ended.push({ slot: entry.name, pid: ended });
        entries.delete(entry.name);
        out.rearmed.push(entry.name);
      } catch (error) {
        out.rearmFailed.push({ slot: entry.name, error: messageOf(error) });
      }
    }),
  );
  if (entries.size !== deps.registry.entries.size) await deps.registry.write(entries);
  out.rearmed.sort();
  if (out.rearmed.length + out.rearmFailed.length + out.notRearmed.length > 0) {
    deps.logger.warn(
      {
        rearmed: out.rearmed,
        failed: out.rearmFailed,
        notRearmed: out.notRearmed,
        ended: out.ended,
      },
      'the standby was promoted: turned failover on for the sync-ready copies',
    );
  }
  return out;
}

/** One copy: end the walsender holding it (if any), then alter. Returns the ended pid. */
async function rearmOne(
  deps: RearmDeps,
  entry: RegistryEntry,
  copy: LocalSlot,
): Promise<number | null> {
  const client = deps.replicationClient(entry.database);
  let ended: number | null = null;
  try {
    await client.connect();
    if (copy.active && copy.activePid) {
      ended = copy.activePid;
      await terminateHolder(deps.standbyMain, entry.name, copy.activePid);
    }
    // Slot names are [a-z0-9_] (checked before any copy is made): quoting is enough.
    const alter = client.query(`ALTER_REPLICATION_SLOT "${entry.name}" ( FAILOVER true )`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        void cancelStatement(client);
        reject(
          new Error(
            `replication slot "${entry.name}" stayed in use for ${ALTER_WAIT_MS} ms (a consumer holds it); retried`,
          ),
        );
      }, ALTER_WAIT_MS);
    });
    try {
      await Promise.race([alter, timeout]);
    } finally {
      clearTimeout(timer);
      alter.catch(() => undefined);
    }
    return ended;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * Ends the session holding a copy (pg_terminate_backend): the role needs the privileges of
 * the consumer's role, or pg_signal_backend (superuser for a superuser's session).
 */
async function terminateHolder(pool: Queryable, slot: string, pid: number): Promise<void> {
  try {
    await pool.query(
      `SELECT pg_catalog.pg_terminate_backend(active_pid, 5000)
         FROM pg_catalog.pg_replication_slots WHERE slot_name = $1::name AND active_pid = $2::int`,
      [slot, pid],
    );
  } catch (error) {
    throw new Error(
      `replication slot "${slot}" is in use by PID ${pid}, and slotsync may not end that session (${messageOf(error)}): GRANT pg_signal_backend to slotsync's standby role, or ALTER SUBSCRIPTION … SET (failover = true) by hand`,
    );
  }
}

export async function dropStagingSlots(
  deps: { registry: Registry; logger: Logger; standbyMain: Queryable },
  lockPid: number,
  local: readonly LocalSlot[],
): Promise<PromotionCleanup> {
  const byName = new Map(local.map((s) => [s.name, s]));
  const entries = new Map<string, RegistryEntry>(deps.registry.entries);
  const targets = new Set<string>();
  for (const entry of entries.values()) {
    const stage = byName.get(entry.stagingName);
    if (stage !== undefined && isOwnedCopy(stage, entry)) targets.add(stage.name);
    // A copy under the remote slot's name known not to be sync-ready (fenced, or made by
    // an older slotsync before it was ready) is no safer after promotion than a staging one.
    const published = byName.get(entry.name);
    if (entry.state === 'retiring' && published !== undefined && isOwnedCopy(published, entry)) {
      targets.add(entry.name);
    }
  }
  for (const slot of local) {
    if (slot.slotType === 'logical' && !slot.synced && isStagingName(slot.name))
      targets.add(slot.name);
  }
  const dropped: string[] = [];
  const failed: PromotionCleanup['failed'] = [];
  for (const slot of [...targets].sort()) {
    try {
      await dropCopy(deps.standbyMain, lockPid, slot);
      dropped.push(slot);
    } catch (error) {
      if (hasSqlState(error, SQLSTATE.undefinedObject)) dropped.push(slot);
      else failed.push({ slot, error: messageOf(error) });
    }
  }
  // The registry follows: staging entries are gone; a publication whose copy exists is
  // complete (the copy was made only once sync-ready).
  let changed = false;
  for (const entry of [...entries.values()]) {
    if (entry.state === 'sync_ready' || entry.state === 'invalidated') continue;
    const published = byName.get(entry.name);
    if (entry.state === 'publishing' && published !== undefined && isOwnedCopy(published, entry)) {
      entries.set(entry.name, {
        ...entry,
        state: 'sync_ready',
        updatedAt: new Date().toISOString(),
      });
      changed = true;
    } else if (!failed.some((f) => f.slot === entry.stagingName || f.slot === entry.name)) {
      entries.delete(entry.name);
      changed = true;
    }
  }
  if (changed) await deps.registry.write(entries);
  const result: PromotionCleanup = {
    at: new Date().toISOString(),
    dropped,
    failed,
    rearmed: [],
    rearmFailed: [],
    notRearmed: [],
    ended: [],
  };
  if (dropped.length > 0 || failed.length > 0) {
    deps.logger.warn(
      { dropped, failed },
      'the standby was promoted: dropped the staging slots of copies that were not sync-ready',
    );
  }
  return result;
}
