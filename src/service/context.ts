/**
 * The one shared sync context, slotsync.c's SlotSyncCtxStruct: whether a sync runs
 * (`syncing`), whether promotion stopped syncing for good (`stopSignaled`), the worker's
 * state and the last start time. Every sync — worker or API — goes through `withSyncLock()`:
 * an async mutex here, the standby's advisory lock across processes (taken by the cycle).
 * Routes read `snapshot`, an immutable record of the last cycle.
 */
import type { Logger } from 'pino';
import { type CycleResult, runCycle } from '../engine/cycle.js';
import type { Engine } from '../engine/engine.js';
import type { Fenced } from '../engine/fence.js';
import type { PromotionCleanup } from '../engine/promotion.js';
import { Readiness } from '../engine/readiness.js';
import { CONCURRENT_MESSAGE, messageOf, PROMOTION_MESSAGE, SlotSyncError } from '../errors.js';
import type { SlotView } from '../sync/view.js';
import type { Metrics } from './metrics.js';
import { Mutex } from './mutex.js';

/** What started a cycle (a metric label). */
export type Trigger = 'worker' | 'api' | 'shutdown';
/**
 * Who holds the sync lock: a cycle, or the service swapping its engine (reload) or waiting
 * for the last cycle before it closes. Once promotion has started (POST /shutdown) only
 * worker and API cycles are refused.
 */
export type LockHolder = Trigger | 'reload' | 'close' | 'quorum';

export interface Snapshot {
  /** The last cycle that completed (its views are what GET /slots shows). */
  lastResult: CycleResult | undefined;
  lastResultAt: number | undefined;
  lastSuccessAt: number | undefined;
  lastError: { code: string; message: string; at: number } | undefined;
  lastStartTime: number | undefined;
  snapshotRefused: string | undefined;
  /** What was dropped when a cycle found the standby promoted. */
  promotion: PromotionCleanup | undefined;
  /** The last copies fenced (moved or invalidated on the standby) and when. */
  fenced: (Fenced & { at: number }) | undefined;
}

/** How many POST /sync may wait for the next cycle at once. */
const MAX_API_WAITERS = 64;

interface SharedCycle {
  started: boolean;
  waiters: number;
  promise: Promise<CycleResult>;
}

export interface SyncOptions {
  trigger: Trigger;
  /** How long to wait for an in-flight cycle; 0 with nowait. */
  waitMs: number;
  nowait?: boolean;
  /** Keep the standby's sync lock this long after the cycle (the worker's next cycle). */
  keepLockMs?: number;
}

