/**
 * Fencing from the standby alone (DESIGN.md invariant 8, "Safe to promote" fact 2): a
 * published copy that someone else moved, or that the standby invalidated, is dropped
 * before anything else a cycle does — before the primary is read, so that a primary that is
 * gone never leaves such a copy under a subscriber's name for a promotion to hand over.
 * A fenced copy is recorded `retiring` first (durable: never called sync-ready again, even
 * if the drop fails or the process dies), then dropped and forgotten; a later cycle that
 * reaches the primary stages it afresh.
 */
import type { Logger } from 'pino';
import { hasSqlState, SQLSTATE } from '../db/sqlstate.js';
import { dropCopy } from '../db/standby.js';
import type { Queryable } from '../db/standby-pools.js';
import { messageOf } from '../errors.js';
import type { Registry } from '../registry/registry.js';
import { isOwnedCopy } from '../sync/rules.js';
import { movedReason } from '../sync/safety.js';
import type { LocalSlot, RegistryEntry } from '../sync/types.js';

export interface FenceDeps {
  registry: Registry;
  logger: Logger;
  standbyMain: Queryable;
}

export interface Fenced {
  /** Copies dropped, with why. */
  dropped: { name: string; reason: string }[];
  /** Copies that must go but could not be dropped (in use): they stay `retiring`. */
  failed: { name: string; reason: string; error: string }[];
}

/**
 * Why a copy must be fenced now, or null: a published (or retiring) copy of ours that was
 * moved past the position slotsync recorded or invalidated on the standby. A copy that is
 * gone needs no drop; one merely in use is not moved yet (readiness says it is not safe).
 */
export function fenceNeeded(entry: RegistryEntry, slot: LocalSlot | undefined): string | null {
  if (slot === undefined || !isOwnedCopy(slot, entry)) return null;
  if (entry.state === 'retiring') {
    return `the copy of "${entry.name}" is not sync-ready; it is dropped and will be staged afresh`;
  }
  if (entry.state !== 'sync_ready') return null;
  const reason = movedReason(entry.name, entry, slot);
  if (reason === null) return null;
  return slot.invalidationReason !== null || reason.includes('moved on the standby')
    ? `${reason}; it is not sync-ready, it is dropped and staged afresh`
    : null;
}

/** Drops every copy that fenceNeeded() names, under the sync lock held by `lockPid`. */
export async function fenceCopies(
  deps: FenceDeps,
  lockPid: number,
  local: readonly LocalSlot[],
): Promise<Fenced> {
  const byName = new Map(local.map((slot) => [slot.name, slot]));
  const targets: { name: string; reason: string }[] = [];
  for (const entry of deps.registry.entries.values()) {
    const reason = fenceNeeded(entry, byName.get(entry.name));
    if (reason !== null) targets.push({ name: entry.name, reason });
  }
  const result: Fenced = { dropped: [], failed: [] };
  if (targets.length === 0) return result;
  const entries = new Map(deps.registry.entries);
  const now = new Date().toISOString();
  for (const { name } of targets) {
    const entry = entries.get(name);
    if (entry && entry.state !== 'retiring')
      entries.set(name, { ...entry, state: 'retiring', updatedAt: now });
  }
  await deps.registry.write(entries);
  for (const target of targets) {
    try {
      await dropCopy(deps.standbyMain, lockPid, target.name);
      entries.delete(target.name);
      result.dropped.push(target);
    } catch (error) {
      if (hasSqlState(error, SQLSTATE.undefinedObject)) {
        entries.delete(target.name);
        result.dropped.push(target);
      } else {
        result.failed.push({ ...target, error: messageOf(error) });
      }
    }
  }
  if (result.dropped.length > 0) await deps.registry.write(entries);
  for (const { name, reason } of result.dropped) {
    deps.logger.warn({ slot: name, reason }, 'fenced copy dropped');
  }
  for (const { name, error } of result.failed) {
    deps.logger.error(
      { slot: name, err: error },
      'could not drop a fenced copy; it stays not sync-ready',
    );
  }
  return result;
}
