/** Builders for slot rows in unit tests. */
import { parseLsn } from '../../src/sync/lsn.js';
import { stagingNameOf } from '../../src/sync/names.js';
import type { LocalSlot, PlanInput, RegistryEntry, RemoteSlot } from '../../src/sync/types.js';

export function remote(name: string, lsn: string, extra: Partial<RemoteSlot> = {}): RemoteSlot {
  return {
    name,
    plugin: 'pgoutput',
    database: 'postgres',
    confirmedFlushLsn: parseLsn(lsn),
    restartLsn: parseLsn(lsn) - 0x10n,
    catalogXmin: 750,
    twoPhase: false,
    failover: true,
    temporary: false,
    invalidationReason: null,
    ...extra,
  };
}

export function local(name: string, lsn: string, extra: Partial<LocalSlot> = {}): LocalSlot {
  return {
    name,
    slotType: 'logical',
    plugin: 'pgoutput',
    database: 'postgres',
    temporary: false,
    active: false,
    confirmedFlushLsn: parseLsn(lsn),
    restartLsn: parseLsn(lsn) - 0x10n,
    catalogXmin: 750,
    twoPhase: false,
    synced: false,
    invalidationReason: null,
    failover: false,
    ...extra,
  };
}

export function entry(
  name: string,
  state: RegistryEntry['state'],
  extra: Partial<RegistryEntry> = {},
): RegistryEntry {
  return {
    name,
    stagingName: stagingNameOf(name),
    database: 'postgres',
    plugin: 'pgoutput',
    twoPhase: false,
    state,
    createdLsn: parseLsn('0/1000'),
    createdAt: '2026-01-01T00:00:10.000Z',
    confirmedFlushLsn: parseLsn('0/1000'),
    restartLsn: null,
    catalogXmin: null,
    remoteInvalidation: null,
    updatedAt: '2026-01-01T00:00:10.000Z',
    ...extra,
  };
}

export function input(parts: {
  remote?: RemoteSlot[];
  local?: LocalSlot[];
  registry?: RegistryEntry[];
  replay?: string;
}): PlanInput {
  return {
    remote: parts.remote ?? [],
    local: parts.local ?? [],
    registry: new Map((parts.registry ?? []).map((e) => [e.name, e])),
    standbyReplayLsn: parseLsn(parts.replay ?? 'FF/0'),
  };
}

/** The staging name of a remote slot (a copy lives there until it is sync-ready). */
export const stage = (name: string): string => stagingNameOf(name);
