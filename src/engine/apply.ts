/**
 * Carries out a plan over SQL. Errors of one slot do not stop the others; the registry and
 * the report say what actually happened (advances are not transactional).
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { primaryNow } from '../db/primary.js';
import { advanceCopy, createCopy, dropCopy, terminateOrphanedStatements } from '../db/standby.js';
import type { StandbyPools } from '../db/standby-pools.js';
import { messageOf } from '../errors.js';
import type { Registry } from '../registry/registry.js';
import { formatLsn, type Lsn } from '../sync/lsn.js';
import { planSlot } from '../sync/plan.js';
import type {
  Action,
  LocalSlot,
  PlanInput,
  RegistryEntry,
  RemoteSlot,
  SlotReport,
} from '../sync/types.js';
import { mapLimit } from '../util.js';
import { SnapshotPump } from './snapshot-pump.js';

export interface ApplyDeps {
  primary: pg.Pool;
  standby: StandbyPools;
  registry: Registry;
  logger: Logger;
  concurrency: number;
  createTimeoutMs: number;
  onSnapshotRefused: ((message: string) => void) | undefined;
  /** Creations or advances of a dead slotsync process still running on the standby. */
  orphanedStatements: number;
  /** Names a primary connection failure by its variable (SLOTSYNC_PRIMARY_URL). */
  primaryError: (error: unknown) => unknown;
}

export interface Applied {
  reports: SlotReport[];
  updated: boolean;
  /** Where copies ended up: advanced and created ones by name, and those dropped. */
  moved: Map<string, Lsn>;
  created: Map<string, Lsn>;
  dropped: Set<string>;
}

/** Positions alone are written to the registry at most this often (states at once). */
const POSITIONS_WRITE_INTERVAL_MS = 30_000;

type Kind<K extends Action['kind']> = Extract<Action, { kind: K }>;

