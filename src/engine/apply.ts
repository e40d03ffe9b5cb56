/**
 * Carries out a plan over SQL, one function per step. Errors of one slot do not stop the
 * others; the registry and the report say what actually happened (advances are not
 * transactional). Every change to a slot is recorded in the registry before it is made
 * (write-ahead), so a kill -9 between any two steps leaves a record the next cycle
 * recovers from, never a copy owned by nobody, and never a not-ready copy under a remote
 * slot's name. Every statement that changes a slot runs only while the lock session still
 * holds the sync lock (standby.ts, HOLDS_LOCK, checked once per statement: a batch of
 * advances checks it before its first copy); a cycle that lost it stops at once.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { isConnectionError } from '../db/errors.js';
import { hasSqlState, SQLSTATE } from '../db/sqlstate.js';
import {
  advanceCopies,
  advanceCopy,
  createCopy,
  dropCopy,
  lockLostError,
  publishCopy,
  terminateOrphanedStatements,
} from '../db/standby.js';
import type { StandbyPools } from '../db/standby-pools.js';
import { messageOf, type SlotSyncError } from '../errors.js';
import type { Registry } from '../registry/registry.js';
import { formatLsn, type Lsn } from '../sync/lsn.js';
import { planSlot } from '../sync/plan.js';
import {
  type Action,
  type LocalSlot,
  madeSlot,
  type PlanInput,
  type RegistryEntry,
  type RemoteSlot,
  type ReportAction,
  type ReportState,
  type SlotReport,
} from '../sync/types.js';
import { mapLimit } from '../util.js';
import { type AdvancePacer, MIN_STEP_BYTES, windowOf } from './pacer.js';
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
  /** The lock session's backend, and whether that session is still alive. */
  lock: { pid: number; held: () => boolean };
  /** The primary's clock as this cycle read it (recorded with each new copy). */
  primaryNow: Date;
  /** Test hook, awaited at each step boundary (EngineDeps.pauseAt). */
  pauseAt: ((point: CyclePoint) => Promise<void>) | undefined;
  /** Sizes each advance to fit within the statement timeout (engine/pacer.ts). */
  pacer: AdvancePacer;
}

/**
 * The boundaries between a cycle's steps: after the reads (`before_apply`), and after each
 * registry write or batch of statements below. A process killed at any of them must leave
 * the registry and the standby so that the next start recovers (crash-points.test.ts).
 */
export type CyclePoint =
  | 'binding_intent'
  | 'binding_marker'
  | 'before_apply'
  | 'dropped'
  | 'creation_intent'
  | 'created'
  | 'advance_target'
  | 'advanced'
  | 'publication_intent'
  | 'published'
  | 'staging_dropped';

/** What a cycle changed on the standby, for the cycle to patch its view of the copies. */
export interface Applied {
  reports: SlotReport[];
  updated: boolean;
  /** Where moved slots ended up, by slot name (staging or published). */
  moved: Map<string, Lsn>;
  /** Staging slots made, by staging name. */
  created: Map<string, { remote: RemoteSlot; lsn: Lsn }>;
  /** Copies published, by remote slot name, from the staging slot named. */
  published: Map<string, string>;
  /** Slot names dropped. */
  dropped: Set<string>;
  /** Copies whose advance stopped short of the remote, to fit within the statement timeout. */
  catchingUp: number;
}

type Kind<K extends Action['kind']> = Extract<Action, { kind: K }>;

/** The cycle's working state: registry entries as they will be written, and reports. */
export class Book {
  readonly entries: Map<string, RegistryEntry>;
  readonly reports = new Map<string, SlotReport>();
  readonly moved = new Map<string, Lsn>();
  readonly created = new Map<string, { remote: RemoteSlot; lsn: Lsn }>();
  readonly published = new Map<string, string>();
  readonly dropped = new Set<string>();
  updated = false;
  catchingUp = 0;
  /** Entries changed since the registry was last written. */
  dirty = false;

  constructor(
    entries: ReadonlyMap<string, RegistryEntry>,
    private readonly registry: Registry,
    private readonly lock: ApplyDeps['lock'],
  ) {
    this.entries = new Map(entries);
  }

  set(name: string, change: Partial<RegistryEntry>): RegistryEntry | undefined {
    const entry = this.entries.get(name);
    if (entry === undefined) return undefined;
    const next = { ...entry, ...change, updatedAt: new Date().toISOString() };
    this.entries.set(name, next);
    this.dirty = true;
    return next;
  }

