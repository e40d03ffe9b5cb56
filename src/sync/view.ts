/** What GET /slots shows: every failover slot of the primary beside its copy. */
import { formatLsn, lsnDistance } from './lsn.js';
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
  local: Positions | null;
  remote: (Positions & { invalidation_reason: string | null }) | null;
  lag_bytes: number | null;
  reason: string | null;
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
    const copy = localByName.get(slot.name);
    const owned = entry !== undefined && entry.state !== 'invalidated' && copy !== undefined;
    const state: ReportState =
      report?.state === 'conflict'
        ? 'conflict'
        : owned
          ? entry.state === 'sync_ready'
            ? 'sync_ready'
            : 'temporary'
          : entry?.state === 'invalidated' || slot.invalidationReason !== null
            ? 'invalidated'
            : 'absent';
    views.push({
      name: slot.name,
      plugin: slot.plugin,
      database: slot.database,
      two_phase: slot.twoPhase,
      state,
      sync_ready: state === 'sync_ready',
      local: owned || state === 'conflict' ? positions(copy as LocalSlot) : null,
      remote: { ...positions(slot), invalidation_reason: slot.invalidationReason },
      lag_bytes:
        owned && copy !== undefined
          ? lsnDistance(copy.confirmedFlushLsn, slot.confirmedFlushLsn)
          : null,
      reason: report?.reason ?? entry?.remoteInvalidation ?? null,
    });
  }
  // Copies whose remote slot is gone but that are still recorded (e.g. a failed drop).
  for (const entry of registry.values()) {
    if (seen.has(entry.name)) continue;
    const copy = localByName.get(entry.name);
    views.push({
      name: entry.name,
      plugin: entry.plugin,
      database: entry.database,
      two_phase: entry.twoPhase,
      state:
        entry.state === 'sync_ready'
          ? 'sync_ready'
          : entry.state === 'invalidated'
            ? 'invalidated'
            : 'temporary',
      sync_ready: false,
      local: copy === undefined ? null : positions(copy),
      remote: null,
      lag_bytes: null,
      reason: reportByName.get(entry.name)?.reason ?? 'the remote slot no longer exists',
    });
  }
  return views.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
