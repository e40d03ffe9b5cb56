/** The OpenAPI document as the app generates it (committed under openapi/, compared in a test). */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../config.js';
import { buildApp } from './app.js';
import { SlotSyncService } from './service.js';

export async function generateOpenApi(): Promise<string> {
  const stateDir = await mkdtemp(join(tmpdir(), 'slotsync-openapi-'));
  // Pools connect lazily: nothing is contacted to describe the routes.
  const config = loadConfig({
    SLOTSYNC_PRIMARY_URL: 'postgres://localhost:1/postgres',
    SLOTSYNC_STANDBY_URL: 'postgres://localhost:1/postgres',
    SLOTSYNC_STATE_DIR: stateDir,
    SLOTSYNC_WORKER: 'off',
  });
  const service = await SlotSyncService.create(config, pino({ level: 'silent' }));
  const app = await buildApp({ service });
  try {
    await app.ready();
    return `${JSON.stringify(app.swagger(), null, 2)}\n`;
  } finally {
    await app.close(); // closes the service too
    await rm(stateDir, { recursive: true, force: true });
  }
}
