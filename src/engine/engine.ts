/** Builds what a cycle needs from the configuration, and releases it. */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { createPool } from '../db/pools.js';
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
  // One connection holds the sync lock; the others create and advance copies in parallel.
  const standby = createPool({
    ...common,
    url: config.standbyUrl,
    role: 'standby',
    max: config.concurrency + 2,
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
