/**
 * `slotsync gate [--slots a,b] [--wait SECONDS] [--url http://host:8432]`: the readiness
 * gate for an orchestrator's pre-promotion hook (Patroni's `pre_promote`, repmgr's
 * `failover_validation_command`). With `--url` it asks a running slotsync (GET /ready);
 * without, it runs a cycle itself with the database URLs of the environment and answers
 * from the standby alone when the primary does not answer. Either way the answer is the
 * one definition of "safe to promote" (sync/safety.ts), read at the moment of asking: a
 * primary that is gone does not make a safe promotion wait, however long ago it died.
 * It waits up to `--wait` seconds for every required slot to be safe.
 * Exit code: 0 safe, 1 not (names and reasons on stderr), 2 usage or configuration.
 */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { runCycle } from '../engine/cycle.js';
import { createEngine } from '../engine/engine.js';
import { Readiness } from '../engine/readiness.js';
import { messageOf, SlotSyncError } from '../errors.js';
import type { Safety } from '../sync/safety.js';
import { slotList } from '../sync/select.js';
import { delay } from '../util.js';

/** As the service's default (service.ts READY_MAX_AGE_MS): a fresh read is needed anyway. */
const MAX_AGE_MS = 5_000;
/**
 * A gate in a pre-promotion hook answers quickly: a primary that does not take a connection
 * within this long counts as not answering (the answer then rests on the standby alone).
 */
const GATE_CONNECT_TIMEOUT_MS = 2_000;

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
async function askService(options: GateOptions): Promise<Safety> {
  const query = options.slots ? `?slots=${encodeURIComponent(options.slots.join(','))}` : '';
  try {
    const answer = await fetch(`${options.url}/ready${query}`, {
      signal: AbortSignal.timeout(10_000),
    });
    return (await answer.json()) as Safety;
  } catch (error) {
    return notAnswered(options, `slotsync at ${options.url} did not answer: ${messageOf(error)}`);
  }
}

function notAnswered(options: GateOptions, reason: string): Safety {
  return {
    ready: false,
    required: options.slots ?? [],
    not_ready: [],
    age_ms: null,
    reason,
    role: 'unknown',
    receive_lsn: null,
    replay_lsn: null,
    timeline: null,
    diverged: null,
    primary: { reachable: false, age_ms: null, waits_for_standby: null, detail: reason },
    slots: [],
  };
}

/**
 * Runs a cycle itself, then reads the standby (and the primary if it answers): a cycle that
 * fails because the primary is gone still leaves the answer to the standby and the
 * registry's record. A cycle another slotsync process holds the lock for is not waited for.
 */
async function askCycles(
  options: GateOptions,
  config: Config,
  logger: Logger,
  deadline: number,
): Promise<Safety> {
  const engine = await createEngine(
    { ...config, connectTimeoutMs: Math.min(config.connectTimeoutMs, GATE_CONNECT_TIMEOUT_MS) },
    logger,
  );
  const readiness = new Readiness(engine);
  const pools = { standby: engine.deps.standby.main, primary: engine.deps.primary };
  try {
    for (;;) {
      try {
        readiness.recordCycle(await runCycle(engine.deps));
      } catch (error) {
        logger.debug({ err: messageOf(error) }, 'gate: the cycle did not complete');
      }
      const answer = await readiness.ask(pools, {
        required: options.slots ?? config.requiredSlots,
        maxAgeMs: MAX_AGE_MS,
      });
      if (answer.ready || Date.now() >= deadline) return answer;
      await delay(Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
    }
  } finally {
    await engine.close();
  }
}

/** One line per slot: the verdict and the facts it rests on, with their age. */
export function describe(answer: Safety): string[] {
  const lines: string[] = [];
  const age = (ms: number | null) =>
    ms === null ? 'never' : ms < 1_000 ? `${ms} ms ago` : `${Math.round(ms / 1_000)} s ago`;
  for (const slot of answer.slots ?? []) {
    if (slot.safe) {
      lines.push(
        `${slot.name}: safe: ${slot.facts.unmoved.detail} (read ${age(slot.facts.unmoved.age_ms)}); ${slot.facts.consumers.detail} (read ${age(slot.facts.consumers.age_ms)})`,
      );
    } else {
      lines.push(`${slot.name}: not safe: ${slot.reason ?? 'unknown'}`);
    }
  }
  return lines;
}

export async function runGate(
  options: GateOptions,
  loadConfig: () => Config,
  logger: () => Logger,
): Promise<number> {
  const deadline = Date.now() + options.waitMs;
  let answer: Safety;
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
    for (const line of describe(answer)) process.stdout.write(`  ${line}\n`);
    return 0;
  }
  if (answer.reason) process.stderr.write(`slotsync gate: not ready: ${answer.reason}\n`);
  for (const slot of answer.not_ready ?? []) {
    process.stderr.write(`slotsync gate: not ready: ${slot.name}: ${slot.reason}\n`);
  }
  return 1;
}
