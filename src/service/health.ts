/**
 * GET /health: can the service do its job? Each check is named, with a status (pass, warn,
 * fail) and a detail; any fail makes the answer 503. Warnings never do.
 */

import type pg from 'pg';
import type { Logger } from 'pino';
import { type Config, secretsOf } from '../config.js';
import { APPLICATION_NAME, createPool } from '../db/pools.js';
import { type PrimaryProbe, probePrimary } from '../db/primary.js';
import { probeStandby, type StandbyProbe } from '../db/standby.js';
import { messageOf, SlotSyncError } from '../errors.js';
import { redactSecrets } from '../redact.js';
import { formatLsn } from '../sync/lsn.js';
import type { Quorum } from '../sync/quorum.js';
import { STALE_HINT } from '../sync/rules.js';
import { validatePrimary, validateStandby } from '../sync/validate.js';
import { type Settled, settle } from '../util.js';
import type { Snapshot } from './context.js';
import type { QuorumStatus } from './quorum.js';
import type { Worker } from './worker.js';

export type CheckStatus = 'pass' | 'warn' | 'fail';
export interface Check {
  status: CheckStatus;
  detail: string;
}
export interface HealthReport {
  status: 'pass' | 'fail';
  /** What the local node (SLOTSYNC_STANDBY_URL) is now. */
  role: 'standby' | 'primary' | 'unknown';
  checks: Record<string, Check>;
}

const PROBE_TIMEOUT_MS = 3_000;

function withTimeout<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new SlotSyncError(
            'SLOTSYNC_UNREACHABLE',
            `${what} did not answer within ${PROBE_TIMEOUT_MS} ms`,
          ),
        ),
      PROBE_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** How long /health shows that copies were fenced. */
const FENCED_SHOWN_MS = 600_000;

/** How long a health report is reused: probes cost two queries, callers may be many. */
const CACHE_MS = 1_000;

/**
 * Connections of their own, one per server, for everything that is not a cycle (GET
 * /health's probes, promotion readiness's reads): a flood of requests never takes a
 * connection a sync cycle needs. Made anew when a reload changes a URL.
 */
export class ProbePools {
  #pools: { primary: pg.Pool; standby: pg.Pool; urls: string } | undefined;

  constructor(private readonly logger: Logger) {}

  pools(config: Pick<Config, 'primaryUrl' | 'standbyUrl'>): { primary: pg.Pool; standby: pg.Pool } {
    const urls = `${config.primaryUrl}\n${config.standbyUrl}`;
    if (this.#pools?.urls !== urls) {
      void this.close();
      const common = {
        statementTimeoutMs: PROBE_TIMEOUT_MS,
        connectTimeoutMs: PROBE_TIMEOUT_MS,
        max: 1,
        logger: this.logger,
        applicationName: APPLICATION_NAME.health,
      };
      this.#pools = {
        primary: createPool({ ...common, url: config.primaryUrl, role: 'primary' }),
        standby: createPool({ ...common, url: config.standbyUrl, role: 'standby' }),
        urls,
      };
    }
    return this.#pools;
  }

  async close(): Promise<void> {
    const pools = this.#pools;
    this.#pools = undefined;
    if (pools) await Promise.allSettled([pools.primary.end(), pools.standby.end()]);
  }
}

/** What the health checks read of the service (a narrow view: no import of the service). */
export interface HealthSubject {
  readonly config: Config;
  /** The servers probed: the primary followed now (one of SLOTSYNC_PRIMARY_URL's hosts). */
  readonly targets: { primaryUrl: string; standbyUrl: string };
  readonly startedAt: number;
  readonly worker: Pick<Worker, 'state' | 'detail' | 'naptimeMs'>;
  readonly context: { readonly snapshot: Readonly<Snapshot> };
  readonly quorum: { readonly status: Readonly<QuorumStatus> };
}

/** The probes behind GET /health, run at most once a second whatever the number of callers. */
export class HealthProbes {
  #cached: { at: number; urls: string; probed: Promise<Probed> } | undefined;

  constructor(private readonly probes: ProbePools) {}

