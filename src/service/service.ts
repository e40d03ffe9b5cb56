/**
 * The service: one sync context, the worker, metrics, and the operations that change them
 * (shutdown for promotion, configuration reload).
 */
import type { Logger } from 'pino';
import { type Config, configError } from '../config.js';
import { dropCopy, readStandby } from '../db/standby.js';
import { type CycleReport, runCycle } from '../engine/cycle.js';
import { applySettings, createEngine, type Engine } from '../engine/engine.js';
import { fenceCopies } from '../engine/fence.js';
import { dropStagingSlots } from '../engine/promotion.js';
import { CONCURRENT_MESSAGE, messageOf, SlotSyncError } from '../errors.js';
import { planBuiltin } from '../sync/builtin.js';
import type { Safety } from '../sync/safety.js';
import { buildBuiltinViews, buildSlotViews, type SlotView, withSafety } from '../sync/view.js';
import { delay } from '../util.js';
import { SyncContext } from './context.js';
import { HealthProbes, ProbePools } from './health.js';
import { Metrics } from './metrics.js';
import { isLoopback } from './plugins/auth.js';
import { QuorumAgent } from './quorum.js';
import { Worker } from './worker.js';

/**
 * How long an answer that rests on a read of a primary that does not wait for this standby
 * (no synchronized_standby_slots) is trusted: the worker's change poll and every question
 * read the primary again well within it.
 */
export const READY_MAX_AGE_MS = 5_000;

/** After POST /shutdown, how often the standby is asked whether it was promoted (at most). */
const PROMOTION_POLL_MS = 200;

/** How often shutdown asks again for a sync lock another process holds. */
const LOCK_RETRY_MS = 100;
/** How long a stop waits for the in-flight cycle before cancelling its statements. */
const CANCEL_AFTER_MS = 1_000;

export interface ShutdownResult {
  stopped: true;
  slots: SlotView[];
  dropped: string[];
  /** Published copies dropped at shutdown, and why (moved, invalidated, consumer ahead). */
  fenced: { name: string; reason: string }[];
  final_sync: CycleReport | null;
  final_sync_error: string | null;
  /** Promotion readiness after the shutdown, read from the standby (and the primary if it answers). */
  readiness: Safety;
}

