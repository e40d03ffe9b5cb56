/** What GET /slots shows: every failover slot of the primary beside its copy. */
import { formatLsn, lsnDistance } from './lsn.js';
import { isOwnedCopy, mayHavePublishedCopy } from './rules.js';
import type { Safety } from './safety.js';
import type { LocalSlot, RegistryEntry, RemoteSlot, ReportState, SlotReport } from './types.js';

export interface Positions {
  confirmed_flush_lsn: string | null;
  restart_lsn: string | null;
  catalog_xmin: string | null;
}

export interface SlotView {
  name: string;
  plugin: string;
  database: string;
  two_phase: boolean;
  state: ReportState;
  sync_ready: boolean;
  /** Where the copy lives while it is not sync-ready (null once published, or none). */
  staging_name: string | null;
  local: Positions | null;
  remote: (Positions & { invalidation_reason: string | null }) | null;
  lag_bytes: number | null;
  reason: string | null;
  /** Why the copy is not safe to promote onto (sync/safety.ts), null when it is. */
  ready_reason?: string | null;
}

function positions(slot: RemoteSlot | LocalSlot): Positions {
  return {
    confirmed_flush_lsn: formatLsn(slot.confirmedFlushLsn),
    restart_lsn: formatLsn(slot.restartLsn),
    catalog_xmin: slot.catalogXmin === null ? null : String(slot.catalogXmin),
  };
}

export function buildSlotViews(
  remote: readonly RemoteSlot[],
  local: readonly LocalSlot[],
  registry: ReadonlyMap<string, RegistryEntry>,
  reports: readonly SlotReport[],
): SlotView[] {
  const localByName = new Map(local.map((slot) => [slot.name, slot]));
  const reportByName = new Map(reports.map((report) => [report.name, report]));
  const views: SlotView[] = [];
  const seen = new Set<string>();
  for (const slot of remote) {
    if (!slot.failover || slot.temporary) continue;
    seen.add(slot.name);
    const entry = registry.get(slot.name);
    const report = reportByName.get(slot.name);
    const copy = currentCopy(entry, localByName);
    const state: ReportState =
      report?.state === 'conflict'
        ? 'conflict'
        : copy !== undefined && entry !== undefined
          ? readyNow(entry, copy)
            ? 'sync_ready'
            : 'temporary'
          : entry?.state === 'invalidated' || slot.invalidationReason !== null
            ? 'invalidated'
            : 'absent';
    const shown = state === 'conflict' ? localByName.get(slot.name) : copy;
    views.push({
      name: slot.name,
      plugin: slot.plugin,
      database: slot.database,
      two_phase: slot.twoPhase,
      state,
      sync_ready: state === 'sync_ready',
      staging_name: copy !== undefined && copy.name !== slot.name ? copy.name : null,
      local: shown === undefined ? null : positions(shown),
      remote: { ...positions(slot), invalidation_reason: slot.invalidationReason },
      lag_bytes:
        copy !== undefined ? lsnDistance(copy.confirmedFlushLsn, slot.confirmedFlushLsn) : null,
      reason: report?.reason ?? entry?.remoteInvalidation ?? null,
    });
  }
  // Copies whose remote slot is gone but that are still recorded (e.g. a failed drop).
  for (const entry of registry.values()) {
    if (seen.has(entry.name)) continue;
    const copy = currentCopy(entry, localByName);
    views.push({
      name: entry.name,
      plugin: entry.plugin,
      database: entry.database,
      two_phase: entry.twoPhase,
      state:
        copy !== undefined && readyNow(entry, copy)
          ? 'sync_ready'
          : entry.state === 'invalidated'
            ? 'invalidated'
            : 'temporary',
      sync_ready: false,
      staging_name: copy !== undefined && copy.name !== entry.name ? copy.name : null,
      local: copy === undefined ? null : positions(copy),
      remote: null,
      lag_bytes: null,
      reason: reportByName.get(entry.name)?.reason ?? 'the remote slot no longer exists',
    });
  }
  return views.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * The slot that holds an owned copy now: the published one once sync-ready (or being
 * published), else the staging slot.
 */
function currentCopy(
  entry: RegistryEntry | undefined,
  local: ReadonlyMap<string, LocalSlot>,
): LocalSlot | undefined {
  if (entry === undefined || entry.state === 'invalidated') return undefined;
  const published = local.get(entry.name);
  if (published !== undefined && mayHavePublishedCopy(entry) && isOwnedCopy(published, entry)) {
    return published;
  }
  const stage = local.get(entry.stagingName);
  return stage !== undefined && isOwnedCopy(stage, entry) ? stage : undefined;
}

/** Sync-ready as the standby shows it now: published, recorded ready, not invalidated. */
export function readyNow(entry: RegistryEntry, copy: LocalSlot): boolean {
  return (
    entry.state === 'sync_ready' && copy.name === entry.name && copy.invalidationReason === null
  );
}

/**
 * The views with `sync_ready` as promotion readiness says (sync/safety.ts): safe to promote
 * onto, not merely published. A slot the verdict does not name is not safe.
 */
export function withSafety(views: readonly SlotView[], safety: Safety): SlotView[] {
  const verdicts = new Map(safety.slots.map((v) => [v.name, v]));
  return views.map((view) => {
    const verdict = verdicts.get(view.name);
    return {
      ...view,
      sync_ready: verdict?.safe === true,
      ready_reason: verdict === undefined ? 'not required' : verdict.safe ? null : verdict.reason,
    };
  });
}

/**
 * GET /slots under SLOTSYNC_ENGINE=builtin: every failover slot of the primary beside the
 * slot PostgreSQL's slot sync keeps for it on the standby (or the same-name slot in its way).
 */
export function buildBuiltinViews(
  remote: readonly RemoteSlot[],
  local: readonly LocalSlot[],
  reports: readonly SlotReport[],
): SlotView[] {
  const localByName = new Map(local.map((slot) => [slot.name, slot]));
  const views: SlotView[] = [];
  for (const report of reports) {
    const slot = remote.find((r) => r.name === report.name);
    if (slot === undefined) continue;
    const copy = localByName.get(slot.name);
    views.push({
      name: slot.name,
      plugin: slot.plugin,
      database: slot.database,
      two_phase: slot.twoPhase,
      state: report.state,
      sync_ready: report.state === 'sync_ready',
      staging_name: null,
      local: copy === undefined || report.state === 'absent' ? null : positions(copy),
      remote: { ...positions(slot), invalidation_reason: slot.invalidationReason },
      lag_bytes: copy?.synced ? lsnDistance(copy.confirmedFlushLsn, slot.confirmedFlushLsn) : null,
      reason: report.reason,
    });
  }
  return views.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
