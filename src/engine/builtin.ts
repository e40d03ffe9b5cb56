/**
 * The cycle's work under SLOTSYNC_ENGINE=builtin, once the standby and the primary are read
 * and the primary's facts recorded (the same steps as over SQL): PostgreSQL copies the
 * slots; slotsync drives pg_sync_replication_slots() when the server's worker is off,
 * clears what stops the server's sync (its own copies left from SLOTSYNC_ENGINE=sql, a
 * provably stale same-name slot under SLOTSYNC_REPLACE_STALE), and says why a slot has no
 * usable copy. It never creates, moves or drops a slot PostgreSQL syncs.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { dropCopy, readStandby, type StandbyState } from '../db/standby.js';
import type { StandbyPools } from '../db/standby-pools.js';
import { messageOf } from '../errors.js';
import { type PastRemote, samePastRemote } from '../registry/primary-facts.js';
import type { Registry } from '../registry/registry.js';
import { builtinSetupProblem, planBuiltin, workerProblem } from '../sync/builtin.js';
import { type Lsn, parseLsn } from '../sync/lsn.js';
import { isOwnedCopy, mayHavePublishedCopy } from '../sync/rules.js';
import type { LocalSlot, RemoteSlot, SlotReport } from '../sync/types.js';

/** What the built-in slot sync is doing on this standby, as the last cycle saw it. */
export interface BuiltinStatus {
  /** slotsync calls pg_sync_replication_slots() (sync_replication_slots = off). */
  driven: boolean;
  /** The worker is on but not running: slotsync called pg_sync_replication_slots() meanwhile. */
  bridged: boolean;
  /** When slotsync last called pg_sync_replication_slots() (ms since the epoch), else null. */
  calledAt: number | null;
  /** A 'slotsync worker' backend runs on the standby (null: not known). */
  workerRunning: boolean | null;
  /** Why PostgreSQL's slot sync copies nothing or stops for every slot, else null. */
  stuck: string | null;
  /** sync_replication_slots = on and no worker runs now (PostgreSQL restarts it), else null. */
  workerDown: string | null;
  /** How many slots PostgreSQL's slot sync keeps for the primary's failover slots, persistent. */
  synced: number;
}

export interface BuiltinDeps {
  standby: StandbyPools;
  registry: Registry;
  logger: Logger;
  replaceStale: boolean;
  /** When slotsync last called pg_sync_replication_slots() (kept across cycles). */
  cache: {
    builtinCalledAt: number;
    builtinError: string | null;
    builtinPastRemote: PastRemote;
  };
  primary: pg.Pool;
}

/**
 * pg_sync_replication_slots() at most this often. Each call connects to the primary, and
 * while one runs PostgreSQL's worker cannot start (it stops with "cannot synchronize
 * replication slots concurrently" and is started again only about a minute later): calls
 * spaced out leave an operator who turns sync_replication_slots on little chance of meeting
 * one.
 */
export const DRIVE_INTERVAL_MS = 1_000;

const WORKER_RUNNING = `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity
                        WHERE backend_type = 'slotsync worker') AS running`;

