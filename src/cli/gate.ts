/**
 * `slotsync gate [--slots a,b] [--wait SECONDS] [--url http://host:8432]`: the readiness
 * gate for an orchestrator's pre-promotion hook (Patroni's `pre_promote`, repmgr's
 * `failover_validation_command`). With `--url` it asks a running slotsync (GET /ready);
 * without, it runs cycles itself with the database URLs of the environment. It waits up to
 * `--wait` seconds for every required slot to be sync-ready.
 * Exit code: 0 ready, 1 not ready (names and reasons on stderr), 2 usage or configuration.
 */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { runCycle } from '../engine/cycle.js';
import { createEngine } from '../engine/engine.js';
import { messageOf, SlotSyncError } from '../errors.js';
import { type Readiness, readiness, slotList } from '../sync/ready.js';
import { delay } from '../util.js';

export const GATE_USAGE =
  'usage: slotsync gate [--slots a,b] [--wait SECONDS] [--url http://host:8432]';

/** How often the gate asks again while it waits. */
const POLL_MS = 500;

export interface GateOptions {
  slots: string[] | null;
  waitMs: number;
  url: string | undefined;
}

function usage(problem: string): SlotSyncError {
  return new SlotSyncError('SLOTSYNC_CONFIG', `gate: ${problem}\n${GATE_USAGE}`);
}

export function parseGateArgs(args: readonly string[]): GateOptions {
  const options: GateOptions = { slots: null, waitMs: 0, url: undefined };
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = (args[i] as string).split(/=(.*)/s, 2) as [string, string | undefined];
    const value = inline ?? args[++i];
    if (value === undefined) throw usage(`${flag} needs a value`);
    if (flag === '--slots') options.slots = slotList(value);
    else if (flag === '--wait') {
      const seconds = Number(value);
      if (!/^\d+(\.\d+)?$/.test(value) || seconds > 3600) {
        throw usage(`--wait needs seconds between 0 and 3600, got "${value}"`);
      }
      options.waitMs = seconds * 1000;
    } else if (flag === '--url') {
      if (!/^https?:\/\/[^/]+/.test(value))
        throw usage(`--url needs http(s)://host:port, got "${value}"`);
      options.url = value.replace(/\/+$/, '');
    } else throw usage(`unknown option ${flag}`);
  }
  return options;
}

/** Asks a running slotsync. An unreachable one is "not ready": nothing proves the copies. */
async function askService(options: GateOptions): Promise<Readiness> {
  const query = options.slots ? `?slots=${encodeURIComponent(options.slots.join(','))}` : '';
  try {
    const answer = await fetch(`${options.url}/ready${query}`, {
      signal: AbortSignal.timeout(5_000),
    });
    return (await answer.json()) as Readiness;
  } catch (error) {
    return {
      ready: false,
      required: options.slots ?? [],
      not_ready: [],
      age_ms: null,
      reason: `slotsync at ${options.url} did not answer: ${messageOf(error)}`,
    };
  }
}

/** Runs cycles itself; a cycle another slotsync process holds the lock for is retried. */
async function askCycles(
  options: GateOptions,
  config: Config,
  logger: Logger,
  deadline: number,
): Promise<Readiness> {
  const engine = await createEngine(config, logger);
  try {
    let last: Readiness | undefined;
    for (;;) {
      try {
        const result = await runCycle(engine.deps);
        last = readiness(result.views, options.slots ?? config.requiredSlots, 0, 0);
      } catch (error) {
        if ((error as SlotSyncError).code !== 'SLOTSYNC_CONCURRENT') throw error;
      }
      if (last?.ready || Date.now() >= deadline) {
        return (
          last ?? {
            ready: false,
            required: options.slots ?? [],
            not_ready: [],
            age_ms: null,
            reason: 'another slotsync process held the sync lock the whole time',
          }
        );
      }
      await delay(Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
    }
  } finally {
    await engine.close();
  }
}

export async function runGate(
  options: GateOptions,
  loadConfig: () => Config,
  logger: () => Logger,
): Promise<number> {
  const deadline = Date.now() + options.waitMs;
  let answer: Readiness;
  if (options.url !== undefined) {
    for (;;) {
      answer = await askService(options);
      if (answer.ready || Date.now() >= deadline) break;
      await delay(Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
    }
  } else {
    answer = await askCycles(options, loadConfig(), logger(), deadline);
  }
  if (answer.ready) {
    process.stdout.write(`ready: ${answer.required.join(', ') || '(no failover slot)'}\n`);
    return 0;
  }
  if (answer.reason) process.stderr.write(`slotsync gate: not ready: ${answer.reason}\n`);
  for (const slot of answer.not_ready) {
    process.stderr.write(`slotsync gate: not ready: ${slot.name}: ${slot.reason}\n`);
  }
  return 1;
}