export class SlotSyncService {
  readonly metrics: Metrics;
  /** Connections of their own for everything that is not a cycle: health, readiness. */
  readonly probes: ProbePools;
  /** GET /health's probes, cached about a second. */
  readonly health: HealthProbes;
  /** SLOTSYNC_STANDBY_SLOTS_QUORUM: this process's part in the quorum (service/quorum.ts). */
  readonly quorum: QuorumAgent;
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
  /** The question being read now, and the one queued behind it (see readiness()). */
  #asking: Promise<void> | undefined;
  #nextAsk: Promise<void> | undefined;

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
    this.probes = new ProbePools(logger.child({ component: 'probes' }));
    this.health = new HealthProbes(this.probes);
    this.context = new SyncContext(engine, metrics, logger.child({ component: 'context' }));
    metrics.safety = ({ all }) =>
      this.context.readiness.verdict({
        required: all ? null : this.#config.requiredSlots,
        maxAgeMs: READY_MAX_AGE_MS,
      });
    this.worker = new Worker(this.context, metrics, logger.child({ component: 'worker' }), {
      ...config,
      enabled: config.worker,
    });
    this.quorum = new QuorumAgent(
      this.context,
      metrics,
      logger.child({ component: 'quorum' }),
      () => this.#config,
    );
  }

  /**
   * Promotion readiness (DESIGN.md, "Safe to promote"), read at the moment of asking: the
   * standby, then the primary if it answers. `slots`: the slots asked for, else
   * SLOTSYNC_REQUIRED_SLOTS, else every one. Concurrent questions share reads, never one
   * that started before they were asked.
   */
  async readiness(slots: string[] | null = null, maxAgeMs = READY_MAX_AGE_MS): Promise<Safety> {
    if (this.#asking !== undefined) {
      this.#nextAsk ??= this.#asking.then(() => {
        this.#nextAsk = undefined;
        return this.#ask();
      });
      await this.#nextAsk;
    } else {
      await this.#ask();
    }
    return this.context.readiness.verdict({
      required: slots ?? this.#config.requiredSlots,
      maxAgeMs,
    });
  }

  #ask(): Promise<void> {
    const asking = (async () => {
      const pools = this.probes.pools(this.targets);
      await this.context.readiness.read(pools);
    })().finally(() => {
      if (this.#asking === asking) this.#asking = undefined;
    });
    this.#asking = asking;
    return asking;
  }

  /** GET /slots: the last cycle's views, `sync_ready` as promotion readiness says now. */
  slotViews(): SlotView[] {
    const views = this.context.snapshot.lastResult?.views ?? [];
    const verdict = this.context.readiness.verdict({ required: null, maxAgeMs: READY_MAX_AGE_MS });
    return withSafety(views, verdict);
  }

  /**
   * POST /sync with waitReady: cycles until every required slot is safe or `waitMs`
   * passed, a naptime apart; answers the last cycle's report with the readiness.
   */
  async syncUntilReady(
    waitMs: number,
    lockWaitMs: number,
  ): Promise<CycleReport & { readiness: Safety }> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const { report } = await this.context.sync({ trigger: 'api', waitMs: lockWaitMs });
      const ready = await this.readiness(null);
      if (ready.ready || Date.now() >= deadline || this.#stopping) {
        return { ...report, readiness: ready };
      }
      await delay(Math.min(this.#config.naptimeMinMs, Math.max(0, deadline - Date.now())));
    }
  }

  get config(): Config {
    return this.#config;
  }

  /** The servers asked now: the primary followed (one of SLOTSYNC_PRIMARY_URL's hosts). */
  get targets(): { primaryUrl: string; standbyUrl: string } {
    return { primaryUrl: this.context.engine.deps.primaryUrl, standbyUrl: this.#config.standbyUrl };
  }

  start(): void {
    if (this.#config.worker) this.worker.start();
    this.quorum.start();
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
      old.engine !== next.engine ||
      old.stateDir !== next.stateDir ||
      old.concurrency !== next.concurrency ||
      old.statementTimeoutMs !== next.statementTimeoutMs ||
      old.connectTimeoutMs !== next.connectTimeoutMs ||
      old.createTimeoutMs !== next.createTimeoutMs;
    const needsRestart = restartOnly(old, next);
    if (needsRestart.length > 0) {
      this.logger.warn(
        { variables: needsRestart },
        `${needsRestart.join(', ')} take${needsRestart.length === 1 ? 's' : ''} effect at the next start; the running value${needsRestart.length === 1 ? ' is' : 's are'} kept`,
      );
    }
    this.#config = { ...next, host: old.host, port: old.port };
    this.worker.setOptions(next);
    // Policies apply at once, to the running engine (the next cycle follows them).
    applySettings(this.context.engine, next);
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
    const { dropped, fenced } = await this.context.withSyncLock(
      { holder: 'shutdown', waitMs: Number.POSITIVE_INFINITY },
      () => this.#dropNotReady(),
    );
    // The answer is read now, from the standby (and the primary if it still answers).
    const readiness = await this.readiness(null);
    const remote = this.context.snapshot.lastResult?.remote ?? [];
    const { deps } = this.context.engine;
    const standby = this.context.readiness.standby;
    const local = standby?.slots ?? [];
    const views = withSafety(
      deps.engine === 'builtin'
        ? buildBuiltinViews(
            remote,
            local,
            planBuiltin({
              remote,
              local,
              standbyReplayLsn: standby?.replayLsn ?? 0n,
              replaceStale: false,
              standbyStartedAt: null,
            }).reports,
          )
        : buildSlotViews(remote, local, deps.registry.entries, []),
      this.context.readiness.verdict({ required: null, maxAgeMs: READY_MAX_AGE_MS }),
    );
    this.context.recordViews(views);
    this.logger.info({ dropped, fenced }, 'slot synchronization stopped for promotion');
    this.#watchPromotion();
    return {
      stopped: true,
      slots: views,
      dropped,
      fenced,
      final_sync: finalReport,
      final_sync_error: finalError,
      readiness,
    };
  }

  /**
   * After POST /shutdown: once the standby is promoted, one cycle as shutdown re-arms the
   * copies (SLOTSYNC_REARM) within a poll of the promotion; then the worker runs again, as
   * on any node that is the primary: it retries what could not be re-armed, syncs nothing,
   * and syncs again, with no restart, once the node is a standby again.
   */
  #watchPromotion(): void {
    if (this.#watching !== undefined || !this.#config.rearm) return;
    const abort = new AbortController();
    this.#watching = abort;
    void (async () => {
      while (!abort.signal.aborted) {
        const wait = Math.min(PROMOTION_POLL_MS, Math.max(this.#config.changePollMs, 20));
        try {
          const { deps } = this.context.engine;
          if (!(await readStandby(deps.standby.main)).inRecovery) {
            await this.context.withSyncLock(
              { holder: 'shutdown', waitMs: Number.POSITIVE_INFINITY },
              () => runCycle(deps).catch(() => undefined), // it ends: "not a standby"
            );
            this.context.resume();
            if (this.#config.worker) this.worker.start();
            return;
          }
        } catch (error) {
          // The standby restarts or is busy promoting: ask again.
          this.logger.debug({ err: messageOf(error) }, 'watching the standby for promotion');
        }
        await delay(wait, abort.signal).catch(() => undefined);
      }
    })().finally(() => {
      if (this.#watching === abort) this.#watching = undefined;
    });
  }

  async #dropNotReady(): Promise<Pick<ShutdownResult, 'dropped' | 'fenced'>> {
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

  /**
   * ShutDownSlotSync()'s cleanup, from the standby alone (the primary may be gone): staging
   * slots go (in PostgreSQL those are temporary and vanish on promotion); a published copy
   * moved or invalidated since slotsync left it, or whose consumer is known to be past this
   * standby's WAL, goes too (staging again makes no sense on a node about to be promoted):
   * after promotion its subscriber then gets "does not exist", never a stream with a gap.
   */
  async #dropNotReadyLocked(lockPid: number): Promise<Pick<ShutdownResult, 'dropped' | 'fenced'>> {
    const { deps } = this.context.engine;
    await deps.registry.refresh();
    const before = await readStandby(deps.standby.main);
    const common = { registry: deps.registry, logger: this.logger, standbyMain: deps.standby.main };
    const moved = await fenceCopies(common, lockPid, before.slots);
    const fenced = [...moved.dropped];
    const cleanup = await dropStagingSlots(common, lockPid, before.slots);
    const failed = [
      ...cleanup.failed,
      ...moved.failed.map((f) => ({ slot: f.name, error: f.error })),
    ];
    // A consumer known to be ahead of this standby's WAL would skip what the new primary
    // writes there: its copy must not be found under its name.
    await this.context.readiness.readStandby(deps.standby.main);
    const verdict = this.context.readiness.verdict({ required: null, maxAgeMs: 0 });
    const entries = new Map(deps.registry.entries);
    for (const slot of verdict.slots) {
      const entry = entries.get(slot.name);
      if (entry?.state !== 'sync_ready' || !slot.consumer_ahead) continue;
      try {
        await dropCopy(deps.standby.main, lockPid, slot.name);
        entries.delete(slot.name);
        fenced.push({ name: slot.name, reason: slot.facts.consumers.detail });
      } catch (error) {
        failed.push({ slot: slot.name, error: messageOf(error) });
      }
    }
    if (entries.size !== deps.registry.entries.size) await deps.registry.write(entries);
    if (failed.length > 0) {
      throw new SlotSyncError(
        'SLOTSYNC_SHUTDOWN_DROP',
        `could not drop copies that are not sync-ready: ${failed.map((f) => `${f.slot}: ${f.error}`).join('; ')}`,
      );
    }
    this.metrics.fenced.inc(fenced.length);
    return { dropped: [...cleanup.dropped, ...fenced.map((f) => f.name)].sort(), fenced };
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
      await this.quorum.stop();
      await this.#asking?.catch(() => undefined);
      await this.context.engine.close();
      await this.probes.close();
    })();
    return this.#closing;
  }
}

/** Settings a reload cannot change in a running process (the listener stays where it is). */
function restartOnly(old: Config, next: Config): string[] {
  const out: string[] = [];
  if (old.host !== next.host) out.push('SLOTSYNC_HOST');
  if (old.port !== next.port) out.push('SLOTSYNC_PORT');
  return out;
}