export async function builtinStep(
  deps: BuiltinDeps,
  standby: StandbyState,
  local: readonly LocalSlot[],
  remote: readonly RemoteSlot[],
): Promise<{ reports: SlotReport[]; local: LocalSlot[]; updated: boolean; status: BuiltinStatus }> {
  const pool = deps.standby.main;
  const settings = {
    syncReplicationSlots: standby.syncReplicationSlots,
    walLevel: standby.walLevel,
    hotStandbyFeedback: standby.hotStandbyFeedback,
    primarySlotName: standby.primarySlotName,
    primaryConninfoSet: standby.primaryConninfoSet,
    conninfoDbname: standby.conninfoDbname,
  };
  const setup = builtinSetupProblem(settings);
  // slotsync's own copies (SLOTSYNC_ENGINE=sql before) go only once PostgreSQL's sync can run:
  // until then they are the only copies this standby has.
  let cleared = setup === null ? await dropOwnCopies(deps, standby.pid, local) : false;
  let changed = cleared;
  const plan = (slots: readonly LocalSlot[]) =>
    planBuiltin({
      remote,
      local: slots,
      standbyReplayLsn: standby.replayLsn ?? 0n,
      replaceStale: deps.replaceStale,
      standbyStartedAt: standby.startedAt.getTime(),
    });
  const first = plan(local);
  for (const name of first.replace) {
    await dropCopy(pool, standby.pid, name);
    deps.logger.warn(
      { slot: name },
      first.reports.find((r) => r.name === name)?.reason ?? 'replaced',
    );
    changed = true;
    cleared = true;
  }
  const running = await pool
    .query<{ running: boolean }>(WORKER_RUNNING)
    .then((r) => r.rows[0]?.running ?? null)
    .catch(() => null);
  // slotsync drives the sync when the worker is off (at most every DRIVE_INTERVAL_MS). With
  // the worker on, only once right after it removed what stopped the worker: the worker is
  // then in its restart wait (PostgreSQL starts it again when its postmaster next wakes, up
  // to about a minute later), and one call makes the copies of a quiet primary at once.
  const due = Date.now() - deps.cache.builtinCalledAt >= DRIVE_INTERVAL_MS;
  const driven =
    setup === null &&
    (standby.syncReplicationSlots ? running === false && cleared : due || cleared);
  if (driven) {
    deps.cache.builtinCalledAt = Date.now();
    deps.cache.builtinError = null;
    // One pass of synchronize_slots() in this session; a slot whose remote has not caught up
    // stays temporary and is dropped as the call ends (made again by the next call).
    await pool.query('SELECT pg_catalog.pg_sync_replication_slots()').catch((error: unknown) => {
      const message = messageOf(error);
      // The worker started meanwhile: it syncs, nothing is wrong.
      if (!/concurrently|worker is running/i.test(message)) {
        deps.cache.builtinError = `pg_sync_replication_slots() failed: ${message}`;
      }
    });
    changed = true;
  }
  const after = changed ? (await readStandby(pool)).slots : [...local];
  // Something happened to the copies (not merely a call that changed nothing): the worker's
  // naptime stays short while it does, and grows while nothing does.
  const shape = (slots: readonly LocalSlot[]) =>
    slots
      .filter((slot) => slot.synced)
      .map((slot) => `${slot.name}/${slot.temporary}/${slot.invalidationReason}`)
      .sort()
      .join(',');
  const moved = cleared || shape(after) !== shape(local);
  // No new comparison (the primary did not answer): what memory holds is still written if
  // the disk lacks it (a failed write, a record started afresh).
  const evidence = await pastRemoteNow(deps.primary, after);
  await keepPastRemote(deps, evidence ?? deps.cache.builtinPastRemote);
  const final = plan(after);
  const reports = final.reports.map((report) =>
    first.replace.includes(report.name) && report.action !== 'replaced'
      ? { ...report, action: 'replaced' as const }
      : report,
  );
  return {
    reports,
    local: after,
    updated: moved,
    status: {
      driven: !standby.syncReplicationSlots,
      bridged: driven && standby.syncReplicationSlots,
      calledAt: deps.cache.builtinCalledAt === 0 ? null : deps.cache.builtinCalledAt,
      workerRunning: running,
      stuck:
        setup ??
        final.blocked ??
        (standby.syncReplicationSlots && !driven ? null : deps.cache.builtinError),
      workerDown: workerProblem(settings, running),
      synced: reports.filter((r) => r.state === 'sync_ready').length,
    },
  };
}

