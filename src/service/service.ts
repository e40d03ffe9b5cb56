/**
 * The service: one sync context, the worker, metrics, and the operations that change them
 * (shutdown for promotion, configuration reload).
 */
import type { Logger } from 'pino';
import { type Config, configError } from '../config.js';
import { readStandby } from '../db/standby.js';
import { type CycleReport, runCycle } from '../engine/cycle.js';
import { createEngine, type Engine } from '../engine/engine.js';
import { dropStagingSlots } from '../engine/promotion.js';
import { CONCURRENT_MESSAGE, messageOf, SlotSyncError } from '../errors.js';
import { type Readiness, readiness } from '../sync/ready.js';
import { buildSlotViews, type SlotView } from '../sync/view.js';
import { delay } from '../util.js';
import { SyncContext } from './context.js';
import { HealthProbes } from './health.js';
import { Metrics } from './metrics.js';
import { isLoopback } from './plugins/auth.js';
import { Worker } from './worker.js';

/** GET /ready trusts a last successful cycle up to this many longest naptimes old. */
const READY_MAX_AGE_NAPTIMES = 3;

/** After POST /shutdown, how often the standby is asked whether it was promoted. */
const PROMOTION_POLL_MS = 500;

/** How often shutdown asks again for a sync lock another process holds. */
const LOCK_RETRY_MS = 100;
/** How long a stop waits for the in-flight cycle before cancelling its statements. */
const CANCEL_AFTER_MS = 1_000;

export interface ShutdownResult {
  stopped: true;
  slots: SlotView[];
  dropped: string[];
  final_sync: CycleReport | null;
  final_sync_error: string | null;
}

export class SlotSyncService {
  readonly metrics: Metrics;
  /** GET /health's probes, on connections of their own, cached about a second. */
  readonly health: HealthProbes;
  readonly context: SyncContext;
  readonly worker: Worker;
  readonly logger: Logger;
  readonly startedAt = Date.now();
  #config: Config;
  #closing: Promise<void> | undefined;
  /** Set when the process starts to stop: long waits (waitReady) answer at once. */
  #stopping = false;
  #watching: AbortController | undefined;
  #shutdown: Promise<ShutdownResult> | undefined;

  static async create(
    config: Config,
    logger: Logger,
    metrics = new Metrics(),
  ): Promise<SlotSyncService> {
    const engine = await createEngine(config, logger);
    return new SlotSyncService(config, engine, logger, metrics);
  }

  private constructor(config: Config, engine: Engine, logger: Logger, metrics: Metrics) {
    this.#config = config;
    this.logger = logger;
    this.metrics = metrics;
    metrics.requiredSlots = () => this.#config.requiredSlots;
    this.health = new HealthProbes(logger.child({ component: 'health' }));
    this.context = new SyncContext(engine, metrics, logger.child({ component: 'context' }));
    this.worker = new Worker(this.context, metrics, logger.child({ component: 'worker' }), {
      ...config,
      enabled: config.worker,
    });
  }

  /**
   * The readiness gate, from the last cycle: every required slot (`slots`, else
   * SLOTSYNC_REQUIRED_SLOTS, else every failover slot) sync-ready, as of a successful cycle
   * at most `maxAgeMs` old (default 3 × SLOTSYNC_NAPTIME_MAX_MS).
   */
  readiness(slots: string[] | null = null, maxAgeMs?: number): Readiness {
    const { lastResult, lastSuccessAt } = this.context.snapshot;
    return readiness(
      lastResult?.views ?? [],
      slots ?? this.#config.requiredSlots,
      lastSuccessAt === undefined ? null : Date.now() - lastSuccessAt,
      maxAgeMs ?? READY_MAX_AGE_NAPTIMES * this.#config.naptimeMaxMs,
    );
  }

  /**
   * POST /sync with waitReady: cycles until every required slot is sync-ready or `waitMs`
   * passed, a naptime apart; answers the last cycle's report with the readiness.
   */
  async syncUntilReady(
    waitMs: number,
    lockWaitMs: number,
  ): Promise<CycleReport & { readiness: Readiness }> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const { report } = await this.context.sync({ trigger: 'api', waitMs: lockWaitMs });
      const ready = this.readiness(null, Number.POSITIVE_INFINITY);
      if (ready.ready || Date.now() >= deadline || this.#stopping) {
        return { ...report, readiness: ready };
      }
      await delay(Math.min(this.#config.naptimeMinMs, Math.max(0, deadline - Date.now())));
    }
  }