  forget(name: string): void {
    if (this.entries.delete(name)) this.dirty = true;
  }

  /**
   * Records a slot's outcome. A copy created in this cycle stays reported as `created`
   * whatever else happened to it in the same cycle (its first advance, its publication).
   */
  report(name: string, action: ReportAction, state: ReportState, reason: string | null): void {
    const previous = this.reports.get(name)?.action;
    const kept = previous === 'created' && action !== 'failed' ? 'created' : action;
    this.reports.set(name, { name, action: kept, state, reason });
  }

  /** The lock is still ours: checked before every step that changes something. */
  assertLocked(): void {
    if (!this.lock.held()) throw lockLostError();
  }

  /** Durable before the changes it announces are made. */
  async persist(): Promise<void> {
    if (!this.dirty) return;
    this.assertLocked();
    await this.registry.write(this.entries);
    this.dirty = false;
  }
}

export async function applyActions(
  actions: readonly Action[],
  input: PlanInput,
  deps: ApplyDeps,
): Promise<Applied> {
  const book = new Book(deps.registry.entries, deps.registry, deps.lock);
  const ofKind = <K extends Action['kind']>(kind: K) =>
    actions.filter((a): a is Kind<K> => a.kind === kind);

  book.assertLocked();
  await applyDrops(ofKind('drop'), book, deps);
  applyRegistryChanges(actions, book, deps);
  await endOrphanedStatements(book, deps);
  const followUps = await applyCreations(ofKind('create'), book, deps, input);
  const ready = await applyAdvances(
    [...ofKind('advance'), ...followUps.filter((a): a is Kind<'advance'> => a.kind === 'advance')],
    book,
    deps,
    input.local,
  );
  await applyPublications(
    [
      ...ofKind('publish'),
      ...followUps.filter((a): a is Kind<'publish'> => a.kind === 'publish'),
      ...ready,
    ],
    book,
    deps,
  );
  await applyFinishedPublications(ofKind('finish_publish'), book, deps);
  reportUntouched(actions, book);
  await book.persist();
  const { updated, moved, created, published, dropped, catchingUp } = book;
  return {
    reports: [...book.reports.values()],
    updated,
    moved,
    created,
    published,
    dropped,
    catchingUp,
  };
}

/** Whether a failed statement failed because the lock was lost: the cycle stops. */
function isStopping(error: unknown): boolean {
  return (error as SlotSyncError | undefined)?.code === 'SLOTSYNC_STOPPING';
}

function isLockLost(error: unknown): boolean {
  return (error as SlotSyncError | undefined)?.code === 'SLOTSYNC_LOCK_LOST';
}

function throwIfLockLost(results: readonly PromiseSettledResult<unknown>[]): void {
  for (const r of results) {
    if (r.status === 'rejected' && isLockLost(r.reason)) throw r.reason;
  }
}

/** Drops the named slots in order; a slot already gone counts as dropped. */
async function dropSlots(deps: ApplyDeps, slots: readonly string[]): Promise<void> {
  for (const slot of slots) {
    try {
      await dropCopy(deps.standby.main, deps.lock.pid, slot);
    } catch (error) {
      if (!hasSqlState(error, SQLSTATE.undefinedObject)) throw error;
    }
  }
}

/**
 * 1. drop_local_obsolete_slots(), copies of invalidated remote slots, fenced copies,
 *    leftover and orphaned staging slots.
 */
async function applyDrops(drops: Kind<'drop'>[], book: Book, deps: ApplyDeps): Promise<void> {
  if (drops.length === 0) return;
  const results = await mapLimit(drops, deps.concurrency, (a) => dropSlots(deps, a.slots));
  throwIfLockLost(results);
  await deps.pauseAt?.('dropped');
  drops.forEach((action, i) => {
    const result = results[i];
    if (result?.status !== 'fulfilled') {
      const message = messageOf(result?.reason);
      deps.logger.error(
        { slot: action.name, slots: action.slots, err: message },
        'could not drop copy',
      );
      // A copy under the remote slot's name that should be gone is never sync-ready.
      if (action.after === 'forget' && action.slots.includes(action.name)) {
        book.set(action.name, { state: 'retiring' });
      }
      if (!action.quiet) book.report(action.name, 'failed', 'temporary', message);
      return;
    }
    for (const slot of action.slots) book.dropped.add(slot);
    book.updated = true;
    deps.logger.info(
      { slot: action.name, dropped: action.slots, reason: action.reason },
      'dropped copy',
    );
    if (action.after === 'forget') book.forget(action.name);
    if (action.after === 'invalidate') {
      book.set(action.name, {
        state: 'invalidated',
        remoteInvalidation: action.remoteInvalidation,
      });
    }
    if (!action.quiet) {
      const state = action.after === 'invalidate' ? 'invalidated' : 'absent';
      book.report(action.name, action.replaced ? 'replaced' : 'dropped', state, action.reason);
    }
  });
}

