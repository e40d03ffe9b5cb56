/** Builds what a cycle needs from the configuration, and releases it. */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { LockSession } from '../db/lock-session.js';
import { createReplicationClient } from '../db/pools.js';
import { PrimaryTargets } from '../db/primary-targets.js';
import { StandbyPools } from '../db/standby-pools.js';
import { Registry } from '../registry/registry.js';
import { slotSelector } from '../sync/select.js';
import { expandHosts } from '../urls.js';
import { CycleCache, type EngineDeps } from './cycle.js';
import { recordedPrimaryRead } from './facts.js';

export interface Engine {
  deps: EngineDeps;
  /**
   * Cancels the statements running now on the primary and the standby (the process stops:
   * a creation waiting for a consistent point is not waited for). Every step of a cycle is
   * safe to interrupt, as kill -9 is (integration/crash-points). Returns how many.
   */
  cancelInFlight(): Promise<number>;
  close(): Promise<void>;
}

/**
 * The standby's connections, whatever the number of databases: creations run two per
 * unit of SLOTSYNC_CONCURRENCY (they mostly wait for a running-xacts record), and two more
 * keep reads and drops going meanwhile. The lock session and the health probe come on top.
 */
export function standbyBudget(concurrency: number): number {
  return concurrency * 2 + 2;
}

/**
 * Connections to the primary: a cycle reads with one statement, the snapshot pump logs
 * running-xacts records beside it, the worker polls the slot digest, /health probes.
 */
const PRIMARY_CONNECTIONS = 4;

/**
 * The policies a reload changes in the running engine (no new connection needed): the
 * next cycle follows them.
 */
export function applySettings(
  engine: Engine,
  config: Pick<Config, 'replaceStale' | 'rearm' | 'resetState' | 'slotsInclude' | 'slotsExclude'>,
): void {
  engine.deps.replaceStale = config.replaceStale;
  engine.deps.rearm = config.rearm;
  engine.deps.resetState = config.resetState;
  engine.deps.selectSlot = slotSelector({
    include: config.slotsInclude,
    exclude: config.slotsExclude,
  });
  engine.deps.cache.stable = null; // the last plan was made under the old policies
}

export async function createEngine(config: Config, logger: Logger): Promise<Engine> {
  const registry = await Registry.open(config.stateDir);
  const common = {
    statementTimeoutMs: config.statementTimeoutMs,
    connectTimeoutMs: config.connectTimeoutMs,
  };
  // One host, or every node of the cluster (libpq's multi-host URL): the upstream is followed.
  const primary = new PrimaryTargets(
    expandHosts(config.primaryUrl),
    {
      ...common,
      role: 'primary',
      max: PRIMARY_CONNECTIONS,
      logger: logger.child({ component: 'primary-pool' }),
    },
    logger.child({ component: 'primary' }),
  );
  // Copies are created and advanced in parallel, over a pool per database (a logical slot
  // belongs to its database); one more session holds the sync lock.
  const standbyLogger = logger.child({ component: 'standby-pool' });
  const standby = new StandbyPools({
    ...common,
    url: config.standbyUrl,
    budget: standbyBudget(config.concurrency),
    createTimeoutMs: config.createTimeoutMs,
    logger: standbyLogger,
  });
  const lock = new LockSession({
    ...common,
    url: config.standbyUrl,
    role: 'standby',
    max: 1,
    logger: standbyLogger,
  });
  const deps: EngineDeps = {
    get primary() {
      return primary.pool;
    },
    get primaryUrl() {
      return primary.url;
    },
    primaryTargets: primary,
    standby,
    lock,
    registry,
    logger: logger.child({ component: 'sync' }),
    standbyUrl: config.standbyUrl,
    engine: config.engine,
    concurrency: config.concurrency,
    createTimeoutMs: config.createTimeoutMs,
    resetState: config.resetState,
    rearm: config.rearm,
    replaceStale: config.replaceStale,
    quorum:
      config.standbySlotsQuorum === null
        ? null
        : { slots: config.standbySlotsQuorum.slots, silentMs: config.quorumSilentMs },
    selectSlot: slotSelector({ include: config.slotsInclude, exclude: config.slotsExclude }),
    replicationClient: (database) =>
      createReplicationClient({
        ...common,
        url: config.standbyUrl,
        database,
        role: 'standby',
        max: 1,
        logger: standbyLogger,
      }),
    cache: new CycleCache(config.statementTimeoutMs),
  };
  // Readiness knows the primary's last facts from the start, also when it is gone.
  deps.cache.primaryRead = recordedPrimaryRead(registry);
  deps.cache.builtinPastRemote = registry.primary?.pastRemote ?? new Map();
  deps.cache.timelineOf(null, registry.primary?.facts.standbyTimeline ?? null);
  return {
    deps,
    cancelInFlight: async () => {
      const counts = await Promise.all([primary.cancelInFlight(), standby.cancelInFlight()]);
      return counts[0] + counts[1];
    },
    close: async () => {
      deps.cache.window.close();
      await lock.end();
      await Promise.allSettled([primary.end(), standby.end()]);
    },
  };
}
