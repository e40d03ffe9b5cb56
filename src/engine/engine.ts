/** Builds what a cycle needs from the configuration, and releases it. */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { createPool } from '../db/pools.js';
import { StandbyPools } from '../db/standby-pools.js';
import { Registry } from '../registry/registry.js';
import type { EngineDeps } from './cycle.js';

export interface Engine {
  deps: EngineDeps;
  close(): Promise<void>;
}

export async function createEngine(config: Config, logger: Logger): Promise<Engine> {
  const registry = await Registry.open(config.stateDir);
  const common = {
    statementTimeoutMs: config.statementTimeoutMs,
    connectTimeoutMs: config.connectTimeoutMs,
  };
  const primary = createPool({
    ...common,
    url: config.primaryUrl,
    role: 'primary',
    max: 4,
    logger: logger.child({ component: 'primary-pool' }),
  });
  // One connection holds the sync lock; the others create and advance copies in parallel,
  // over a pool per database (a logical slot belongs to its database).
  const standby = new StandbyPools({
    ...common,
    url: config.standbyUrl,
    max: config.concurrency,
    logger: logger.child({ component: 'standby-pool' }),
  });
  return {
    deps: {
      primary,
      standby,
      registry,
      logger: logger.child({ component: 'sync' }),
      primaryUrl: config.primaryUrl,
      standbyUrl: config.standbyUrl,
      concurrency: config.concurrency,
      createTimeoutMs: config.createTimeoutMs,
    },
    close: async () => {
      await Promise.allSettled([primary.end(), standby.end()]);
    },
  };
}