  get config(): Config {
    return this.#config;
  }

  start(): void {
    if (this.#config.worker) this.worker.start();
  }

  /**
   * slotsync_reread_config(): stop the worker when disabled, restart it when the connection
   * or state settings changed, apply naptime bounds at once.
   */
  async reload(next: Config): Promise<'unchanged' | 'restarted' | 'stopped' | 'started'> {
    const old = this.#config;
    // The listener stays where it is: without a token there, anyone could POST /shutdown.
    if (!next.apiToken && !isLoopback(old.host)) {
      throw configError(
        'SLOTSYNC_API_TOKEN',
        `is required while listening on ${old.host}, which is not a loopback address: the reload is refused and the running configuration kept`,
      );
    }
    this.logger.level = next.logLevel;
    const connectionChanged =
      old.primaryUrl !== next.primaryUrl ||
      old.standbyUrl !== next.standbyUrl ||
      old.stateDir !== next.stateDir ||
      old.concurrency !== next.concurrency ||
      old.statementTimeoutMs !== next.statementTimeoutMs ||
      old.connectTimeoutMs !== next.connectTimeoutMs ||
      old.createTimeoutMs !== next.createTimeoutMs;
    if (old.host !== next.host || old.port !== next.port) {
      this.logger.warn('SLOTSYNC_HOST and SLOTSYNC_PORT take effect at the next start');
    }
    this.#config = { ...next, host: old.host, port: old.port };
    this.worker.setOptions(next);
    if (this.context.stopSignaled) return 'unchanged';
    if (old.worker && !next.worker) {
      this.logger.info(
        'replication slot synchronization worker will shut down because "SLOTSYNC_WORKER" is disabled',
      );
      await this.worker.stop('disabled');
      if (connectionChanged) await this.#swapEngine(next);
      return 'stopped';
    }
    if (connectionChanged) {
      this.logger.info(
        'replication slot synchronization worker will restart because of a parameter change',
      );
      const wasRunning = this.worker.running;
      await this.worker.stop();
      await this.#swapEngine(next);
      if (next.worker) {
        this.metrics.workerRestarts.inc({ reason: 'configuration' });
        this.worker.start();
      }
      return wasRunning || next.worker ? 'restarted' : 'unchanged';
    }
    if (!old.worker && next.worker) {
      this.worker.start();
      return 'started';
    }
    return 'unchanged';
  }

  async #swapEngine(config: Config): Promise<void> {
    const engine = await createEngine(config, this.logger);
    await this.context.withSyncLock({ holder: 'reload', waitMs: Number.POSITIVE_INFINITY }, () =>
      this.context.replaceEngine(engine),
    );
  }

