/** A slotsync service and its app, built in-process against a real cluster. */
import { rm } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/service/app.js';
import { SlotSyncService } from '../../src/service/service.js';
import type { Cluster } from '../support/cluster.js';
import type { PgServer } from '../support/server.js';
import { dropNodeMarkers, holdNextCycle as holdCycleOf } from './harness.js';
import { tempDir, testConfig, testLogger } from './setup.js';

export const TOKEN = 'test-token-0123456789abcdef';

export interface ServiceUnderTest {
  service: SlotSyncService;
  app: FastifyInstance;
  stateDir: string;
  close(): Promise<void>;
}

export async function startService(
  cluster: Cluster,
  env: Record<string, string> = {},
  options: { syncRatePerSecond?: number; standby?: PgServer } = {},
): Promise<ServiceUnderTest> {
  const stateDir = await tempDir('svc');
  const standby = options.standby ?? cluster.standby;
  await dropNodeMarkers(cluster, standby); // a new deployment with a new state folder
  const config = testConfig(
    cluster,
    stateDir,
    {
      SLOTSYNC_STANDBY_URL: standby.url('postgres', 'svc-secret-pw'),
      SLOTSYNC_WORKER: 'off',
      SLOTSYNC_NAPTIME_MIN_MS: '20',
      SLOTSYNC_NAPTIME_MAX_MS: '200',
      SLOTSYNC_RESTART_INTERVAL_MS: '200',
      ...env,
    },
    'svc-secret-pw',
  );
  const service = await SlotSyncService.create(config, testLogger());
  const app = await buildApp({ service, syncRatePerSecond: options.syncRatePerSecond ?? 1000 });
  await app.ready();
  service.start();
  return {
    service,
    app,
    stateDir,
    close: async () => {
      await app.close(); // closes the service too
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Holds the service's next cycle between its reads and its actions (see harness). */
export function holdNextCycle(s: ServiceUnderTest): { reached: () => boolean; open: () => void } {
  return holdCycleOf(s.service.context.engine.deps);
}