/**
 * Switching from SLOTSYNC_ENGINE=sql: slotsync's own copies are same-name slots that are
 * not synced, and one of them stops PostgreSQL's slot sync for every slot. They are all
 * dropped at once (the shortest "not safe" window: the server then copies every slot in
 * the same pass) and forgotten. The gate says "not safe" until the server's copy is
 * persistent: no copy is ever called safe in between.
 */
async function dropOwnCopies(
  deps: BuiltinDeps,
  lockPid: number,
  local: readonly LocalSlot[],
): Promise<boolean> {
  const { registry } = deps;
  if (registry.entries.size === 0) return false;
  const byName = new Map(local.map((slot) => [slot.name, slot]));
  const names: string[] = [];
  for (const entry of registry.entries.values()) {
    const published = byName.get(entry.name);
    if (published && mayHavePublishedCopy(entry) && isOwnedCopy(published, entry)) {
      names.push(entry.name);
    }
    const stage = byName.get(entry.stagingName);
    if (stage && isOwnedCopy(stage, entry)) names.push(entry.stagingName);
  }
  // Dropped first: a kill in between leaves records of slots that are gone (forgotten by
  // the next cycle), never an unrecorded copy in the way of PostgreSQL's slot sync.
  for (const name of names) await dropCopy(deps.standby.main, lockPid, name);
  await registry.write(new Map());
  deps.logger.warn(
    { dropped: names },
    "SLOTSYNC_ENGINE=builtin: slotsync's own copies were dropped so that PostgreSQL's slot sync makes its own (not safe until they are persistent)",
  );
  return true;
}

/**
 * The evidence of pastRemoteNow(), kept in memory and with the primary's facts on disk: a
 * restart with the primary gone still knows it. What it takes away counts at once, in
 * memory; what it gives back only once written.
 */
async function keepPastRemote(deps: BuiltinDeps, next: PastRemote): Promise<void> {
  const before = deps.cache.builtinPastRemote;
  if ([...next.keys()].some((name) => !before.has(name))) {
    deps.cache.builtinPastRemote = new Map([...before, ...next]);
  }
  await deps.registry.writePrimary((recorded) =>
    recorded === null || samePastRemote(recorded.pastRemote, next)
      ? undefined
      : { ...recorded, pastRemote: next },
  );
  deps.cache.builtinPastRemote = next;
}

/**
 * The synced copies whose remote slot is behind them, judged the right way round: the
 * standby was read (`local`) before this read of the primary, and a remote slot's position
 * only grows, so a remote behind the copy was made again behind it. A read of the primary
 * that fails proves nothing: none is reported (the primary's absence is the consumers'
 * fact's business).
 */
async function pastRemoteNow(
  primary: pg.Pool,
  local: readonly LocalSlot[],
): Promise<Map<string, { copy: Lsn; remote: Lsn }> | null> {
  const copies = local.filter((slot) => slot.synced && slot.confirmedFlushLsn !== null);
  const out = new Map<string, { copy: Lsn; remote: Lsn }>();
  if (copies.length === 0) return out;
  const row = await primary
    .query<{ in_recovery: boolean; slots: Record<string, string | null> | null }>(
      `SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
              (SELECT pg_catalog.json_object_agg(slot_name, confirmed_flush_lsn::text)
                 FROM pg_catalog.pg_replication_slots
                WHERE slot_name = ANY($1::text[])) AS slots`,
      [copies.map((slot) => slot.name)],
    )
    .then((r) => r.rows[0] ?? null)
    .catch(() => null);
  // No answer, or a server that is not a primary (a connection that landed on a standby),
  // proves nothing either way: the last evidence stands.
  if (row === null || row.in_recovery) return null;
  const remote = new Map(
    Object.entries(row.slots ?? {}).map(([name, lsn]) => [name, parseLsn(lsn)]),
  );
  for (const slot of copies) {
    const at = remote.get(slot.name);
    const copy = slot.confirmedFlushLsn as Lsn;
    if (at !== undefined && at !== null && copy > at) out.set(slot.name, { copy, remote: at });
  }
  return out;
}