  /**
   * ShutDownSlotSync() for promotion: optionally one last cycle, then refuse every later
   * sync, stop the worker, wait for an in-flight cycle, and drop every owned copy that is
   * not sync-ready (in PostgreSQL those are temporary slots and vanish on promotion).
   * Idempotent: later calls answer the same result.
   */
  shutdown(options: { finalSync: boolean }): Promise<ShutdownResult> {
    if (!this.#shutdown) {
      this.#shutdown = this.#doShutdown(options.finalSync).catch((error) => {
        this.#shutdown = undefined; // the drop step can be retried; syncs stay refused
        throw error;
      });
    }
    return this.#shutdown;
  }

  async #doShutdown(finalSync: boolean): Promise<ShutdownResult> {
    let finalReport: CycleReport | null = null;
    let finalError: string | null = null;
    if (finalSync && !this.context.stopSignaled) {
      try {
        finalReport = (await this.context.sync({ trigger: 'api', waitMs: this.#config.syncWaitMs }))
          .report;
      } catch (error) {
        finalError = messageOf(error);
      }
    }
    this.context.signalStop();
    await this.worker.stop('stopped_shutdown');
    const { slots, dropped } = await this.context.withSyncLock(
      { holder: 'shutdown', waitMs: Number.POSITIVE_INFINITY },
      () => this.#dropNotReady(),
    );
    this.logger.info({ dropped }, 'slot synchronization stopped for promotion');
    this.#watchPromotion();
    return { stopped: true, slots, dropped, final_sync: finalReport, final_sync_error: finalError };
  }

  /**
   * After POST /shutdown the worker is stopped, but the promotion is yet to come: watch the
   * standby until it leaves recovery, then run one cycle as shutdown, which finds it
   * promoted and re-arms the copies (SLOTSYNC_REARM).
   */
  #watchPromotion(): void {
    if (this.#watching !== undefined || !this.#config.rearm) return;
    const abort = new AbortController();
    this.#watching = abort;
    void (async () => {
      while (!abort.signal.aborted) {
        try {
          const { deps } = this.context.engine;
          if (!(await readStandby(deps.standby.main)).inRecovery) {
            await this.context.withSyncLock(
              { holder: 'shutdown', waitMs: Number.POSITIVE_INFINITY },
              () => runCycle(deps).catch(() => undefined), // it ends: "not a standby"
            );
            return;
          }
        } catch (error) {
          // The standby restarts or is busy promoting: ask again.
          this.logger.debug({ err: messageOf(error) }, 'watching the standby for promotion');
        }
        await delay(PROMOTION_POLL_MS, abort.signal).catch(() => undefined);
      }
    })();
  }

  async #dropNotReady(): Promise<{ slots: SlotView[]; dropped: string[] }> {
    const { deps } = this.context.engine;
    // Another slotsync process may be in a cycle on this standby: wait for its lock.
    const deadline = Date.now() + this.#config.syncWaitMs;
    let state = await deps.lock.lockAndRead(null);
    while (!state.locked) {
      if (Date.now() > deadline) {
        throw new SlotSyncError(
          'SLOTSYNC_LOCK_TIMEOUT',
          `${CONCURRENT_MESSAGE}: another slotsync process holds the standby's sync lock`,
        );
      }
      await delay(LOCK_RETRY_MS);
      state = await deps.lock.lockAndRead(null);
    }
    try {
      return await this.#dropNotReadyLocked(state.pid);
    } finally {
      deps.lock.release();
      deps.cache.forget();
    }
  }

  async #dropNotReadyLocked(lockPid: number): Promise<{ slots: SlotView[]; dropped: string[] }> {
    const { deps } = this.context.engine;
    await deps.registry.refresh();
    const before = await readStandby(deps.standby.main);
    // In PostgreSQL the not-ready copies are temporary and vanish on promotion: here they
    // are staging slots, dropped now (published copies are sync-ready and stay).
    const cleanup = await dropStagingSlots(
      { registry: deps.registry, logger: this.logger, standbyMain: deps.standby.main },
      lockPid,
      before.slots,
    );
    if (cleanup.failed.length > 0) {
      throw new SlotSyncError(
        'SLOTSYNC_SHUTDOWN_DROP',
        `could not drop copies that are not sync-ready: ${cleanup.failed.map((f) => `${f.slot}: ${f.error}`).join('; ')}`,
      );
    }
    const after = await readStandby(deps.standby.main);
    const remote = this.context.snapshot.lastResult?.remote ?? [];
    const slots = buildSlotViews(remote, after.slots, deps.registry.entries, []);
    this.context.recordViews(slots);
    return { slots, dropped: cleanup.dropped };
  }

  /**
   * Graceful stop: the worker first (finishing its cycle), then the pools. Idempotent: the
   * app's onClose hook (app.ts) and a caller may both ask.
   */
  /** The process starts to stop: waits in progress end with what they have. */
  beginClose(): void {
    this.#stopping = true;
  }

  close(): Promise<void> {
    this.#stopping = true;
    this.#watching?.abort();
    this.#closing ??= (async () => {
      const cyclesEnded = (async () => {
        await this.worker.stop();
        await this.context.withSyncLock(
          { holder: 'close', waitMs: Number.POSITIVE_INFINITY },
          async () => undefined,
        );
      })();
      // A cycle gets a moment to finish; past it, its statements are cancelled (a creation
      // may wait up to SLOTSYNC_CREATE_TIMEOUT_MS for a consistent point). Every step is
      // safe to interrupt: the next start recovers from the registry, as after kill -9.
      const timer = new AbortController();
      const finished = await Promise.race([
        cyclesEnded.then(() => true),
        delay(CANCEL_AFTER_MS, timer.signal).then(() => false),
      ]);
      timer.abort();
      if (!finished) {
        const cancelled = await this.context.engine.cancelInFlight();
        this.logger.info({ cancelled }, 'stopping: statements in flight cancelled');
      }
      await cyclesEnded;
      await this.context.engine.close();
      await this.health.close();
    })();
    return this.#closing;
  }
}
