/** What every suite needs around slotsync: a temporary folder, a configuration, a logger. */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Logger, pino } from 'pino';
import { type Config, loadConfig } from '../../src/config.js';
import type { Cluster } from '../support/cluster.js';

/** Silent unless SLOTSYNC_TEST_LOG names a level. */
export function testLogger(): Logger {
  return pino({ level: process.env.SLOTSYNC_TEST_LOG ?? 'silent' });
}

/** A fresh folder under the system's temporary folder; the caller removes it. */
export function tempDir(purpose: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `slotsync-${purpose}-`));
}

/**
 * slotsync's configuration for `cluster` with the state folder `stateDir`; `env` adds to or
 * overrides it. The URLs carry `password`, which tests check is never echoed.
 */
export function testConfig(
  cluster: Cluster,
  stateDir: string,
  env: Record<string, string> = {},
  password = 'not-a-secret',
): Config {
  return loadConfig({
    SLOTSYNC_PRIMARY_URL: cluster.primary.url('postgres', password),
    SLOTSYNC_STANDBY_URL: cluster.standby.url('postgres', password),
    SLOTSYNC_STATE_DIR: stateDir,
    ...env,
  });
}
