#!/usr/bin/env node
/**
 * slotsync's command line.
 *   slotsync [serve]        run the service (API + worker)
 *   slotsync sync --once    run one sync cycle and print its report as JSON
 *   slotsync gate           the readiness gate for a pre-promotion hook (gate.ts)
 *   slotsync candidates     rank the nodes an orchestrator may promote (candidates.ts)
 * `--help` on any command explains it; `--version` prints the version.
 */
import { readFileSync } from 'node:fs';
import { loadConfig, readEnvironment, secretsOf } from '../config.js';
import { SlotSyncError } from '../errors.js';
import { createLogger, STDERR } from '../logger.js';
import { redactSecrets } from '../redact.js';

const HELP: Record<string, string> = {
  serve: `usage: slotsync [serve]
  Runs the service: the HTTP API (SLOTSYNC_HOST:SLOTSYNC_PORT, 127.0.0.1:8432) and the
  background worker that keeps the copies in step. SIGHUP re-reads the configuration,
  SIGTERM/SIGINT stop gracefully.`,
  sync: `usage: slotsync sync --once
  Runs one sync cycle and prints its report as JSON. Exit 0; 3 if a slot failed or
  conflicts; 1 if the cycle could not run; 2 on bad configuration.`,
  gate: `usage: slotsync gate [--slots a,b] [--wait SECONDS] [--url http://host:8432]
  Promotion readiness for a pre-promotion hook (Patroni pre_promote, repmgr
  failover_validation_command): exit 0 when every required slot is safe to promote onto
  this standby, 1 if not (reasons on stderr), 2 on usage errors. With --url it asks the
  running slotsync (GET /ready); without, it reads the standby (and the primary, if it
  answers) itself with the environment's configuration. --wait keeps asking that long.`,
  candidates: `usage: slotsync candidates --url http://node1:8432 --url http://node2:8432 ... [--slots a,b] [--json]
  Asks the slotsync beside every node and ranks the nodes to promote: safe first, then the
  most WAL received, then the least slot lag; for each, what every consumer would see.
  Exit 0 when a safe candidate exists (its URL on the last line, "best" in JSON), 1 when
  none, 2 on usage errors. SLOTSYNC_READ_TOKEN (or SLOTSYNC_API_TOKEN) is sent as a bearer
  token when set.`,
};

const USAGE = `usage: slotsync [serve]          run the service (HTTP API and background worker)
       slotsync sync --once      run one sync cycle, print its report as JSON
       slotsync gate [--slots a,b] [--wait SECONDS] [--url http://host:8432]
                                 exit 0 when every required slot is safe to promote onto, 1 if not
       slotsync candidates --url U1 --url U2 ... [--slots a,b] [--json]
                                 rank the nodes to promote, exit 0 when one is safe
       slotsync <command> --help, slotsync --version
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

/** The package's version (package.json sits two folders up from src/cli and dist/cli). */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  return String(pkg.version);
}

async function main(argv: string[]): Promise<void> {
  const [command = 'serve', ...rest] = argv;
  if (command === '--help' || command === '-h' || command === 'help') {
    const topic = command === 'help' ? rest[0] : undefined;
    process.stdout.write(`${(topic && HELP[topic]) || USAGE}\n`);
    return;
  }
  if (command === '--version' || command === '-V' || command === 'version') {
    process.stdout.write(`slotsync ${version()}\n`);
    return;
  }
  const secrets = [process.env.SLOTSYNC_API_TOKEN ?? '', process.env.SLOTSYNC_READ_TOKEN ?? ''];
  const known = ['serve', 'sync', 'gate', 'candidates'];
  // The command line first: a typo is named before any configuration is read.
  if (!known.includes(command)) fail(usageError(`unknown command "${command}"`), secrets);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`${HELP[command]}\n`);
    return;
  }
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
  if (command === 'candidates') {
    const { parseCandidatesArgs, runCandidates } = await import('./candidates.js');
    let options: ReturnType<typeof parseCandidatesArgs>;
    try {
      options = parseCandidatesArgs(rest, process.env);
    } catch (error) {
      fail(error, secrets);
    }
    process.exitCode = await runCandidates(options).catch((error) => fail(error, secrets));
    return;
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