export class SyncContext {
  readonly #mutex = new Mutex();
  /** The next API cycle, while it waits for the lock: later callers join it. */
  #nextApi: SharedCycle | undefined;
  readonly #logger: Logger;
  readonly #metrics: Metrics;
  #engine: Engine;
  #stopSignaled = false;
  #syncing = false;
  #inFlight = 0;
  #maxInFlight = 0;
  #snapshot: Snapshot = {
    lastResult: undefined,
    lastResultAt: undefined,
    lastSuccessAt: undefined,
    lastError: undefined,
    lastStartTime: undefined,
    snapshotRefused: undefined,
    promotion: undefined,
    fenced: undefined,
  };
  /** Promotion readiness: the facts of this process and the one verdict over them. */
  readonly readiness: Readiness;

  constructor(engine: Engine, metrics: Metrics, logger: Logger) {
    this.#engine = engine;
    this.readiness = new Readiness(engine);
    this.#metrics = metrics;
    this.#logger = logger;
    this.#hook(engine);
  }

  #hook(engine: Engine): void {
    engine.deps.onSnapshotRefused = (message) => this.#update({ snapshotRefused: message });
    engine.deps.onPromotion = (cleanup) => {
      this.#metrics.promotionDropped.inc(cleanup.dropped.length);
      this.#metrics.rearmed.inc(cleanup.rearmed.length);
      // A later cycle that re-armed what an earlier one could not: keep the whole story.
      const previous = this.#snapshot.promotion;
      this.#update({ promotion: previous ? mergeCleanups(previous, cleanup) : cleanup });
    };
    engine.deps.onFenced = (fenced) => {
      this.#metrics.fenced.inc(fenced.dropped.length);
      this.#update({ fenced: { ...fenced, at: Date.now() } });
    };
  }

  get engine(): Engine {
    return this.#engine;
  }

  get stopSignaled(): boolean {
    return this.#stopSignaled;
  }

  get syncing(): boolean {
    return this.#syncing;
  }

  /** POST /sync callers waiting for the next, shared cycle. */
  get waitingApiCallers(): number {
    return this.#nextApi?.started === false ? this.#nextApi.waiters : 0;
  }

  /** The most cycles ever in flight at once (1 unless the lock is broken). */
  get maxInFlight(): number {
    return this.#maxInFlight;
  }

  get snapshot(): Readonly<Snapshot> {
    return this.#snapshot;
  }

  /** check_and_set_sync_info() + synchronize_slots() + reset_syncing_flag(). */
  async sync(options: SyncOptions): Promise<CycleResult> {
    return this.withSyncLock({ ...options, holder: options.trigger }, () =>
      this.#runCycle(options.trigger, options.keepLockMs ?? 0),
    );
  }

  /**
   * POST /sync: callers that arrive while a cycle runs share the next one (it starts after
   * they arrived, so it sees what they want synced) instead of each queueing a cycle of its
   * own; at most MAX_API_WAITERS wait, the others get 503 at once.
   */
  async syncShared(options: Omit<SyncOptions, 'trigger'>): Promise<CycleResult> {
    const pending = this.#nextApi;
    if (pending !== undefined && !pending.started && !options.nowait) {
      if (pending.waiters >= MAX_API_WAITERS) {
        throw new SlotSyncError(
          'SLOTSYNC_LOCK_TIMEOUT',
          `${CONCURRENT_MESSAGE}: ${pending.waiters} requests already wait for the next cycle`,
        );
      }
      pending.waiters++;
      return pending.promise;
    }
    const next: SharedCycle = {
      started: false,
      waiters: 1,
      promise: Promise.resolve(undefined as never),
    };
    next.promise = this.withSyncLock({ ...options, holder: 'api' }, () => {
      next.started = true;
      return this.#runCycle('api');
    }).finally(() => {
      if (this.#nextApi === next) this.#nextApi = undefined;
    });
    if (!options.nowait) this.#nextApi = next;
    return next.promise;
  }

  /** Runs `fn` as the only sync in this process; refuses once promotion has started. */
  async withSyncLock<T>(
    options: Omit<SyncOptions, 'trigger'> & { holder: LockHolder },
    fn: () => Promise<T>,
  ): Promise<T> {
    const refusedAfterStop = options.holder === 'worker' || options.holder === 'api';
    if (this.#stopSignaled && refusedAfterStop) {
      throw new SlotSyncError('SLOTSYNC_PROMOTION', PROMOTION_MESSAGE);
    }
    if (options.nowait && this.#mutex.locked) {
      throw new SlotSyncError('SLOTSYNC_CONCURRENT', CONCURRENT_MESSAGE);
    }
    const waitStarted = performance.now();
    const release = await this.#mutex.acquire(
      options.nowait ? 0 : options.waitMs,
      () =>
        new SlotSyncError(
          'SLOTSYNC_LOCK_TIMEOUT',
          `${CONCURRENT_MESSAGE}: the synchronization in progress did not finish within ${options.waitMs} ms`,
        ),
    );
    this.#metrics.lockWait.observe((performance.now() - waitStarted) / 1000);
    try {
      if (this.#stopSignaled && refusedAfterStop) {
        throw new SlotSyncError('SLOTSYNC_PROMOTION', PROMOTION_MESSAGE);
      }
      this.#syncing = true;
      this.#inFlight++;
      this.#maxInFlight = Math.max(this.#maxInFlight, this.#inFlight);
      this.#metrics.inFlight.set(this.#inFlight);
      return await fn();
    } finally {
      this.#inFlight--;
      this.#metrics.inFlight.set(this.#inFlight);
      this.#syncing = false;
      release();
    }
  }

  /** ShutDownSlotSync(): from now on every sync is refused. */
  signalStop(): void {
    this.#stopSignaled = true;
  }

  /**
   * The promotion POST /shutdown prepared has happened: this node is the primary, and
   * syncing resumes by itself if it ever becomes a standby again.
   */
  resume(): void {
    this.#stopSignaled = false;
  }

  /** Swaps the engine (configuration reload); the caller holds the sync lock. */
  async replaceEngine(engine: Engine): Promise<void> {
    const old = this.#engine;
    this.#hook(engine);
    this.#engine = engine;
    this.readiness.replaceEngine(engine);
    this.#update({ lastResult: undefined, lastResultAt: undefined, snapshotRefused: undefined });
    await old.close();
  }

  /** Records an outcome produced outside a cycle (shutdown's final state). */
  recordViews(views: SlotView[]): void {
    const last = this.#snapshot.lastResult;
    if (last) this.#update({ lastResult: { ...last, views }, lastResultAt: Date.now() });
    this.#metrics.recordViews(views);
  }

  async #runCycle(trigger: Trigger, keepLockMs = 0): Promise<CycleResult> {
    const started = Date.now();
    this.#update({ lastStartTime: started });
    const timer = this.#metrics.cycleDuration.startTimer({ trigger });
    try {
      const result = await runCycle(this.#engine.deps, { keepLockMs });
      timer();
      this.readiness.recordCycle(result);
      this.#metrics.recordCycle(trigger, 'success', result);
      this.#update({
        lastResult: result,
        lastResultAt: Date.now(),
        lastSuccessAt: Date.now(),
        lastError: undefined,
      });
      return result;
    } catch (error) {
      timer();
      const code = error instanceof SlotSyncError ? error.code : 'SLOTSYNC_CYCLE';
      this.#metrics.recordCycle(
        trigger,
        code === 'SLOTSYNC_CONCURRENT' ? 'concurrent' : 'error',
        undefined,
      );
      this.#update({ lastError: { code, message: messageOf(error), at: Date.now() } });
      this.#logger.warn({ trigger, code, err: messageOf(error) }, 'sync cycle failed');
      throw error;
    }
  }

  #update(change: Partial<Snapshot>): void {
    this.#snapshot = Object.freeze({ ...this.#snapshot, ...change });
  }
}

/** Two cleanups of one promotion (the first cycle, then a retry of what it could not do). */
function mergeCleanups(a: PromotionCleanup, b: PromotionCleanup): PromotionCleanup {
  const rearmed = [...new Set([...a.rearmed, ...b.rearmed])].sort();
  return {
    at: a.at,
    dropped: [...new Set([...a.dropped, ...b.dropped])].sort(),
    failed: b.failed,
    rearmed,
    rearmFailed: b.rearmFailed.filter((f) => !rearmed.includes(f.slot)),
    notRearmed: [...a.notRearmed, ...b.notRearmed],
    ended: [...a.ended, ...b.ended],
  };
}
