#!/usr/bin/env node
/**
 * slotsync's command line.
 *   slotsync                run the service (API + worker)
 *   slotsync sync --once    run one sync cycle and print its report as JSON
 *   slotsync gate           the readiness gate for a pre-promotion hook (gate.ts)
 */
import { readFileSync } from 'node:fs';
import { loadConfig, readEnvironment, secretsOf } from '../config.js';
import { SlotSyncError } from '../errors.js';
import { createLogger, STDERR } from '../logger.js';
import { redactSecrets } from '../redact.js';

const USAGE = `usage: slotsync [serve]          run the service (HTTP API and background worker)
       slotsync sync --once      run one sync cycle, print its report as JSON
       slotsync gate [--slots a,b] [--wait SECONDS] [--url http://host:8432]
                                 exit 0 when every required slot is sync-ready, 1 if not
Configuration comes from the environment (SLOTSYNC_PRIMARY_URL, SLOTSYNC_STANDBY_URL, ...);
see the README.`;

/** A command line slotsync does not understand: exit code 2, as for bad configuration. */
function usageError(problem: string): SlotSyncError {
  return new SlotSyncError('SLOTSYNC_CONFIG', `${problem}\n${USAGE}`);
}

function fail(error: unknown, secrets: string[]): never {
  const message = redactSecrets(error instanceof Error ? error.message : String(error), secrets);
  const hint = error instanceof SlotSyncError && error.hint ? `\nhint: ${error.hint}` : '';
  process.stderr.write(`slotsync: ${message}${hint}\n`);
  process.exit(error instanceof SlotSyncError && error.code === 'SLOTSYNC_CONFIG' ? 2 : 1);
}

async function main(argv: string[]): Promise<void> {
  const [command = 'serve', ...rest] = argv;
  if (command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const secrets = [process.env.SLOTSYNC_API_TOKEN ?? ''];
  if (command === 'gate') {
    const { parseGateArgs, runGate } = await import('./gate.js');
    let options: ReturnType<typeof parseGateArgs>;
    try {
      options = parseGateArgs(rest);
    } catch (error) {
      fail(error, secrets);
    }
    const load = () =>
      loadConfig(readEnvironment(process.env, (path) => readFileSync(path, 'utf8')));
    process.exitCode = await runGate(options, load, () =>
      createLogger('warn', STDERR, secretsOf(load())),
    ).catch((error) => fail(error, secrets));
    return;
  }
  // The command line first: a typo is named before any configuration is read.
  if (command !== 'sync' && command !== 'serve') {
    fail(usageError(`unknown command "${command}"`), secrets);
  }
  if (command === 'sync' && !rest.includes('--once'))
    fail(usageError('sync needs --once'), secrets);
  let config: ReturnType<typeof loadConfig>;
  try {
    config = loadConfig(readEnvironment(process.env, (path) => readFileSync(path, 'utf8')));
  } catch (error) {
    fail(error, secrets);
  }
  const allSecrets = secretsOf(config);
  if (command === 'sync') {
    const { syncOnce } = await import('./sync-once.js');
    process.exitCode = await syncOnce(
      config,
      createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel, STDERR, allSecrets),
    ).catch((error) => fail(error, allSecrets));
    return;
  }
  const { serve } = await import('../service/server.js');
  await serve(config).catch((error) => fail(error, allSecrets));
}

await main(process.argv.slice(2));
