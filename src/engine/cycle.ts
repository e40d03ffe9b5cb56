/**
 * One sync cycle, synchronize_slots() over SQL: take the sync lock on the standby and read
 * it, read the primary, validate, plan, apply, record ownership, report.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { isConnectionError, unreachable } from '../db/errors.js';
import { readPrimary } from '../db/primary.js';
import { lockAndReadStandby, readStandby, unlockSync } from '../db/standby.js';
import type { StandbyPools } from '../db/standby-pools.js';
import { CONCURRENT_MESSAGE, messageOf, SlotSyncError } from '../errors.js';
import type { Registry } from '../registry/registry.js';
import { formatLsn } from '../sync/lsn.js';
import { planCycle } from '../sync/plan.js';
import { remoteAheadOfStandby } from '../sync/rules.js';
import type { LocalSlot, RemoteSlot, SlotReport } from '../sync/types.js';
import { validatePrimary, validateStandby } from '../sync/validate.js';
import { buildSlotViews, type SlotView } from '../sync/view.js';
import { applyActions } from './apply.js';

export interface EngineDeps {
  primary: pg.Pool;
  standby: StandbyPools;
  registry: Registry;
  logger: Logger;
  /** The configured URLs, to name the server in connection errors (never logged as is). */
  primaryUrl: string;
  standbyUrl: string;
  concurrency: number;
  createTimeoutMs: number;
  /** Called with every copy creation wait, so /health can say when snapshots are refused. */
  onSnapshotRefused?: (message: string) => void;
  /** Test hook: runs after both sides were read and before anything is applied. */
  beforeApply?: () => Promise<void>;
}

export interface CycleReport {
  ok: boolean;
  startedAt: string;
  durationMs: number;
  /** slotsync.c's some_slot_updated: drives the worker's naptime. */
  updated: boolean;
  slots: SlotReport[];
}

export interface CycleResult {
  report: CycleReport;
  views: SlotView[];
  primarySlotName: string;
  standbyReplayLsn: string | null;
  synchronizedStandbySlots: string | null;
  remote: RemoteSlot[];
  local: LocalSlot[];
  /** The primary's slot digest as this cycle read it (see readFingerprint). */
  fingerprint: string;
  /** Slots skipped because the standby has not replayed their position yet. */
  waitingForReplay: number;
}

export async function runCycle(deps: EngineDeps): Promise<CycleResult> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const client = await deps.standby.main.connect().catch((error: unknown) => {
    throw unreachable('SLOTSYNC_STANDBY_URL', deps.standbyUrl, error);
  });
  let locked = false;
  let broken: Error | undefined;
  try {
    const standby = await lockAndReadStandby(client).catch((error: unknown) => {
      throw isConnectionError(error)
        ? unreachable('SLOTSYNC_STANDBY_URL', deps.standbyUrl, error)
        : error;
    });
    locked = standby.locked;
    if (!locked) throw new SlotSyncError('SLOTSYNC_CONCURRENT', CONCURRENT_MESSAGE);
    validateStandby(standby);
    const primary = await readPrimary(deps.primary, standby.primarySlotName).catch(
      (error: unknown) => {
        throw isConnectionError(error)
          ? unreachable('SLOTSYNC_PRIMARY_URL', deps.primaryUrl, error)
          : error;
      },
    );
    validatePrimary(primary, standby);
    await deps.registry.refresh();
    const input = {
      remote: primary.slots,
      local: standby.slots,
      registry: deps.registry.entries,
      standbyReplayLsn: standby.replayLsn ?? 0n,
      oldestPreparedAt: primary.oldestPreparedAt,
      primaryNow: primary.now,
    };
    const actions = planCycle(input);
    if (deps.beforeApply) await deps.beforeApply();
    const applied = await applyActions(actions, input, {
      primary: deps.primary,
      standby: deps.standby,
      registry: deps.registry,
      logger: deps.logger,
      concurrency: deps.concurrency,
      createTimeoutMs: deps.createTimeoutMs,
      onSnapshotRefused: deps.onSnapshotRefused,
    });
    // Re-read the copies only when something moved, so an idle cycle stays two statements.
    const local = applied.updated ? (await readStandby(client)).slots : standby.slots;
    const report: CycleReport = {
      ok: true,
      startedAt,
      durationMs: Math.round((performance.now() - started) * 100) / 100,
      updated: applied.updated,
      slots: applied.reports,
    };
    return {
      report,
      views: buildSlotViews(primary.slots, local, deps.registry.entries, applied.reports),
      primarySlotName: standby.primarySlotName,
      standbyReplayLsn: formatLsn(standby.replayLsn),
      synchronizedStandbySlots: primary.synchronizedStandbySlots,
      remote: primary.slots,
      local,
      fingerprint: primary.fingerprint,
      waitingForReplay: primary.slots.filter(
        (slot) => slot.failover && remoteAheadOfStandby(slot, input.standbyReplayLsn),
      ).length,
    };
  } catch (error) {
    if (!(error instanceof SlotSyncError)) broken = error as Error;
    throw error;
  } finally {
    if (locked) {
      try {
        await unlockSync(client);
      } catch (error) {
        // Ending the session releases the lock: never leave it held by a pooled client.
        broken = new Error(`could not release the sync lock: ${messageOf(error)}`);
      }
    }
    client.release(broken ?? false);
  }
}
