/**
 * Plans one sync cycle: (remote slots, local slots, registry, standby position) → actions.
 * Pure: the executor carries the actions out over SQL. Mirrors synchronize_slots() —
 * drop_local_obsolete_slots() first, then synchronize_one_slot() for every remote slot —
 * with staging (DESIGN.md): a copy lives under its staging name until it is sync-ready,
 * then it is published under the remote slot's name.
 */
import { isReservedName, isStagingName, stagingNameOf } from './names.js';
import {
  aheadOfStandbyMessage,
  conflictMessage,
  fenceReason,
  isOwnedCopy,
  isStaleSameName,
  mayHavePublishedCopy,
  needsAdvance,
  obsoleteReason,
  publishedMessage,
  remoteAheadOfStandby,
  remoteInvalidatedMessage,
  remotePrecedesLocal,
  remotePrecedesMessage,
  remoteSlotsToSync,
  reservedNameMessage,
  staleReplacedMessage,
  twoPhaseUnsupportedMessage,
  untrustedRemoteReason,
} from './rules.js';
import type {
  Action,
  LocalSlot,
  PlanInput,
  RegistryEntry,
  RemoteSlot,
  ReportState,
} from './types.js';

type Slots = ReadonlyMap<string, LocalSlot>;

export function planCycle(input: PlanInput): Action[] {
  const remoteList = remoteSlotsToSync(input.remote);
  const remoteByName = new Map(remoteList.map((slot) => [slot.name, slot]));
  const localByName: Slots = new Map(input.local.map((slot) => [slot.name, slot]));
  const actions: Action[] = [];
  const handled = new Set<string>();

  // drop_local_obsolete_slots(): copies whose remote slot is gone or no longer copied.
  for (const entry of input.registry.values()) {
    const remote = remoteByName.get(entry.name);
    if (remote !== undefined && !remote.twoPhase && !isReservedName(remote.name)) continue;
    handled.add(entry.name);
    const slots = ownedSlotsOf(entry, localByName);
    const waiting = remote === undefined ? waitingForFailover(entry, input) : null;
    if (waiting !== null && slots.length > 0) {
      actions.push(waiting);
      continue;
    }
    if (slots.length === 0) {
      actions.push({
        kind: 'forget',
        name: entry.name,
        reason: 'the remote slot no longer exists or is no longer a failover slot',
      });
      continue;
    }
    const reason = input.excluded?.has(entry.name)
      ? `dropped the copy of "${entry.name}": the slot is excluded by SLOTSYNC_SLOTS_INCLUDE/SLOTSYNC_SLOTS_EXCLUDE`
      : remote?.twoPhase === true
        ? twoPhaseUnsupportedMessage(entry.name)
        : obsoleteReason(entry.name, entry.database);
    actions.push(drop(entry.name, slots, 'forget', reason));
  }

  // Staging slots no registry entry accounts for (the prefix is reserved for slotsync).
  const stagingNames = new Set([...input.registry.values()].map((e) => e.stagingName));
  for (const local of input.local) {
    if (local.slotType !== 'logical' || local.synced || local.active) continue;
    if (!isStagingName(local.name) || stagingNames.has(local.name)) continue;
    actions.push(
      drop(
        local.name,
        [local.name],
        'keep',
        `dropped staging slot "${local.name}": no registry entry accounts for it`,
      ),
    );
  }

  for (const remote of remoteList) {
    if (handled.has(remote.name)) continue;
    const untrusted = untrustedRemoteReason(remote, input.standbyDatabases);
    if (untrusted !== null) {
      actions.push({ kind: 'skip', name: remote.name, reason: untrusted, state: 'absent' });
      continue;
    }
    if (isReservedName(remote.name)) {
      actions.push({
        kind: 'skip',
        name: remote.name,
        reason: reservedNameMessage(remote.name),
        state: 'absent',
      });
      continue;
    }
    if (remote.twoPhase) {
      actions.push({
        kind: 'skip',
        name: remote.name,
        reason: twoPhaseUnsupportedMessage(remote.name),
        state: 'absent',
      });
      continue;
    }
    actions.push(...planSlot(remote, localByName, input.registry.get(remote.name), input));
  }
  return actions;
}

/**
 * Right after a failover the new primary's slots may not carry failover = true yet (its own
 * slotsync turns it on within seconds of the promotion): a copy whose remote slot still
 * exists there with the same plugin and database is kept, never dropped for that alone, and
 * not moved (its consumers do not wait for this standby meanwhile: not safe to promote).
 */