/** 2. Changes of the registry alone. */
function applyRegistryChanges(actions: readonly Action[], book: Book, deps: ApplyDeps): void {
  for (const action of actions) {
    if (action.kind === 'forget') book.forget(action.name);
    else if (action.kind === 'restage') book.set(action.name, { state: 'staging' });
    else if (action.kind === 'record_invalidation') {
      book.set(action.name, {
        state: 'invalidated',
        remoteInvalidation: action.remoteInvalidation,
      });
      book.report(action.name, 'skipped', 'invalidated', action.reason);
    } else if (action.kind === 'adopt') {
      book.set(action.name, {
        state: 'staging',
        createdLsn: action.stage.confirmedFlushLsn,
        confirmedFlushLsn: action.stage.confirmedFlushLsn,
        createdAt: deps.primaryNow.toISOString(),
      });
      deps.logger.warn(
        { slot: action.name, staging: action.stage.name },
        action.reason ?? 'adopted copy',
      );
    }
  }
}

/**
 * Ends creations and advances a dead slotsync process left running: a creation finishing
 * later would leave a slot this cycle did not see.
 */
async function endOrphanedStatements(book: Book, deps: ApplyDeps): Promise<void> {
  if (deps.orphanedStatements === 0) return;
  book.assertLocked();
  const ended = await terminateOrphanedStatements(deps.standby.main);
  if (ended > 0) {
    deps.logger.warn(
      { backends: ended },
      'ended statements left running by a slotsync process that died',
    );
  }
}

