/**
 * Plans one sync cycle: (remote slots, local slots, registry, standby position) → actions.
 * Pure: the executor carries the actions out over SQL. Mirrors synchronize_slots() —
 * drop_local_obsolete_slots() first, then synchronize_one_slot() for every remote slot.
 */
import {
  aheadOfStandbyMessage,
  conflictMessage,
  isOwnedCopy,
  localCopyRequired,
  needsAdvance,
  obsoleteReason,
  propertiesDiffer,
  readyMessage,
  remoteAheadOfStandby,
  remoteInvalidatedMessage,
  remotePrecedesLocal,
  remotePrecedesMessage,
  remoteSlotsToSync,
  twoPhaseBlockedMessage,
  twoPhaseBlocksReady,
} from './rules.js';
import type {
  Action,
  LocalSlot,
  PlanInput,
  RegistryEntry,
  RemoteSlot,
  ReportState,
} from './types.js';

export function planCycle(input: PlanInput): Action[] {
  const remoteList = remoteSlotsToSync(input.remote);
  const remoteByName = new Map(remoteList.map((slot) => [slot.name, slot]));
  const localByName = new Map(input.local.map((slot) => [slot.name, slot]));
  const actions: Action[] = [];
  const dropped = new Set<string>();

  // drop_local_obsolete_slots(): copies we own that are no longer required.
  for (const local of input.local) {
    const entry = input.registry.get(local.name);
    if (!isOwnedCopy(local, entry)) continue;
    const remote = remoteByName.get(local.name);
    if (!localCopyRequired(local, remote)) {
      actions.push({
        kind: 'drop',
        name: local.name,
        reason: obsoleteReason(local, remote),
        remoteInvalidation: null,
      });
      dropped.add(local.name);
    }
  }

  // Registry entries whose copy is gone and whose remote slot is gone too.
  for (const entry of input.registry.values()) {
    if (localByName.has(entry.name) || remoteByName.has(entry.name)) continue;
    actions.push({
      kind: 'forget',
      name: entry.name,
      reason: 'the remote slot no longer exists or is no longer a failover slot',
    });
  }

  for (const remote of remoteList) {
    if (dropped.has(remote.name)) {
      continue; // recreated in a later cycle, as slotsync.c does
    }
    actions.push(
      ...planSlot(remote, localByName.get(remote.name), input.registry.get(remote.name), input),
    );
  }
  return actions;
}

/** synchronize_one_slot() for one remote slot. */
export function planSlot(
  remote: RemoteSlot,
  local: LocalSlot | undefined,
  entry: RegistryEntry | undefined,
  input: Pick<PlanInput, 'standbyReplayLsn' | 'oldestPreparedAt' | 'primaryNow'>,
): Action[] {
  const name = remote.name;
  const owned = local !== undefined && isOwnedCopy(local, entry);

  if (local !== undefined && !owned) {
    return [{ kind: 'conflict', name, reason: conflictMessage(name, local) }];
  }

  if (remote.invalidationReason !== null) {
    const reason = remoteInvalidatedMessage(remote);
    if (owned)
      return [{ kind: 'drop', name, reason, remoteInvalidation: remote.invalidationReason }];
    if (entry !== undefined && entry.state !== 'invalidated') {
      return [
        {
          kind: 'record_invalidation',
          name,
          reason,
          remoteInvalidation: remote.invalidationReason,
        },
      ];
    }
    return [{ kind: 'skip', name, reason, state: 'invalidated' }];
  }

  if (remoteAheadOfStandby(remote, input.standbyReplayLsn)) {
    return [
      {
        kind: 'skip',
        name,
        reason: aheadOfStandbyMessage(remote, input.standbyReplayLsn),
        state: copyState(owned ? entry : undefined),
      },
    ];
  }

  if (local === undefined || entry === undefined || !owned) {
    return [{ kind: 'create', name, reason: createReason(entry), remote }];
  }

  const changed = propertiesDiffer(remote, local);
  if (changed !== null) {
    return [
      {
        kind: 'drop',
        name,
        reason: `the remote slot's ${changed} changed; the copy is dropped and will be created again`,
        remoteInvalidation: null,
      },
    ];
  }

  if (local.active) {
    return [
      {
        kind: 'skip',
        name,
        reason: `replication slot "${name}" is active on the standby; it is not synchronized while in use`,
        state: copyState(entry),
      },
    ];
  }

  const actions: Action[] = [];
  let state = entry.state;
  if (state === 'creating') {
    // A crash came between the create call and the registry update: the copy is ours and
    // starts over as temporary (createdAt = now is later than its creation: conservative).
    actions.push({
      kind: 'adopt',
      name,
      reason: 'adopted a copy whose creation was interrupted',
      remote,
      local,
    });
    state = 'temporary';
  }

  const syncReady = state === 'sync_ready';
  if (remotePrecedesLocal(remote, local)) {
    actions.push({
      kind: 'skip',
      name,
      reason: remotePrecedesMessage(remote, local, syncReady),
      state: syncReady ? 'sync_ready' : 'temporary',
    });
    return actions;
  }

  // update_and_persist_local_synced_slot(): the remote has caught up with the copy.
  const markReady =
    !syncReady &&
    !twoPhaseBlocksReady(
      {
        ...entry,
        createdAt: actions.length > 0 ? input.primaryNow.toISOString() : entry.createdAt,
      },
      input.oldestPreparedAt,
    );
  const reason = syncReady ? null : markReady ? readyMessage(name) : twoPhaseBlockedMessage(name);

  if (needsAdvance(remote, local)) {
    actions.push({
      kind: 'advance',
      name,
      reason,
      remote,
      from: local.confirmedFlushLsn ?? 0n,
      to: remote.confirmedFlushLsn ?? 0n,
      markReady,
    });
  } else if (markReady) {
    actions.push({ kind: 'mark_ready', name, reason, remote });
  } else {
    actions.push({ kind: 'none', name, reason, state: syncReady ? 'sync_ready' : 'temporary' });
  }
  return actions;
}

function createReason(entry: RegistryEntry | undefined): string | null {
  if (entry === undefined || entry.state === 'invalidated') return null;
  if (entry.state === 'creating') return 'retrying a creation that did not finish';
  return 'the copy disappeared from the standby; it is created again';
}

function copyState(entry: RegistryEntry | undefined): ReportState {
  if (entry === undefined) return 'absent';
  if (entry.state === 'creating') return 'temporary';
  return entry.state;
}
