/** A slotsync service and its app, built in-process against a real cluster. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import { buildApp } from '../../src/service/app.js';
import { SlotSyncService } from '../../src/service/service.js';
import type { Cluster } from '../support/cluster.js';
import { dropNodeMarkers, holdNextCycle as holdCycleOf } from './harness.js';

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
  options: { syncRatePerSecond?: number } = {},
): Promise<ServiceUnderTest> {
  const stateDir = await mkdtemp(join(tmpdir(), 'slotsync-svc-'));
  await dropNodeMarkers(cluster); // a new deployment with a new state folder
  const config = loadConfig({
    SLOTSYNC_PRIMARY_URL: cluster.primary.url('postgres', 'svc-secret-pw'),
    SLOTSYNC_STANDBY_URL: cluster.standby.url('postgres', 'svc-secret-pw'),
    SLOTSYNC_STATE_DIR: stateDir,
    SLOTSYNC_WORKER: 'off',
    SLOTSYNC_NAPTIME_MIN_MS: '20',
    SLOTSYNC_NAPTIME_MAX_MS: '200',
    SLOTSYNC_RESTART_INTERVAL_MS: '200',
    ...env,
  });
  const logger = pino({ level: process.env.SLOTSYNC_TEST_LOG ?? 'silent' });
  const service = await SlotSyncService.create(config, logger);
  const app = await buildApp({ service, syncRatePerSecond: options.syncRatePerSecond ?? 1000 });
  await app.ready();
  service.start();
  return {
    service,
    app,
    stateDir,
    close: async () => {
      await app.close();
      await service.close();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Holds the service's next cycle between its reads and its actions (see harness). */
export function holdNextCycle(s: ServiceUnderTest): { reached: () => boolean; open: () => void } {
  return holdCycleOf(s.service.context.engine.deps);
}