  /** The two probes, run at most once a second whatever the number of callers. */
  probe(config: { primaryUrl: string; standbyUrl: string }): Promise<Probed> {
    const now = Date.now();
    const urls = `${config.primaryUrl}\n${config.standbyUrl}`;
    // A reload that changed a URL is never answered from the old servers' probes.
    if (
      this.#cached === undefined ||
      now - this.#cached.at > CACHE_MS ||
      this.#cached.urls !== urls
    ) {
      const pools = this.probes.pools(config);
      const probed = (async (): Promise<Probed> => {
        const standby = await settle(withTimeout(probeStandby(pools.standby), 'the standby'));
        const slot = standby.ok ? standby.value.primarySlotName : '';
        const primary = await settle(withTimeout(probePrimary(pools.primary, slot), 'the primary'));
        return { standby, primary };
      })();
      this.#cached = { at: now, urls, probed };
    }
    return this.#cached.probed;
  }

  /** The report: probes from the cache, everything else (worker, cycles) as of now. */
  async report(subject: HealthSubject): Promise<HealthReport> {
    return checkHealth(subject, await this.probe(subject.targets));
  }
}

interface Probed {
  standby: Settled<StandbyProbe>;
  primary: Settled<PrimaryProbe>;
}

export function checkHealth(service: HealthSubject, probed: Probed): HealthReport {
  const config = service.config;
  const checks: Record<string, Check> = {};
  const secrets = secretsOf(config);
  const clean = (error: unknown) => redactSecrets(messageOf(error), secrets);

  let standby: StandbyProbe | undefined;
  if (probed.standby.ok) {
    standby = probed.standby.value;
    checks.standby = standby.inRecovery
      ? {
          status: 'pass',
          detail: `reachable, in recovery, replayed up to ${formatLsn(standby.replayLsn) ?? 'unknown'}`,
        }
      : {
          status: 'pass',
          detail:
            'this node is the primary (not in recovery): slotsync syncs nothing here, re-arms the copies it made and waits for the node to be a standby again',
        };
    checks.standby_privileges = standby.canManageSlots
      ? { status: 'pass', detail: 'the standby role may create, advance and drop slots' }
      : {
          status: 'fail',
          detail: 'the standby role needs REPLICATION to create, advance and drop slots',
        };
    if (standby.idleSlotTimeout !== null && !/^0\D*$/.test(standby.idleSlotTimeout)) {
      checks.idle_slot_timeout = {
        status: 'warn',
        detail: `idle_replication_slot_timeout = ${standby.idleSlotTimeout} on the standby: PostgreSQL invalidates a copy left unadvanced that long (its subscriber idle or down), and slotsync must then make it afresh, not sync-ready until the subscriber confirms again. Set it to 0 on the standby, or above the longest time a subscriber may stay away.`,
      };
    }
  } else {
    checks.standby = {
      status: 'fail',
      detail: `SLOTSYNC_STANDBY_URL: ${clean(probed.standby.error)}`,
    };
  }

  const role = standby === undefined ? 'unknown' : standby.inRecovery ? 'standby' : 'primary';
  let primary: PrimaryProbe | undefined;
  if (role === 'primary') {
    // The primary's checks are about the server this standby follows: none while it leads.
  } else if (probed.primary.ok) {
    primary = probed.primary.value;
    checks.primary = { status: 'pass', detail: 'reachable' };
  } else {
    checks.primary = {
      status: 'fail',
      detail: `SLOTSYNC_PRIMARY_URL: ${clean(probed.primary.error)}`,
    };
  }

  if (role === 'primary') {
    // Nothing to validate: no sync runs on a primary.
  } else if (standby && primary) {
    try {
      validateStandby(standby, config.engine);
      validatePrimary(primary, standby);
      checks.settings = {
        status: 'pass',
        // primary_conninfo is read only with pg_read_all_settings (it may hold a password).
        detail:
          standby.primaryConninfoSet === null
            ? 'wal_level, hot_standby_feedback and primary_slot_name are valid; primary_conninfo not checked (the role is not a member of pg_read_all_settings)'
            : 'wal_level, hot_standby_feedback, primary_slot_name and primary_conninfo are valid',
      };
    } catch (error) {
      checks.settings = { status: 'fail', detail: messageOf(error) };
    }
    const named = (primary.synchronizedStandbySlots ?? '')
      .split(',')
      .map((s) => s.trim().replace(/^"|"$/g, ''));
    checks.synchronized_standby_slots = named.includes(standby.primarySlotName)
      ? {
          status: 'pass',
          detail: `the primary's synchronized_standby_slots names "${standby.primarySlotName}"`,
        }
      : {
          status: 'warn',
          detail: `the primary's synchronized_standby_slots does not name "${standby.primarySlotName}": logical subscribers may receive changes this standby has not replayed, and copies then wait (or are skipped) until it catches up`,
        };
  } else {
    checks.settings = { status: 'fail', detail: 'cannot be checked while a server is unreachable' };
  }

  const state = service.worker.state;
  const detail = service.worker.detail;
  checks.worker =
    state === 'running'
      ? { status: 'pass', detail: `running, naptime ${service.worker.naptimeMs} ms` }
      : state === 'disabled'
        ? { status: 'pass', detail: 'SLOTSYNC_WORKER=off: syncing is left to POST /sync' }
        : state === 'primary'
          ? { status: 'pass', detail: detail ?? 'this node is the primary: nothing to sync' }
          : state === 'stopped_shutdown'
            ? {
                status: 'fail',
                detail:
                  'stopped by POST /shutdown (promotion): no sync will run again in this process',
              }
            : state === 'restarting'
              ? {
                  status: 'fail',
                  detail: `the last cycle failed, restarting after ${config.restartIntervalMs} ms: ${clean(detail)}`,
                }
              : { status: 'fail', detail: 'not running' };

  const snapshot = service.context.snapshot;
  const now = Date.now();
  const maxAge = Math.max(60_000, 3 * config.naptimeMaxMs + config.restartIntervalMs);
  if (role === 'primary' || snapshot.lastError?.code === 'SLOTSYNC_STANDBY_NOT_IN_RECOVERY') {
    checks.last_cycle = { status: 'pass', detail: 'this node is the primary: no cycle runs' };
  } else if (snapshot.lastError && (snapshot.lastSuccessAt ?? 0) < snapshot.lastError.at) {
    checks.last_cycle = {
      status: 'fail',
      detail: `the last cycle failed ${Math.round((now - snapshot.lastError.at) / 1000)} s ago: ${clean(snapshot.lastError.message)}`,
    };
  } else if (snapshot.lastSuccessAt !== undefined) {
    const age = now - snapshot.lastSuccessAt;
    checks.last_cycle = {
      status: config.worker && state === 'running' && age > maxAge ? 'fail' : 'pass',
      detail: `last successful cycle ${(age / 1000).toFixed(1)} s ago`,
    };
  } else {
    const waited = now - service.startedAt;
    checks.last_cycle = {
      status: config.worker && waited > maxAge ? 'fail' : config.worker ? 'warn' : 'pass',
      detail: 'no cycle has completed yet',
    };
  }

  const views = snapshot.lastResult?.views ?? [];
  const conflicted = views.filter((v) => v.state === 'conflict');
  const conflicts = conflicted.map((v) => v.name);
  const stale = conflicted.filter((v) => v.reason?.includes(STALE_HINT)).map((v) => v.name);
  checks.conflicts =
    conflicts.length === 0
      ? { status: 'pass', detail: 'no slot of the same name blocks a copy' }
      : {
          status: 'fail',
          detail: `slots of the same name exist on the standby and are not slotsync's, so these are not protected: ${conflicts.join(', ')}${stale.length > 0 ? ` (${stale.join(', ')}: left from before a switchover; SLOTSYNC_REPLACE_STALE=on would drop them and stage fresh copies)` : ''}`,
        };

  if (snapshot.snapshotRefused) {
    checks.standby_snapshot = {
      status: 'warn',
      detail: `pg_log_standby_snapshot() is refused on the primary (${snapshot.snapshotRefused}): copies are still made but wait up to 15 s for the next running-xacts record. GRANT EXECUTE ON FUNCTION pg_log_standby_snapshot() to the primary role.`,
    };
  }

  if (snapshot.promotion) {
    const { dropped, failed: left, rearmed, rearmFailed, notRearmed, ended } = snapshot.promotion;
    const rearm = !config.rearm
      ? '; failover was not turned on for the copies (SLOTSYNC_REARM=off): ALTER SUBSCRIPTION … SET (failover = true) on each subscriber'
      : [
          rearmed.length > 0 ? `; failover turned on for: ${rearmed.join(', ')}` : '',
          ended.length > 0
            ? ` (walsenders ended to do it, their consumers reconnect and resume: ${ended.map((e) => `${e.slot} pid ${e.pid}`).join(', ')})`
            : '',
          rearmFailed.length > 0
            ? `; failover could not be turned on yet for: ${rearmFailed.map((f) => `${f.slot} (${f.error})`).join(', ')}`
            : '',
          notRearmed.length > 0
            ? `; not re-armed: ${notRearmed.map((n) => `${n.slot} (${n.reason})`).join(', ')}`
            : '',
        ].join('');
    checks.promotion = {
      status: left.length > 0 || rearmFailed.length > 0 ? 'fail' : 'warn',
      detail:
        left.length > 0
          ? `the standby was promoted; these staging slots could not be dropped and must be dropped by hand: ${left.map((f) => f.slot).join(', ')}${rearm}`
          : `the standby was promoted; ${dropped.length} staging slot(s) of copies that were not sync-ready were dropped${dropped.length > 0 ? `: ${dropped.join(', ')}` : ''}${rearm}`,
    };
  }

  if (snapshot.fenced && now - snapshot.fenced.at < FENCED_SHOWN_MS) {
    const { dropped, failed: stuck } = snapshot.fenced;
    checks.fencing = {
      status: stuck.length > 0 ? 'fail' : 'warn',
      detail: [
        ...dropped.map((f) => `${f.name}: ${f.reason}`),
        ...stuck.map((f) => `${f.name}: could not be dropped (${f.error}); it is not sync-ready`),
      ].join('; '),
    };
  }

  if (config.standbySlotsQuorum !== null) {
    checks.standby_slots_quorum = quorumCheck(config.standbySlotsQuorum, service.quorum.status);
  }

  const last = snapshot.lastResult;
  if (last && last.catchingUp > 0) {
    const behind = last.views.reduce((sum, v) => sum + (v.lag_bytes ?? 0), 0);
    checks.catch_up = {
      status: 'warn',
      detail: `catching up: ${last.catchingUp} cop${last.catchingUp === 1 ? 'y moves' : 'ies move'} in steps that fit within SLOTSYNC_STATEMENT_TIMEOUT_MS, ${(behind / 1048576).toFixed(1)} MB behind in all (slotsync_slot_lag_bytes shows it falling)`,
    };
  }
  if (last?.builtin && role !== 'primary') {
    const { builtin } = last;
    const how = builtin.driven
      ? 'slotsync calls pg_sync_replication_slots() each cycle (sync_replication_slots = off)'
      : `PostgreSQL's slot sync worker copies the slots (sync_replication_slots = on; worker ${builtin.workerRunning === null ? 'not visible' : builtin.workerRunning ? 'running' : 'not running'}${builtin.bridged ? ', slotsync calls pg_sync_replication_slots() meanwhile' : ''})`;
    checks.builtin = builtin.stuck
      ? { status: 'fail', detail: `${how}: stuck: ${builtin.stuck}` }
      : builtin.workerDown
        ? { status: 'warn', detail: `${how}: ${builtin.workerDown}` }
        : {
            status: 'pass',
            detail: `${how}; ${builtin.synced} persistent synced cop${builtin.synced === 1 ? 'y' : 'ies'}`,
          };
  }
  if (last && last.remote.length === 0 && last.excluded.length > 0) {
    checks.selection = {
      status: 'warn',
      detail: `SLOTSYNC_SLOTS_INCLUDE/SLOTSYNC_SLOTS_EXCLUDE leave out every failover slot of the primary (${last.excluded.join(', ')}): nothing is copied or required`,
    };
  }

  const failed = Object.values(checks).some((c) => c.status === 'fail');
  return { status: failed ? 'fail' : 'pass', role, checks };
}