/** A fresh registry entry: the write-ahead intent of a copy. */
export function intentEntry(remote: RemoteSlot, stagingName: string, at: string): RegistryEntry {
  return {
    name: remote.name,
    stagingName,
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

/** A copy as it stands right after an action of this cycle, without reading it again. */
export function copySlot(
  name: string,
  entry: Pick<RegistryEntry, 'plugin' | 'database' | 'twoPhase'>,
  confirmedFlushLsn: Lsn | null,
): LocalSlot {
  return madeSlot(name, {
    slotType: 'logical',
    plugin: entry.plugin,
    database: entry.database,
    confirmedFlushLsn,
  });
}

/**
 * 3. Creations, under staging names. The intents are durable before any slot exists.
 *    Returns what update_and_persist_local_synced_slot() does right after a creation.
 */
async function applyCreations(
  creates: Kind<'create'>[],
  book: Book,
  deps: ApplyDeps,
  input: PlanInput,
): Promise<Action[]> {
  if (creates.length === 0) return [];
  const log = deps.logger;
  // A retried intent that hits "already exists" is our own interrupted creation: keep the
  // record so the next cycle adopts it, instead of leaving a copy owned by nobody.
  const wasIntent = new Set(
    creates.filter((a) => book.entries.get(a.name)?.state === 'creating').map((a) => a.name),
  );
  const now = new Date().toISOString();
  for (const action of creates) {
    book.entries.set(action.name, intentEntry(action.remote, action.stagingName, now));
  }
  book.dirty = true;
  await book.persist();
  await deps.pauseAt?.('creation_intent');
  const pump = new SnapshotPump(deps.primary, log, deps.onSnapshotRefused);
  pump.start();
  const results = await mapLimit(creates, deps.concurrency * 2, (action) =>
    createCopy(
      deps.standby.forCreation(action.remote.database, deps.createTimeoutMs),
      deps.lock.pid,
      action.stagingName,
      action.remote.plugin,
      action.remote.twoPhase,
    ),
  ).finally(() => pump.stop());
  throwIfLockLost(results);
  await deps.pauseAt?.('created');

  const followUps: Action[] = [];
  creates.forEach((action, i) => {
    const result = results[i];
    if (result?.status !== 'fulfilled') {
      const message = messageOf(result?.reason);
      if (hasSqlState(result?.reason, SQLSTATE.duplicateObject) && !wasIntent.has(action.name)) {
        book.forget(action.name); // someone else's slot under our staging name: never ours
        book.report(action.name, 'conflict', 'conflict', message);
      } else {
        const reason = `could not create replication slot "${action.stagingName}" for "${action.name}": ${message}`;
        book.report(action.name, 'failed', 'absent', reason);
      }
      log.error(
        { slot: action.name, staging: action.stagingName, err: message },
        'could not create copy',
      );
      return;
    }
    const lsn = result.value;
    book.updated = true;
    book.created.set(action.stagingName, { remote: action.remote, lsn });
    const entry = book.set(action.name, {
      state: 'staging',
      createdLsn: lsn,
      createdAt: deps.primaryNow.toISOString(),
      confirmedFlushLsn: lsn,
    });
    log.info(
      { slot: action.name, staging: action.stagingName, lsn: formatLsn(lsn) },
      'created copy',
    );
    book.report(action.name, 'created', 'temporary', action.reason);
    if (entry === undefined) return;
    // update_and_persist_local_synced_slot() right after creation, as slotsync.c does.
    const local = new Map([[action.stagingName, copySlot(action.stagingName, entry, lsn)]]);
    followUps.push(
      ...planSlot(action.remote, local, entry, input).filter(
        (a) => a.kind === 'advance' || a.kind === 'publish',
      ),
    );
  });
  await book.persist();
  return followUps;
}

/**
 * Copies advanced per statement at most: on a primary that writes all the time every copy
 * moves every cycle, and a statement per copy cost ~1.7 ms of standby CPU each beyond the
 * decoding (bench --load). Batches of one database run in parallel up to the concurrency.
 */
const ADVANCE_BATCH = 16;

/** An advance as carried out this cycle: its step target and the WAL it decodes. */
type Step = Kind<'advance'> & {
  /** The remote's position: `to` falls short of it while the copy catches up. */
  final: Lsn;
  /** WAL the advance decodes (from the copy's restart_lsn to `to`). */
  decode: number;
  /** The window behind the copy alone exceeds what a statement may decode. */
  stuck: boolean;
};

/**
 * The advances as statements of up to ADVANCE_BATCH copies of one database; a step that
 * decodes much (a copy catching up) is a statement of its own, so that each statement fits
 * the budget the pacer gave it. A batch that fails is retried copy by copy, so one copy's
 * error stays its own (a copy the batch already moved is at its target, which an advance
 * leaves as it is). Every statement teaches the pacer how fast this standby decodes.
 */
async function advanceInBatches(
  advances: Step[],
  deps: ApplyDeps,
): Promise<PromiseSettledResult<Lsn>[]> {
  const batches: number[][] = [];
  const byDatabase = new Map<string, number[]>();
  advances.forEach((a, i) => {
    if (a.decode > MIN_STEP_BYTES) {
      batches.push([i]);
      return;
    }
    const list = byDatabase.get(a.remote.database) ?? [];
    list.push(i);
    byDatabase.set(a.remote.database, list);
  });
  for (const indexes of byDatabase.values()) {
    // Balanced chunks of at most ADVANCE_BATCH: one statement_timeout and one lock check
    // cover a bounded amount of work.
    const count = Math.ceil(indexes.length / ADVANCE_BATCH);
    const size = Math.ceil(indexes.length / count);
    for (let at = 0; at < indexes.length; at += size) batches.push(indexes.slice(at, at + size));
  }
  const results: PromiseSettledResult<Lsn>[] = new Array(advances.length);
  const timed = async <T>(decode: number, run: () => Promise<T>): Promise<T> => {
    const started = performance.now();
    try {
      const value = await run();
      deps.pacer.observe(decode, performance.now() - started);
      return value;
    } catch (error) {
      if (hasSqlState(error, SQLSTATE.queryCanceled)) deps.pacer.timedOut();
      throw error;
    }
  };
  const one = (i: number) => {
    const a = advances[i] as Step;
    return timed(a.decode, () =>
      advanceCopy(deps.standby.forDatabase(a.remote.database), deps.lock.pid, a.slot, a.to),
    );
  };
  await mapLimit(batches, deps.concurrency, async (batch) => {
    const first = advances[batch[0] as number] as Step;
    const decode = batch.reduce((sum, i) => sum + (advances[i]?.decode ?? 0), 0);
    try {
      const ends = await timed(decode, () =>
        advanceCopies(
          deps.standby.forDatabase(first.remote.database),
          deps.lock.pid,
          batch.map((i) => ({ name: advances[i]?.slot as string, to: advances[i]?.to as Lsn })),
        ),
      );
      batch.forEach((i, k) => {
        results[i] = { status: 'fulfilled', value: ends[k] as Lsn };
      });
    } catch (error) {
      // One by one only when the batch itself may be at fault: not when the lock is gone,
      // the process is stopping, or the standby cannot be reached.
      if (
        batch.length === 1 ||
        isLockLost(error) ||
        isStopping(error) ||
        isConnectionError(error)
      ) {
        for (const i of batch) results[i] = { status: 'rejected', reason: error };
        return;
      }
      const each = await mapLimit(batch, 1, one);
      batch.forEach((i, k) => {
        results[i] = each[k] as PromiseSettledResult<Lsn>;
      });
    }
  });
  return results;
}

/**
 * 4. Advances, in parallel, each bounded by the pacer. Each target is recorded before the
 *    move (fencing compares a copy with it). Returns the publications of staging copies
 *    that reached the remote's position.
 */
async function applyAdvances(
  advances: Kind<'advance'>[],
  book: Book,
  deps: ApplyDeps,
  local: readonly LocalSlot[],
): Promise<Kind<'publish'>[]> {
  if (advances.length === 0) return [];
  const restartOf = new Map(local.map((slot) => [slot.name, slot.restartLsn]));
  const steps: Step[] = advances.map((action) => {
    const restart = restartOf.get(action.slot) ?? null;
    const to = deps.pacer.step(action.from, restart, action.to);
    const decode = windowOf(action.from, restart) + Number(to - action.from);
    const stuck = deps.pacer.windowTooLarge(action.from, restart);
    return { ...action, to, final: action.to, decode, stuck };
  });
  for (const step of steps) {
    const recorded = book.entries.get(step.name)?.confirmedFlushLsn ?? null;
    if (recorded === null || step.to > recorded) {
      book.set(step.name, { confirmedFlushLsn: step.to });
    }
  }
  await book.persist();
  await deps.pauseAt?.('advance_target');
  const results = await advanceInBatches(steps, deps);
  throwIfLockLost(results);
  await deps.pauseAt?.('advanced');
  const ready: Kind<'publish'>[] = [];
  steps.forEach((action, i) => {
    const result = results[i];
    const entry = book.entries.get(action.name);
    if (entry === undefined) return;
    const state: ReportState = entry.state === 'sync_ready' ? 'sync_ready' : 'temporary';
    if (result?.status !== 'fulfilled') {
      const message = messageOf(result?.reason);
      deps.logger.error({ slot: action.name, err: message }, 'could not advance copy');
      book.report(action.name, 'failed', state, message);
      return;
    }
    const end = result.value;
    book.updated = true;
    book.moved.set(action.slot, end);
    if (end !== action.to) {
      // slotsync.c's sanity check after LogicalSlotAdvanceAndCheckSnapState().
      const reason = `synchronized confirmed_flush for slot "${action.name}" differs from remote slot: Remote slot has LSN ${formatLsn(action.to)} but local slot has LSN ${formatLsn(end)}.`;
      deps.logger.error(
        { slot: action.name, target: formatLsn(action.to), end: formatLsn(end) },
        reason,
      );
      book.report(action.name, 'failed', state, reason);
      return;
    }
    if (action.to < action.final) {
      // Kept: the next cycle goes on from here.
      book.catchingUp++;
      const behind = Number(action.final - action.to);
      deps.logger.info(
        { slot: action.name, at: formatLsn(end), behindBytes: behind },
        'catching up: the copy moved one bounded step',
      );
      book.report(
        action.name,
        'advanced',
        state,
        action.stuck
          ? `catching up: ${behind} bytes behind its remote slot, slowly: the WAL from its restart_lsn alone takes most of SLOTSYNC_STATEMENT_TIMEOUT_MS to decode (a long transaction open on the primary holds restart_lsn back); raise SLOTSYNC_STATEMENT_TIMEOUT_MS if it does not move`
          : `catching up: ${behind} bytes behind its remote slot (moved in steps that fit within SLOTSYNC_STATEMENT_TIMEOUT_MS)`,
      );
      return;
    }
    if (action.publish) {
      ready.push({
        kind: 'publish',
        name: action.name,
        stagingName: action.slot,
        remote: action.remote,
        reason: action.reason,
      });
    } else {
      book.report(action.name, 'advanced', state, action.reason);
    }
  });
  return ready;
}

/**
 * 5. Publications: a sync-ready staging slot is copied under the remote slot's name, then
 *    dropped. The intent (`publishing`) is durable first; the copy exists under the name
 *    only once it is sync-ready, so a promotion at any moment hands no subscriber a copy
 *    that skips changes.
 */
async function applyPublications(
  publications: Kind<'publish'>[],
  book: Book,
  deps: ApplyDeps,
): Promise<void> {
  if (publications.length === 0) return;
  for (const action of publications) book.set(action.name, { state: 'publishing' });
  await book.persist();
  await deps.pauseAt?.('publication_intent');
  const results = await mapLimit(publications, deps.concurrency, (a) =>
    publishCopy(deps.standby.forDatabase(a.remote.database), deps.lock.pid, a.stagingName, a.name),
  );
  throwIfLockLost(results);
  await deps.pauseAt?.('published');
  const published: Kind<'publish'>[] = [];
  publications.forEach((action, i) => {
    const result = results[i];
    if (result?.status === 'fulfilled') {
      published.push(action);
      book.published.set(action.name, action.stagingName);
      book.updated = true;
      return;
    }
    const message = messageOf(result?.reason);
    if (hasSqlState(result?.reason, SQLSTATE.duplicateObject)) {
      // Someone made a slot under the remote slot's name meanwhile: it is theirs.
      book.set(action.name, { state: 'staging' });
      book.report(action.name, 'conflict', 'conflict', message);
    } else {
      // The copy may exist (a cancel or a lost connection after the server made it): the
      // intent stays `publishing` and the next cycle settles it from what it finds.
      book.report(
        action.name,
        'failed',
        'temporary',
        `could not publish "${action.name}": ${message}`,
      );
    }
    deps.logger.error({ slot: action.name, err: message }, 'could not publish copy');
  });
  await finishPublications(
    published.map((a) => ({ name: a.name, stagingName: a.stagingName, reason: a.reason })),
    book,
    deps,
  );
}

/** 6. Publications whose copy exists but whose staging slot was not dropped yet. */
async function applyFinishedPublications(
  finishes: Kind<'finish_publish'>[],
  book: Book,
  deps: ApplyDeps,
): Promise<void> {
  await finishPublications(
    finishes.map((a) => ({
      name: a.name,
      stagingName: a.dropStaging ? a.stagingName : null,
      reason: a.reason,
    })),
    book,
    deps,
  );
}

async function finishPublications(
  items: { name: string; stagingName: string | null; reason: string | null }[],
  book: Book,
  deps: ApplyDeps,
): Promise<void> {
  if (items.length === 0) return;
  const drops = items.filter((i) => i.stagingName !== null);
  const results = await mapLimit(drops, deps.concurrency, (i) =>
    dropSlots(deps, [i.stagingName as string]),
  );
  throwIfLockLost(results);
  await deps.pauseAt?.('staging_dropped');
  drops.forEach((item, i) => {
    if (results[i]?.status === 'fulfilled') book.dropped.add(item.stagingName as string);
    // A staging slot left behind is dropped by a later cycle (plan: leftover staging slot).
  });
  for (const item of items) {
    book.set(item.name, { state: 'sync_ready' });
    book.updated = true;
    deps.logger.info({ slot: item.name }, item.reason ?? 'sync-ready');
    book.report(item.name, 'ready', 'sync_ready', item.reason);
  }
}

/** 7. What was decided without touching the standby. */
function reportUntouched(actions: readonly Action[], book: Book): void {
  for (const action of actions) {
    if (book.reports.has(action.name)) continue;
    if (action.kind === 'skip') book.report(action.name, 'skipped', action.state, action.reason);
    else if (action.kind === 'conflict')
      book.report(action.name, 'conflict', 'conflict', action.reason);
    else if (action.kind === 'none')
      book.report(action.name, 'unchanged', action.state, action.reason);
  }
}