export async function applyActions(
  actions: readonly Action[],
  input: PlanInput,
  deps: ApplyDeps,
): Promise<Applied> {
  const log = deps.logger;
  const entries = new Map(deps.registry.entries);
  const reports = new Map<string, SlotReport>();
  let updated = false;
  let dirty = false;
  let positionsDirty = false;
  const moved = new Map<string, Lsn>();
  const created = new Map<string, Lsn>();
  const dropped = new Set<string>();
  const now = () => new Date().toISOString();
  const report = (r: SlotReport) => reports.set(r.name, r);
  const ofKind = <K extends Action['kind']>(kind: K) =>
    actions.filter((a): a is Kind<K> => a.kind === kind);

  // 1. drop_local_obsolete_slots() and copies of invalidated remote slots.
  const drops = ofKind('drop');
  const dropResults = await mapLimit(drops, deps.concurrency, (a) =>
    dropCopy(deps.standby.main, a.name),
  );
  drops.forEach((action, i) => {
    const result = dropResults[i];
    const gone = result?.status === 'fulfilled' || /does not exist/.test(messageOf(result?.reason));
    if (!gone) {
      log.error({ slot: action.name, err: messageOf(result?.reason) }, 'could not drop copy');
      report({
        name: action.name,
        action: 'failed',
        state: 'temporary',
        reason: messageOf(result?.reason),
      });
      return;
    }
    log.info({ slot: action.name, reason: action.reason }, 'dropped copy');
    dropped.add(action.name);
    updated = true;
    dirty = true;
    const entry = entries.get(action.name);
    if (action.remoteInvalidation !== null && entry !== undefined) {
      entries.set(action.name, {
        ...entry,
        state: 'invalidated',
        remoteInvalidation: action.remoteInvalidation,
        updatedAt: now(),
      });
    } else {
      entries.delete(action.name);
    }
    const invalidated = action.remoteInvalidation !== null;
    report({
      name: action.name,
      action: 'dropped',
      state: invalidated ? 'invalidated' : 'absent',
      reason: action.reason,
    });
  });

  // 2. Registry-only changes.
  for (const action of ofKind('forget')) {
    entries.delete(action.name);
    dirty = true;
  }
  for (const action of ofKind('record_invalidation')) {
    const entry = entries.get(action.name);
    if (entry)
      entries.set(action.name, {
        ...entry,
        state: 'invalidated',
        remoteInvalidation: action.remoteInvalidation,
        updatedAt: now(),
      });
    dirty = true;
    report({ name: action.name, action: 'skipped', state: 'invalidated', reason: action.reason });
  }
  for (const action of ofKind('adopt')) {
    const entry = entries.get(action.name);
    if (!entry) continue;
    entries.set(action.name, {
      ...entry,
      state: 'temporary',
      createdLsn: action.local.confirmedFlushLsn,
      createdAt: input.primaryNow.toISOString(),
      updatedAt: now(),
    });
    dirty = true;
    log.warn({ slot: action.name }, action.reason ?? 'adopted copy');
  }

  // 3. Creations: the intent is durable before any slot exists, so a crash in between
  //    leaves a record (adopted or retried later), never a copy owned by nobody.
  const creates = ofKind('create');
  const followUps: Action[] = [];
  if (deps.orphanedStatements > 0) {
    const ended = await terminateOrphanedStatements(deps.standby.main);
    if (ended > 0)
      log.warn(
        { backends: ended },
        'ended statements left running by a slotsync process that died',
      );
  }
  if (creates.length > 0) {
    // A retried intent that hits "already exists" is our own interrupted creation: keep the
    // record so the next cycle adopts it, instead of leaving a copy owned by nobody.
    const wasIntent = new Set(
      creates.filter((a) => entries.get(a.name)?.state === 'creating').map((a) => a.name),
    );
    for (const action of creates) entries.set(action.name, intentEntry(action.remote, now()));
    await deps.registry.write(entries);
    dirty = false;
    const pump = new SnapshotPump(deps.primary, log, deps.onSnapshotRefused);
    pump.start();
    const lsns = await mapLimit(creates, deps.concurrency * 2, (action) =>
      createCopy(
        deps.standby.forCreation(action.remote.database, deps.createTimeoutMs),
        action.name,
        action.remote.plugin,
        action.remote.twoPhase,
      ),
    ).finally(() => pump.stop());
    // One clock read after every creation returned: later than each copy was made, which
    // is the conservative side of the two_phase rule. If it fails, the copies made stay
    // recorded as intents and the next cycle adopts them with a later clock.
    const createdAt = lsns.some((r) => r.status === 'fulfilled')
      ? await primaryNow(deps.primary).catch((error: unknown) => {
          throw deps.primaryError(error);
        })
      : new Date(0);
    const results = lsns.map((r) =>
      r.status === 'fulfilled' ? { status: r.status, value: { lsn: r.value, createdAt } } : r,
    );
    creates.forEach((action, i) => {
      const result = results[i];
      if (result?.status !== 'fulfilled') {
        const message = messageOf(result?.reason);
        if (/already exists/.test(message) && !wasIntent.has(action.name)) {
          entries.delete(action.name); // someone else's slot appeared: never ours
          report({ name: action.name, action: 'conflict', state: 'conflict', reason: message });
        } else {
          report({
            name: action.name,
            action: 'failed',
            state: 'absent',
            reason: `could not create replication slot "${action.name}": ${message}`,
          });
        }
        log.error({ slot: action.name, err: message }, 'could not create copy');
        return;
      }
      updated = true;
      dirty = true;
      const { lsn, createdAt } = result.value;
      created.set(action.name, lsn);
      const entry: RegistryEntry = {
        ...intentEntry(action.remote, now()),
        state: 'temporary',
        createdLsn: lsn,
        createdAt: createdAt.toISOString(),
        confirmedFlushLsn: lsn,
      };
      entries.set(action.name, entry);
      log.info({ slot: action.name, lsn: formatLsn(lsn) }, 'created copy');
      report({ name: action.name, action: 'created', state: 'temporary', reason: action.reason });
      // update_and_persist_local_synced_slot() right after creation, as slotsync.c does.
      const follow = planSlot(action.remote, copyOf(entry), entry, input).filter(
        (a) => a.kind === 'advance' || a.kind === 'mark_ready',
      );
      followUps.push(...follow);
    });
  }

  // 4. Advances (parallel) and sync-ready marks.
  const advances = [
    ...ofKind('advance'),
    ...followUps.filter((a): a is Kind<'advance'> => a.kind === 'advance'),
  ];
  const advanceResults = await mapLimit(advances, deps.concurrency, (a) =>
    advanceCopy(deps.standby.forDatabase(a.remote.database), a.name, a.to),
  );
  advances.forEach((action, i) => {
    const result = advanceResults[i];
    const entry = entries.get(action.name);
    if (!entry) return;
    if (result?.status !== 'fulfilled') {
      const message = messageOf(result?.reason);
      log.error({ slot: action.name, err: message }, 'could not advance copy');
      report({ name: action.name, action: 'failed', state: stateOf(entry), reason: message });
      return;
    }
    updated = true;
    const end = result.value;
    moved.set(action.name, end);
    if (action.markReady || entry.state !== 'sync_ready') dirty = true;
    else positionsDirty = true;
    const positioned = { ...entry, confirmedFlushLsn: end, updatedAt: now() };
    if (end !== action.to) {
      // slotsync.c's sanity check after LogicalSlotAdvanceAndCheckSnapState().
      entries.set(action.name, positioned);
      const reason = `synchronized confirmed_flush for slot "${action.name}" differs from remote slot: Remote slot has LSN ${formatLsn(action.to)} but local slot has LSN ${formatLsn(end)}.`;
      log.error({ slot: action.name, target: formatLsn(action.to), end: formatLsn(end) }, reason);
      report({ name: action.name, action: 'failed', state: stateOf(entry), reason });
      return;
    }
    const ready = action.markReady || entry.state === 'sync_ready';
    entries.set(action.name, {
      ...positioned,
      state: ready ? 'sync_ready' : entry.state === 'creating' ? 'temporary' : entry.state,
    });
    if (action.markReady) log.info({ slot: action.name }, action.reason ?? 'sync-ready');
    const previous = reports.get(action.name);
    report({
      name: action.name,
      action: previous?.action === 'created' ? 'created' : action.markReady ? 'ready' : 'advanced',
      state: ready ? 'sync_ready' : 'temporary',
      reason: action.reason,
    });
  });
  const marks = [
    ...ofKind('mark_ready'),
    ...followUps.filter((a): a is Kind<'mark_ready'> => a.kind === 'mark_ready'),
  ];
  for (const action of marks) {
    const entry = entries.get(action.name);
    if (!entry) continue;
    entries.set(action.name, { ...entry, state: 'sync_ready', updatedAt: now() });
    updated = true;
    dirty = true;
    log.info({ slot: action.name }, action.reason ?? 'sync-ready');
    const previous = reports.get(action.name);
    report({
      name: action.name,
      action: previous?.action === 'created' ? 'created' : 'ready',
      state: 'sync_ready',
      reason: action.reason,
    });
  }

  // 5. What was decided without touching the standby.
  for (const action of actions) {
    if (reports.has(action.name)) continue;
    if (action.kind === 'skip')
      report({ name: action.name, action: 'skipped', state: action.state, reason: action.reason });
    else if (action.kind === 'conflict')
      report({ name: action.name, action: 'conflict', state: 'conflict', reason: action.reason });
    else if (action.kind === 'none')
      report({
        name: action.name,
        action: 'unchanged',
        state: action.state,
        reason: action.reason,
      });
  }

  const positionsDue = Date.now() - deps.registry.writtenAt > POSITIONS_WRITE_INTERVAL_MS;
  if (dirty || (positionsDirty && positionsDue)) await deps.registry.write(entries);
  return { reports: [...reports.values()], updated, moved, created, dropped };
}

function intentEntry(remote: RemoteSlot, at: string): RegistryEntry {
  return {
    name: remote.name,
    database: remote.database,
    plugin: remote.plugin,
    twoPhase: remote.twoPhase,
    state: 'creating',
    createdLsn: null,
    createdAt: null,
    confirmedFlushLsn: null,
    restartLsn: null,
    catalogXmin: null,
    remoteInvalidation: null,
    updatedAt: at,
  };
}

/** The copy as it stands right after creation, for the same-cycle readiness check. */
function copyOf(entry: RegistryEntry): LocalSlot {
  return {
    name: entry.name,
    slotType: 'logical',
    plugin: entry.plugin,
    database: entry.database,
    temporary: false,
    active: false,
    confirmedFlushLsn: entry.createdLsn,
    restartLsn: null,
    catalogXmin: null,
    twoPhase: entry.twoPhase,
    synced: false,
    invalidationReason: null,
  };
}

function stateOf(entry: RegistryEntry): 'temporary' | 'sync_ready' {
  return entry.state === 'sync_ready' ? 'sync_ready' : 'temporary';
}
