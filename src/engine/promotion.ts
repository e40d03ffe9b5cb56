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
import { hasSqlState, SQLSTATE } from '../db/sqlstate.js';
import { dropCopy } from '../db/standby.js';
import type { Queryable } from '../db/standby-pools.js';
import { messageOf } from '../errors.js';
import type { Registry } from '../registry/registry.js';
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
  /** Copies that could not be re-armed, with the server's message. */
  rearmFailed: { slot: string; error: string }[];
}

/**
 * Re-arms the published copies after promotion: a copy made over SQL on a standby has
 * failover = false (PostgreSQL refuses failover there), so the subscribers' slots on the new
 * primary would not be synced to its standbys. ALTER_REPLICATION_SLOT … ( FAILOVER true ),
 * over a replication connection to each copy's database, for every sync-ready copy slotsync
 * owns. A copy a subscriber already uses (active) cannot be altered: reported, not retried.
 */
export async function rearmCopies(
  deps: { registry: Registry; logger: Logger; replicationClient: (database: string) => pg.Client },
  local: readonly LocalSlot[],
): Promise<Pick<PromotionCleanup, 'rearmed' | 'rearmFailed'>> {
  const byName = new Map(local.map((s) => [s.name, s]));
  const rearmed: string[] = [];
  const rearmFailed: PromotionCleanup['rearmFailed'] = [];
  for (const entry of deps.registry.entries.values()) {
    if (entry.state !== 'sync_ready') continue;
    const copy = byName.get(entry.name);
    if (copy === undefined || copy.failover || !isOwnedCopy(copy, entry)) continue;
    const client = deps.replicationClient(entry.database);
    try {
      await client.connect();
      // Slot names are [a-z0-9_] (checked before any copy is made): quoting is enough.
      await client.query(`ALTER_REPLICATION_SLOT "${entry.name}" ( FAILOVER true )`);
      rearmed.push(entry.name);
    } catch (error) {
      rearmFailed.push({ slot: entry.name, error: messageOf(error) });
    } finally {
      await client.end().catch(() => undefined);
    }
  }
  if (rearmed.length > 0 || rearmFailed.length > 0) {
    deps.logger.warn(
      { rearmed, failed: rearmFailed },
      'the standby was promoted: turned failover on for the sync-ready copies',
    );
  }
  return { rearmed, rearmFailed };
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
  const result = { at: new Date().toISOString(), dropped, failed, rearmed: [], rearmFailed: [] };
  if (dropped.length > 0 || failed.length > 0) {
    deps.logger.warn(
      { dropped, failed },
      'the standby was promoted: dropped the staging slots of copies that were not sync-ready',
    );
  }
  return result;
}
