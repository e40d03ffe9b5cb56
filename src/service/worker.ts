/**
 * The background worker, slotsync.c's ReplSlotSyncWorkerMain(): sync, then sleep the
 * naptime (wait_for_slot_activity()), counted from the start of the cycle (a cadence: a
 * busy standby is synced every SLOTSYNC_NAPTIME_MIN_MS whatever a cycle takes, so the
 * copies' lag is about that interval); after a failed cycle wait the restart interval
 * (SLOTSYNC_RESTART_INTERVAL_SEC); stop for good when the standby was promoted or
 * promotion started. start() and stop() are idempotent and clear every timer they set.
 */
import type { Logger } from 'pino';
import { readChangeProbe } from '../db/primary.js';
import { readReceived } from '../db/standby.js';
import { messageOf, SlotSyncError } from '../errors.js';
import { formatLsn, type Lsn } from '../sync/lsn.js';
import { receivedLsn } from '../sync/safety.js';
import { delay } from '../util.js';
import type { SyncContext } from './context.js';
import type { Metrics } from './metrics.js';
import { nextNaptime } from './naptime.js';

export type WorkerState =
  | 'running'
  | 'disabled'
  | 'stopped'
  /** This node is the primary: nothing to sync; it waits to be a standby again. */
  | 'primary'
  | 'stopped_shutdown'
  | 'restarting';

export interface WorkerOptions {
  naptimeMinMs: number;
  naptimeMaxMs: number;
  restartIntervalMs: number;
  changePollMs: number;
}

/** The sync lock is kept between cycles due at most this far apart (a busy standby). */
const KEEP_LOCK_MAX_MS = 1_000;
/** ...for the interval and this much more (a change poll, a slow cycle start). */
const KEEP_LOCK_MARGIN_MS = 250;

export class Worker {
  #options: WorkerOptions;
  #state: WorkerState;
  /** Why the worker is restarting or stopped for good (health). */
  #detail: string | undefined;
  #abort: AbortController | undefined;
  #loop: Promise<void> | undefined;
  #naptime: number;

  constructor(
    private readonly context: SyncContext,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    options: WorkerOptions & { enabled: boolean },
  ) {
    this.#options = options;
    this.#state = options.enabled ? 'stopped' : 'disabled';
    this.#naptime = options.naptimeMinMs;
  }

  get state(): WorkerState {
    return this.#state;
  }

  get detail(): string | undefined {
    return this.#detail;
  }

  get running(): boolean {
    return this.#loop !== undefined;
  }

  get naptimeMs(): number {
    return this.#naptime;
  }

  setOptions(options: WorkerOptions): void {
    this.#options = options;
    this.#naptime = Math.min(Math.max(this.#naptime, options.naptimeMinMs), options.naptimeMaxMs);
  }