export function waitingForFailover(
  entry: RegistryEntry,
  input: Pick<PlanInput, 'notFailover' | 'excluded'>,
): Extract<Action, { kind: 'skip' }> | null {
  const remote = input.notFailover?.get(entry.name);
  if (remote === undefined || input.excluded?.has(entry.name)) return null;
  if (remote.plugin !== entry.plugin || remote.database !== entry.database) return null;
  if (entry.state === 'invalidated') return null;
  return {
    kind: 'skip',
    name: entry.name,
    reason: waitingForFailoverMessage(entry.name),
    state: entry.state === 'sync_ready' ? 'sync_ready' : 'temporary',
  };
}

export function waitingForFailoverMessage(name: string): string {
  return `replication slot "${name}" exists on the primary but is not a failover slot (waiting for failover on the new primary): its copy is kept, not synchronized until failover is on`;
}

/** The slots on the standby that belong to `entry`: its published copy and staging slot. */
function ownedSlotsOf(entry: RegistryEntry, local: Slots): string[] {
  const out: string[] = [];
  const published = local.get(entry.name);
  if (published && mayHavePublishedCopy(entry) && isOwnedCopy(published, entry)) {
    out.push(entry.name);
  }
  const stage = local.get(entry.stagingName);
  if (stage && isOwnedCopy(stage, entry)) out.push(entry.stagingName);
  return out;
}

function drop(
  name: string,
  slots: string[],
  after: 'forget' | 'invalidate' | 'keep',
  reason: string,
  remoteInvalidation: string | null = null,
): Extract<Action, { kind: 'drop' }> {
  return { kind: 'drop', name, slots, after, remoteInvalidation, quiet: false, reason };
}

