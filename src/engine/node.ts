/**
 * Binds the ownership registry to the standby node it describes (DESIGN.md, "Ownership
 * registry", invariant 8). Physical replicas share the system identifier, so the old
 * primary rejoining as a standby would pass that check alone, with its own same-name
 * failover slots; the node marker, a physical slot only this node holds, tells them apart.
 */
import type { Logger } from 'pino';
import type { StandbyState } from '../db/standby.js';
import { createNodeMarker, dropCopy } from '../db/standby.js';
import type { Queryable } from '../db/standby-pools.js';
import { SlotSyncError } from '../errors.js';
import type { Registry } from '../registry/registry.js';
import { isNodeMarkerName, newNodeMarkerName } from '../sync/names.js';
import { type LocalSlot, madeSlot, type NodeBinding } from '../sync/types.js';
import type { CyclePoint } from './apply.js';

export interface NodeDeps {
  registry: Registry;
  logger: Logger;
  standbyMain: Queryable;
  /** SLOTSYNC_RESET_STATE: a state folder that does not match is moved aside, not refused. */
  resetState: boolean;
  /** Test hook: awaited between the binding's intent and its marker (crash-point tests). */
  pauseAt?: ((point: CyclePoint) => Promise<void>) | undefined;
}

const RESET_HINT =
  "Point SLOTSYNC_STATE_DIR at the folder of this standby, or set SLOTSYNC_RESET_STATE=on to move this one aside and start afresh (copies made earlier are then left as users' slots and never touched).";

function mismatch(dir: string, detail: string): SlotSyncError {
  return new SlotSyncError('SLOTSYNC_NODE_MISMATCH', `SLOTSYNC_STATE_DIR: ${dir}: ${detail}`, {
    hint: RESET_HINT,
  });
}

/**
 * Checks the binding, every cycle (cheap: the marker is in the slot list already read).
 * Binds a new registry to this standby, creating its marker, when the standby is in
 * recovery. Throws SLOTSYNC_NODE_MISMATCH, naming SLOTSYNC_STATE_DIR, when the folder
 * describes another node. Returns `local` as the standby now holds it (a marker made or
 * dropped here): a cycle that records the list it read before the binding would leave the
 * answers from memory (/slots) saying the marker is missing until its next read.
 */
export async function checkNode(
  deps: NodeDeps,
  standby: Pick<StandbyState, 'pid' | 'systemIdentifier' | 'timeline' | 'inRecovery'>,
  local: LocalSlot[],
): Promise<LocalSlot[]> {
  const { registry } = deps;
  const dir = registry.path.replace(/\/[^/]*$/, '');
  const markers = local
    .filter((s) => s.slotType === 'physical' && isNodeMarkerName(s.name))
    .map((s) => s.name);
  const node = registry.node;
  if (node?.pending) {
    // A binding whose intent was written but that a kill interrupted: complete it.
    if (node.systemIdentifier !== standby.systemIdentifier && !deps.resetState) {
      throw mismatch(
        dir,
        `the registry was being bound to a standby of another cluster (system identifier ${node.systemIdentifier}, this standby: ${standby.systemIdentifier})`,
      );
    }
    if (node.systemIdentifier === standby.systemIdentifier) {
      if (!standby.inRecovery) return local;
      await completeBinding(deps, standby, node, markers.includes(node.marker));
      return withMarker(local, node.marker);
    }
    await registry.reset();
  } else if (node !== null) {
    const problem =
      node.systemIdentifier !== standby.systemIdentifier
        ? `the registry describes a standby of another cluster (system identifier ${node.systemIdentifier}, this standby: ${standby.systemIdentifier})`
        : !markers.includes(node.marker)
          ? `the registry describes another node: its marker slot "${node.marker}" is not on this standby (the old primary rejoined as a standby, a copied data folder, or another state folder's standby)`
          : null;
    if (problem === null) {
      if (standby.timeline !== null && node.timeline !== standby.timeline) {
        deps.logger.warn(
          { from: node.timeline, to: standby.timeline },
          'the standby follows a new timeline; every copy is re-checked by the fencing rule',
        );
        await registry.write(registry.entries, { node: { ...node, timeline: standby.timeline } });
      }
      return local;
    }
    if (registry.entries.size === 0) {
      // It owns no copy: binding afresh loses nothing (the node was rebuilt from a fresh
      // copy of another, as a rejoining old primary is, or its marker was dropped).
      deps.logger.warn({ problem }, 'the state folder owns no copy: it binds to this node afresh');
      await registry.reset();
    } else {
      if (!deps.resetState) throw mismatch(dir, problem);
      deps.logger.warn({ problem }, 'SLOTSYNC_RESET_STATE=on: the state folder is moved aside');
      await registry.reset();
    }
  } else if (!registry.exists && markers.length > 0 && !deps.resetState) {
    throw mismatch(
      dir,
      `it holds no registry, but the standby holds slotsync's node marker ${markers.map((m) => `"${m}"`).join(', ')}: the registry of this standby vanished or lives in another state folder`,
    );
  }
  if (!standby.inRecovery) return local; // bound on a standby only; a promoted server is left alone
  let now = local;
  if (deps.resetState) {
    now = local.filter((s) => !markers.includes(s.name));
    for (const marker of markers) {
      await dropCopy(deps.standbyMain, standby.pid, marker);
      deps.logger.warn({ marker }, 'dropped the node marker of a state folder moved aside');
    }
  }
  // The intent first: a kill before the marker exists leaves a binding the next start
  // completes, never a marker without a registry (which would refuse every later start).
  const intent: NodeBinding = {
    marker: newNodeMarkerName(),
    systemIdentifier: standby.systemIdentifier,
    timeline: standby.timeline,
    pending: true,
  };
  await registry.write(registry.entries, { node: intent });
  await completeBinding(deps, standby, intent, false);
  return withMarker(now, intent.marker);
}

/** `local` with the node marker `name` in it (a physical slot, as the standby lists it). */
function withMarker(local: LocalSlot[], name: string): LocalSlot[] {
  if (local.some((s) => s.name === name)) return local;
  const marker = madeSlot(name, {
    slotType: 'physical',
    plugin: null,
    database: null,
    confirmedFlushLsn: null,
  });
  return [...local, marker];
}

async function completeBinding(
  deps: NodeDeps,
  standby: Pick<StandbyState, 'pid' | 'systemIdentifier' | 'timeline'>,
  intent: NodeBinding,
  markerExists: boolean,
): Promise<void> {
  await deps.pauseAt?.('binding_intent');
  if (!markerExists) await createNodeMarker(deps.standbyMain, standby.pid, intent.marker);
  await deps.pauseAt?.('binding_marker');
  const { pending: _pending, ...bound } = intent;
  await deps.registry.write(deps.registry.entries, {
    node: { ...bound, timeline: standby.timeline },
  });
  deps.logger.info(
    { marker: intent.marker, systemIdentifier: standby.systemIdentifier },
    'registry bound to this standby',
  );
}