/** What the quorum for synchronized_standby_slots does here (SLOTSYNC_STANDBY_SLOTS_QUORUM). */
function quorumCheck(quorum: Quorum, status: Readonly<QuorumStatus>): Check {
  const named = `ANY ${quorum.k} (${quorum.slots.join(', ')})`;
  if (status.problem !== null) return { status: 'fail', detail: `${named}: ${status.problem}` };
  if (status.error !== null) {
    return { status: 'warn', detail: `${named}: the primary cannot be asked now: ${status.error}` };
  }
  const last = status.lastChange;
  const change =
    last === null
      ? 'no change made by this process'
      : `last change ${Math.round((Date.now() - last.at) / 1000)} s ago: ${last.from.join(',') || '(empty)'} -> ${last.to.join(',')} (${last.reasons.join('; ')})`;
  const mine =
    status.participant === null
      ? ''
      : status.participant.acknowledged
        ? `; this standby's slot ${status.participant.slot} is being removed (acknowledged: not safe to promote onto)`
        : `; this standby's slot is ${status.participant.slot}`;
  return {
    status: 'pass',
    detail: status.manager
      ? `${named}: managed by this process: synchronized_standby_slots = ${status.current.join(',') || '(empty)'}${status.pending.length > 0 ? `, removal of ${status.pending.join(', ')} waiting for acknowledgement` : ''}; ${status.changes} change(s), ${change}${mine}`
      : `${named}: managed by another slotsync${mine}`,
  };
}