/** synchronize_one_slot() for one remote slot. */
export function planSlot(
  remote: RemoteSlot,
  local: Slots,
  entry: RegistryEntry | undefined,
  input: Pick<PlanInput, 'standbyReplayLsn' | 'replaceStale' | 'standbyStartedAt'>,
): Action[] {
  const name = remote.name;
  const stagingName = entry?.stagingName ?? stagingNameOf(name);
  const underName = local.get(name);
  const published =
    underName !== undefined && mayHavePublishedCopy(entry) && isOwnedCopy(underName, entry)
      ? underName
      : undefined;
  const stageSlot = local.get(stagingName);
  const stage =
    stageSlot !== undefined && entry !== undefined && isOwnedCopy(stageSlot, entry)
      ? stageSlot
      : undefined;

  // Same name on the standby and not ours: never touched (reported, the rest goes on).
  if (underName !== undefined && published === undefined) {
    if (input.replaceStale && isStaleSameName(underName, remote, input.standbyStartedAt)) {
      return [{ ...drop(name, [name], 'keep', staleReplacedMessage(name)), replaced: true }];
    }
    return [
      {
        kind: 'conflict',
        name,
        reason: conflictMessage(name, underName, remote, input.standbyStartedAt),
      },
    ];
  }

  if (remote.invalidationReason !== null) {
    const reason = remoteInvalidatedMessage(remote);
    const slots = [published?.name, stage?.name].filter((s): s is string => s !== undefined);
    if (slots.length > 0)
      return [drop(name, slots, 'invalidate', reason, remote.invalidationReason)];
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

  // A copy that must not stay under the remote slot's name (fenced earlier, or made
  // not-ready by an older slotsync): dropped with its staging slot, staged afresh later.
  if (entry?.state === 'retiring') {
    const slots = [published?.name, stage?.name].filter((s): s is string => s !== undefined);
    if (slots.length === 0) return [{ kind: 'forget', name, reason: 'retired copy is gone' }];
    return [
      drop(
        name,
        slots,
        'forget',
        `the copy of "${name}" is not sync-ready; it is dropped and will be staged afresh`,
      ),
    ];
  }

  if (remoteAheadOfStandby(remote, input.standbyReplayLsn)) {
    return [
      {
        kind: 'skip',
        name,
        reason: aheadOfStandbyMessage(remote, input.standbyReplayLsn),
        state: reportState(entry, published !== undefined),
      },
    ];
  }

  if (published !== undefined && entry !== undefined) {
    return planPublished(remote, published, stage, entry);
  }

  if (entry === undefined || entry.state === 'invalidated' || stage === undefined) {
    return [{ kind: 'create', name, stagingName, reason: createReason(entry), remote }];
  }

  return planStaging(remote, stage, entry);
}

/** A copy published under the remote slot's name: fence it, then keep it in step. */
function planPublished(
  remote: RemoteSlot,
  published: LocalSlot,
  stage: LocalSlot | undefined,
  entry: RegistryEntry,
): Action[] {
  const name = remote.name;
  const actions: Action[] = [];
  const fenced = fenceReason(published, entry, remote, true);
  if (fenced !== null) {
    const slots = [name, ...(stage ? [stage.name] : [])];
    return [drop(name, slots, 'forget', fenced)];
  }
  if (entry.state === 'publishing') {
    // The publication's copy exists: finish it (a crash came between its steps).
    actions.push({
      kind: 'finish_publish',
      name,
      stagingName: entry.stagingName,
      dropStaging: stage !== undefined,
      reason: publishedMessage(name, entry.stagingName),
    });
  } else if (stage !== undefined) {
    actions.push({
      ...drop(name, [stage.name], 'keep', `dropped leftover staging slot "${stage.name}"`),
      quiet: true,
    });
  }
  if (published.active) {
    actions.push({
      kind: 'skip',
      name,
      reason: `replication slot "${name}" is active on the standby; it is not synchronized while in use`,
      state: 'sync_ready',
    });
    return actions;
  }
  if (needsAdvance(remote, published)) {
    actions.push({
      kind: 'advance',
      name,
      slot: name,
      reason: entry.state === 'publishing' ? publishedMessage(name, entry.stagingName) : null,
      remote,
      from: published.confirmedFlushLsn ?? 0n,
      to: remote.confirmedFlushLsn ?? 0n,
      publish: false,
    });
  } else if (entry.state !== 'publishing') {
    actions.push({ kind: 'none', name, reason: null, state: 'sync_ready' });
  }
  return actions;
}

/** A copy under its staging name: advance it, publish it once the remote caught up. */
function planStaging(remote: RemoteSlot, stage: LocalSlot, entry: RegistryEntry): Action[] {
  const name = remote.name;
  const actions: Action[] = [];
  if (entry.state === 'creating') {
    // A crash came between the create call and the registry update: the slot is ours.
    actions.push({
      kind: 'adopt',
      name,
      reason: 'adopted a copy whose creation was interrupted',
      stage,
    });
  } else if (entry.state === 'publishing') {
    // The publication did not happen: staging again until the next readiness check.
    actions.push({ kind: 'restage', name, reason: null });
  }
  const fenced = fenceReason(stage, entry, remote, false);
  if (fenced !== null) {
    actions.push(drop(name, [stage.name], 'forget', fenced));
    return actions;
  }
  if (stage.active) {
    actions.push({
      kind: 'skip',
      name,
      reason: `staging slot "${stage.name}" of "${name}" is active on the standby; it is not synchronized while in use`,
      state: 'temporary',
    });
    return actions;
  }
  if (remotePrecedesLocal(remote, stage)) {
    actions.push({
      kind: 'skip',
      name,
      reason: remotePrecedesMessage(remote, stage, false),
      state: 'temporary',
    });
    return actions;
  }
  // update_and_persist_local_synced_slot(): the remote has caught up with the copy, so
  // it is sync-ready at the remote's position: publish it there.
  if (needsAdvance(remote, stage)) {
    actions.push({
      kind: 'advance',
      name,
      slot: stage.name,
      reason: publishedMessage(name, entry.stagingName),
      remote,
      from: stage.confirmedFlushLsn ?? 0n,
      to: remote.confirmedFlushLsn ?? 0n,
      publish: true,
    });
  } else {
    actions.push({
      kind: 'publish',
      name,
      stagingName: entry.stagingName,
      remote,
      reason: publishedMessage(name, entry.stagingName),
    });
  }
  return actions;
}

function createReason(entry: RegistryEntry | undefined): string | null {
  if (entry === undefined || entry.state === 'invalidated') return null;
  if (entry.state === 'creating') return 'retrying a creation that did not finish';
  return 'the copy disappeared from the standby; it is staged again';
}

function reportState(entry: RegistryEntry | undefined, published: boolean): ReportState {
  if (entry === undefined) return 'absent';
  if (entry.state === 'invalidated') return 'invalidated';
  if (published && entry.state === 'sync_ready') return 'sync_ready';
  return 'temporary';
}