  start(): void {
    if (this.#loop || this.context.stopSignaled) return;
    this.#abort = new AbortController();
    this.#naptime = this.#options.naptimeMinMs;
    this.#state = 'running';
    this.#detail = undefined;
    this.metrics.workerRunning.set(1);
    this.logger.info('slot sync worker started');
    const signal = this.#abort.signal;
    this.#loop = this.#run(signal).finally(() => {
      this.#loop = undefined;
      this.metrics.workerRunning.set(0);
    });
  }

  /** Stops the loop; resolves once an in-flight cycle of the worker has finished. */
  async stop(state: 'stopped' | 'disabled' | 'stopped_shutdown' = 'stopped'): Promise<void> {
    this.#abort?.abort();
    await this.#loop;
    this.#abort = undefined;
    // A worker that saw the promotion says so, until POST /shutdown takes over.
    if (state === 'stopped_shutdown' || this.#state !== 'primary') this.#state = state;
  }

  /**
   * wait_for_slot_activity(), with cheap checks at every change poll: the standby (a copy
   * moved or invalidated is fenced, a promotion is re-armed, both within a poll and whether
   * or not the primary answers), then, when `fingerprint` is given, the primary's slot digest
   * (a change wakes the next cycle, but not before `earliest`: on a primary that writes all
   * the time every poll sees a change, and the cadence, not the poll, sets the pace). True
   * when woken early.
   */
  async #nap(
    ms: number,
    fingerprint: string | null,
    signal: AbortSignal,
    earliest = 0,
  ): Promise<boolean> {
    const poll = this.#options.changePollMs;
    // A nap not much longer than a poll: the cycle that ends it reads everything sooner than
    // a second poll would (busy cadence), so no poll (two statements saved per cycle).
    if (poll <= 0 || ms <= poll * 1.5) {
      await delay(ms, signal);
      return false;
    }
    let until = Date.now() + ms;
    // A change seen before `earliest`: the nap ends then, the standby still checked meanwhile.
    let changed = false;
    let watchSlot = true;
    while (!signal.aborted) {
      const left = until - Date.now();
      if (left <= 0) return changed;
      await delay(Math.min(poll, left), signal);
      // Time is up: the next cycle reads both servers anyway.
      if (signal.aborted || Date.now() >= until) return changed;
      const deps = this.context.engine.deps;
      const standby = await this.context.readiness.check(deps.standby.main);
      if (standby === 'primary' || standby === 'fence') {
        this.logger.info(
          { reason: standby },
          standby === 'primary'
            ? 'the standby was promoted: a cycle runs now'
            : 'a copy was moved or invalidated on the standby: a cycle runs now to fence it',
        );
        return true;
      }
      // While the last facts say the primary waits for this standby, its slot there is
      // watched at every poll, also between the retries of a failed cycle (fingerprint null).
      const claimsProtection = watchSlot && deps.cache.primaryRead?.facts.waitsForStandby === true;
      if ((fingerprint === null || changed) && !claimsProtection) continue;
      try {
        const probedAt = Date.now();
        const shape = deps.engine === 'builtin' && deps.cache.shapeProbe;
        const probe = await readChangeProbe(
          deps.primary,
          [...deps.registry.entries.keys()],
          deps.cache.primarySlotName ?? '',
          shape,
        );
        if (claimsProtection && (await this.#slotPastStandby(probe.physicalSlotRestartLsn))) {
          this.logger.info(
            { restartLsn: formatLsn(probe.physicalSlotRestartLsn) },
            "the standby's slot on the primary is past what the standby received: a cycle runs now to record that the primary no longer protects it",
          );
          return true;
        }
        if (fingerprint === null || changed) continue;
        const now = probe.fingerprint;
        if (now !== fingerprint) {
          if (Date.now() >= earliest) return true;
          changed = true;
          until = Math.min(until, earliest);
          continue;
        }
        deps.cache.primaryConfirmed(probedAt, !shape);
      } catch (error) {
        deps.cache.primaryFailed(`the primary does not answer: ${messageOf(error)}`);
        // Let a cycle meet the error and report it; between the retries of a failed cycle
        // the restart interval stands, and a primary that does not answer is not asked again
        // in it (each try may wait a connect timeout: the standby's checks come first).
        if (fingerprint === null) {
          watchSlot = false;
          continue;
        }
        return true;
      }
    }
    return false;
  }

  /**
   * Whether the standby's physical slot on the primary is past what the standby received
   * (an operator or another server moved it: the primary then lets consumers get WAL this
   * standby lacks, and no slot digest shows it). The standby is read again after the probe
   * before saying so: it may have received more since the poll read it.
   */
  async #slotPastStandby(restartLsn: Lsn | null): Promise<boolean> {
    if (restartLsn === null) return false;
    const seen = this.context.readiness.standby;
    const before = seen === null ? null : receivedLsn(seen);
    if (before !== null && restartLsn <= before) return false;
    const now = await readReceived(this.context.engine.deps.standby.main).catch(() => null);
    if (now === null) return false; // the standby does not answer: the next poll sees it
    const received = receivedLsn(now);
    return received === null || restartLsn > received;
  }

  /**
   * This node is the primary: checks, at the change-poll cadence (at least once a second),
   * whether it is a standby again, for at most `ms` (a re-arm left to retry).
   */
  async #whilePrimary(ms: number, signal: AbortSignal): Promise<void> {
    const poll = Math.min(Math.max(this.#options.changePollMs, 100), 1_000);
    const until = Date.now() + ms;
    while (!signal.aborted && Date.now() < until) {
      await delay(Math.min(poll, until - Date.now()), signal);
      if (signal.aborted) return;
      const found = await this.context.readiness.check(this.context.engine.deps.standby.main);
      if (found === 'standby' || found === 'fence') {
        this.logger.info('this node is a standby again: syncing resumes');
        this.#state = 'running';
        this.#detail = undefined;
        return;
      }
    }
  }

  async #run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const started = Date.now();
      try {
        const result = await this.context.sync({
          trigger: 'worker',
          waitMs: Number.POSITIVE_INFINITY,
          // The next cycle is due within the naptime: keep the lock for it while it is short.
          keepLockMs: this.#naptime <= KEEP_LOCK_MAX_MS ? this.#naptime + KEEP_LOCK_MARGIN_MS : 0,
        });
        // A slot waiting for the standby's replay will be syncable soon: do not back off.
        const busy = result.report.updated || result.waitingForReplay > 0 || result.catchingUp > 0;
        this.#naptime = nextNaptime(
          this.#naptime,
          busy,
          this.#options.naptimeMinMs,
          this.#options.naptimeMaxMs,
        );
        this.metrics.naptime.set(this.#naptime / 1000);
        if (this.#state === 'restarting') this.#state = 'running';
        this.#detail = undefined;
        // The standby replays within milliseconds: retry at the poll interval, not a naptime.
        const interval =
          result.waitingForReplay > 0 && this.#options.changePollMs > 0
            ? Math.min(this.#naptime, this.#options.changePollMs)
            : this.#naptime;
        // Due `interval` after this cycle started; a cycle that took longer is followed at once.
        const nap = Math.max(0, interval - (Date.now() - started));
        if (
          await this.#nap(nap, result.fingerprint, signal, started + this.#options.naptimeMinMs)
        ) {
          this.#naptime = this.#options.naptimeMinMs;
        }
      } catch (error) {
        if (signal.aborted) return;
        const code = error instanceof SlotSyncError ? error.code : undefined;
        if (code === 'SLOTSYNC_PROMOTION') {
          this.#state = 'stopped_shutdown';
          return;
        }
        if (code === 'SLOTSYNC_STANDBY_NOT_IN_RECOVERY') {
          // This node is the primary (promoted, with or without POST /shutdown): the cycle
          // dropped the staging slots and re-armed the copies; nothing is synced until the
          // node is a standby again (an old primary rejoining), which needs no restart.
          if (this.#state !== 'primary') {
            const dropped = this.context.snapshot.promotion?.dropped ?? [];
            this.logger.warn(
              { dropped },
              'this node is the primary now: nothing to sync until it is a standby again',
            );
          }
          this.#state = 'primary';
          this.#detail =
            'this node is the primary: nothing to sync; slotsync waits for it to be a standby again';
          this.metrics.naptime.set(0);
          const pending = this.context.snapshot.promotion?.rearmFailed.length ?? 0;
          await this.#whilePrimary(
            pending > 0 ? this.#options.restartIntervalMs : Number.POSITIVE_INFINITY,
            signal,
          );
          continue;
        }
        this.#state = 'restarting';
        this.#detail = messageOf(error);
        this.metrics.workerRestarts.inc({ reason: 'error' });
        this.#naptime = this.#options.naptimeMinMs;
        this.logger.warn(
          { err: messageOf(error), restartInMs: this.#options.restartIntervalMs },
          'slot sync cycle failed; worker restarts after the restart interval',
        );
        // The standby is still checked meanwhile: a primary that is gone leaves no copy
        // unfenced, and a promotion is seen at once.
        await this.#nap(this.#options.restartIntervalMs, null, signal);
      }
    }
  }
}
