/**
 * One sync cycle, synchronize_slots() over SQL: take the sync lock on the standby and read
 * it, read the primary (in parallel), validate, plan, apply, record ownership, report.
 *
 * Each side is one statement. Each returns a digest of its slots and sends the rows only
 * when the digest differs from the one this engine holds, so an idle cycle moves no slot
 * rows; a cycle whose inputs and outcome cannot have changed reuses the last plan.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { isConnectionError, unreachable } from '../db/errors.js';
import type { LockSession } from '../db/lock-session.js';
import { type PrimaryState, readPrimary } from '../db/primary.js';
import type { PrimaryTargets } from '../db/primary-targets.js';
import { readReceived, type StandbyState } from '../db/standby.js';
import type { StandbyPools } from '../db/standby-pools.js';
import { CONCURRENT_MESSAGE, messageOf, SlotSyncError } from '../errors.js';
import { redactUrl } from '../redact.js';
import type { PastRemote } from '../registry/primary-facts.js';
import type { Registry } from '../registry/registry.js';
import type { EngineKind } from '../sync/builtin.js';
import { formatLsn, type Lsn } from '../sync/lsn.js';
import { planCycle } from '../sync/plan.js';
import { remoteAheadOfStandby } from '../sync/rules.js';
import { namesSlot, narrowerFacts, type PrimaryRead, type StandbyRead } from '../sync/safety.js';
import type { LocalSlot, RemoteSlot, SlotReport } from '../sync/types.js';
import { validatePrimary, validateStandby } from '../sync/validate.js';
import { buildBuiltinViews, buildSlotViews, type SlotView } from '../sync/view.js';
import { settle } from '../util.js';
import { type Applied, applyActions, type CyclePoint, copySlot } from './apply.js';
import { type BuiltinStatus, builtinStep } from './builtin.js';
import { DecodeWindow } from './decode-window.js';
import {
  forkPointFor,
  needsFreshReceive,
  primaryReadOf,
  type QuorumFacts,
  type ReadContext,
  recordNarrowing,
  recordPrimaryRead,
  standbyReadOf,
} from './facts.js';
import { type Fenced, fenceCopies } from './fence.js';
import { checkNode } from './node.js';
import { AdvancePacer } from './pacer.js';
import { dropStagingSlots, type PromotionCleanup, rearmCopies } from './promotion.js';

export interface EngineDeps {
  /** The pool of the primary followed now (primaryTargets.pool). */
  readonly primary: pg.Pool;
  /** The hosts SLOTSYNC_PRIMARY_URL lists, and the one followed. */
  primaryTargets: PrimaryTargets;
  standby: StandbyPools;
  lock: LockSession;
  registry: Registry;
  logger: Logger;
  /** The URLs, to name the server in connection errors (never logged as is). */
  readonly primaryUrl: string;
  standbyUrl: string;
  /** SLOTSYNC_ENGINE: who copies the slots (fixed for the engine's life; a reload swaps it). */
  engine: EngineKind;
  concurrency: number;
  createTimeoutMs: number;
  /** What the last cycles read; owned by the engine, reset with it. */
  cache: CycleCache;
  /** SLOTSYNC_RESET_STATE: a state folder of another node is moved aside, not refused. */
  resetState: boolean;
  /** SLOTSYNC_REPLACE_STALE: stale same-name slots left from a switchover are replaced. */
  replaceStale: boolean;
  /** SLOTSYNC_SLOTS_INCLUDE/EXCLUDE: whether a failover slot of the primary is copied. */
  selectSlot: (name: string) => boolean;
  /** SLOTSYNC_REARM: after promotion, failover is turned on for the sync-ready copies. */
  rearm: boolean;
  /** SLOTSYNC_STANDBY_SLOTS_QUORUM's slots and SLOTSYNC_QUORUM_SILENT_MS, else null. */
  quorum: QuorumFacts | null;
  /** A replication connection to the standby, to a database (ALTER_REPLICATION_SLOT). */
  replicationClient: (database: string) => pg.Client;
  /** Called with every copy creation wait, so /health can say when snapshots are refused. */
  onSnapshotRefused?: (message: string) => void;
  /** Called when a cycle found the standby promoted and dropped its staging slots. */
  onPromotion?: (cleanup: PromotionCleanup) => void;
  /** Called when copies were fenced (moved or invalidated on the standby) and dropped. */
  onFenced?: (fenced: Fenced) => void;
  /**
   * Test hook: awaited at each step boundary of a cycle (see CyclePoint), where the tests
   * hold a cycle, or stop it for good as a kill -9 would.
   */
  pauseAt?: (point: CyclePoint) => Promise<void>;
}

/** A read of the primary with when it began and ended (ms since the epoch). */
type TimedPrimaryState = PrimaryState & { startedAt: number; endedAt: number };

export interface CycleReport {
  ok: boolean;
  startedAt: string;
  durationMs: number;
  /** slotsync.c's some_slot_updated: drives the worker's naptime. */
  updated: boolean;
  slots: SlotReport[];
}

export interface CycleResult {
  report: CycleReport;
  views: SlotView[];
  /** The standby as this cycle left it (promotion readiness reads it until the next read). */
  standby: StandbyRead;
  primarySlotName: string;
  standbyReplayLsn: string | null;
  synchronizedStandbySlots: string | null;
  remote: RemoteSlot[];
  /** Failover slots of the primary left out by SLOTSYNC_SLOTS_INCLUDE/EXCLUDE. */
  excluded: string[];
  local: LocalSlot[];
  /** The primary's slot digest as this cycle read it (see readFingerprint). */
  fingerprint: string;
  /** Slots skipped because the standby has not replayed their position yet. */
  waitingForReplay: number;
  /** Copies moved one bounded step short of their remote (engine/pacer.ts). */
  catchingUp: number;
  /** SLOTSYNC_ENGINE=builtin: what PostgreSQL's slot sync is doing; null over SQL. */
  builtin: BuiltinStatus | null;
}

/** Full reads at least this often, whatever the digests say. */
const FULL_READ_INTERVAL_MS = 60_000;

/** How long the standby's physical slot may stay inactive on the primary (reconnecting). */
const UPSTREAM_INACTIVE_GRACE_MS = 60_000;

export class CycleCache {
  /** SLOTSYNC_ENGINE=builtin: when slotsync last called pg_sync_replication_slots() (ms). */
  builtinCalledAt = 0;
  /**
   * The worker's change probe watches only what the failover slots are and the setting
   * (readShapeFingerprint): PostgreSQL's own worker follows their positions.
   */
  shapeProbe = false;
  /** ... and why that call failed, else null. */
  builtinError: string | null = null;
  /** Synced copies found past their remote slot at the last builtin cycle (safety.ts). */
  builtinPastRemote: PastRemote = new Map();
  /**
   * What the last read of the primary said (promotion readiness: sync/safety.ts); starts
   * from the registry's record, so a start with the primary gone still knows it.
   */
  primaryRead: PrimaryRead | null = null;
  /** Why the primary did not answer its last contact, else null. */
  primaryDown: string | null = null;
  /**
   * The quorum manager announced this standby's removal and this process acknowledged it:
   * no read of the primary, however it started, says the primary waits for this standby
   * until the announcement is withdrawn (service/quorum.ts).
   */
  quorumPending = false;
  /** Since when the standby's physical slot has been seen inactive on the primary. */
  upstreamInactiveSince: number | null = null;
  primarySlotName: string | null = null;
  primaryFingerprint: string | null = null;
  remote: RemoteSlot[] | null = null;
  /** The copies' remote slots that are not failover slots (PrimaryState.others). */
  others: RemoteSlot[] | null = null;
  standbyFingerprint: string | null = null;
  local: LocalSlot[] | null = null;
  fullReadAt = 0;
  /** The last result, reusable while nothing it depends on changed. */
  stable: { result: CycleResult; registryVersion: number } | null = null;
  /** Running-xacts records that keep the copies' decode window short (kept by forget()). */
  readonly window = new DecodeWindow();
  /** How much WAL one advance may decode (kept by forget()). */
  readonly pacer: AdvancePacer;

  constructor(statementTimeoutMs = 30_000) {
    this.pacer = new AdvancePacer(statementTimeoutMs);
  }

  /**
   * The setting was first seen naming this standby's slot at a read where the primary had
   * flushed this: WAL sent before may be ahead of the standby until it holds it (null: the
   * last read did not name it).
   */
  #named: { from: Lsn | null; at: number; timeline: number | null } | null = null;

  /** A read of the primary, masked by an acknowledged removal (quorumPending). */
  maskQuorum(read: PrimaryRead): PrimaryRead {
    return this.quorumPending && read.facts.waitsForStandby
      ? { ...read, facts: { ...read.facts, waitsForStandby: false } }
      : read;
  }

  /** Keeps a read of the primary, masked by an acknowledged removal (quorumPending). */
  keepPrimaryRead(read: PrimaryRead | null): PrimaryRead | null {
    this.primaryRead = read === null ? null : this.maskQuorum(read);
    return this.primaryRead;
  }

  /**
   * Since which flush position of the primary its synchronized_standby_slots names `slot`, as
   * this process saw it: the first read naming it (after start, or after a read that did
   * not) says where; null while it does not name it.
   */
  namedFrom(
    read: Pick<PrimaryState, 'synchronizedStandbySlots' | 'flushLsn'> &
      Partial<Pick<PrimaryState, 'timeline'>>,
    slot: string,
    at: number,
  ): Lsn | null {
    const named = this.#named;
    // A read older than the one that set it (it outlived its wait) changes nothing.
    if (named !== null && at < named.at) return named.from;
    if (!namesSlot(read.synchronizedStandbySlots, slot)) {
      this.#named = null;
      return null;
    }
    const timeline = read.timeline ?? null;
    if (named === null || named.timeline !== timeline) {
      // First seen naming it, or on another primary's timeline: from what is flushed now.
      this.#named = { from: read.flushLsn, at, timeline };
      return read.flushLsn;
    }
    return named.from;
  }

  /** When the primary last failed to answer (ms since the epoch; 0: never). */
  primaryDownAt = 0;

  /** The primary failed to answer, or is not this standby's upstream. */
  primaryFailed(why: string, at = Date.now()): void {
    this.primaryDown = why;
    this.primaryDownAt = at;
  }

  /**
   * Keeps a read of the primary that ended: never one older than the read kept already (a
   * read that outlived its wait must not restore older facts), and it clears "the primary
   * does not answer" only when it began after that failure was seen.
   */
  keepNewerRead(read: PrimaryRead): void {
    const kept = this.primaryRead;
    if (kept === null || kept.positions === null || read.at >= kept.at) this.primaryRead = read;
    else this.narrowRead(read);
    if (read.at >= this.primaryDownAt) this.primaryDown = null;
  }

  /** Takes away what `read` takes away, keeping its positions (they go with its facts). */
  narrowRead(read: PrimaryRead): void {
    const kept = this.primaryRead;
    this.primaryRead =
      kept === null ? read : { ...read, facts: narrowerFacts(kept.facts, read.facts) };
  }

  /** The highest timeline this process saw the standby's walreceiver on (null: none). */
  #timeline: number | null = null;

  /**
   * The timeline of the standby's WAL as this process knows it: the highest its walreceiver
   * reported (a standby's timeline only grows), or `known` (the recorded facts', at start).
   */
  timelineOf(
    state: { walTimeline?: number | null } | null,
    known: number | null = null,
  ): number | null {
    for (const t of [state?.walTimeline ?? null, known]) {
      if (t !== null && (this.#timeline === null || t > this.#timeline)) this.#timeline = t;
    }
    return this.#timeline;
  }

  /**
   * The worker's change probe found the primary's digest unchanged: its facts still hold.
   * `refresh` false (the builtin engine's shape digest, which leaves out positions, the
   * physical slot and the quorum's announcement): the primary answered, nothing more.
   */
  primaryConfirmed(at = Date.now(), refresh = true): void {
    // The digest covers the slots and the setting, not what the primary has flushed: a read
    // that rests on that (the primary not waiting for this standby) is not made fresher.
    const read = this.primaryRead;
    if (refresh && read?.positions && read.facts.waitsForStandby && at > read.at) {
      this.primaryRead = { ...read, at };
    }
    if (at >= this.primaryDownAt) this.primaryDown = null;
  }

  forget(): void {
    this.primaryFingerprint = null;
    this.remote = null;
    this.others = null;
    this.standbyFingerprint = null;
    this.local = null;
    this.stable = null;
  }
}

export interface CycleOptions {
  /**
   * After a cycle that succeeded, keep the standby's sync lock this long for the next one
   * (LockSession.keep); 0: release it now.
   */
  keepLockMs?: number;
}

export async function runCycle(deps: EngineDeps, options: CycleOptions = {}): Promise<CycleResult> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const cache = deps.cache;
  cache.window.cycleStarted(started);
  if (Date.now() - cache.fullReadAt > FULL_READ_INTERVAL_MS) cache.forget();
  const primaryError = (error: unknown) => {
    const wrapped = isConnectionError(error)
      ? unreachable('SLOTSYNC_PRIMARY_URL', deps.primaryUrl, error)
      : error;
    cache.primaryFailed(`the primary does not answer: ${messageOf(wrapped)}`);
    return wrapped;
  };
  // The copies' names: their remote slots are read even when not failover slots (a failover).
  const copies = [...deps.registry.entries.keys()];
  const readRemote = async (slotName: string): Promise<TimedPrimaryState> => {
    const startedAt = Date.now();
    const state = await readPrimary(
      deps.primary,
      slotName,
      copies,
      cache.remote ? cache.primaryFingerprint : null,
      deps.engine === 'builtin',
    );
    return { ...state, startedAt, endedAt: Date.now() };
  };

  // The primary is read while the lock is taken, with the physical slot name of last time.
  const early = cache.primarySlotName === null ? null : settle(readRemote(cache.primarySlotName));
  let locked = false;
  let succeeded = false;
  try {
    const standbyReadAt = Date.now();
    // What this engine knew of the copies, taken before the read: a cache.forget() meanwhile
    // (the quorum's, a move) must not leave a read that found them unchanged with none.
    const knownLocal = cache.local;
    const standby = await deps.lock
      .lockAndRead(knownLocal ? cache.standbyFingerprint : null)
      .catch((error: unknown) => {
        throw isConnectionError(error)
          ? unreachable('SLOTSYNC_STANDBY_URL', deps.standbyUrl, error)
          : error;
      });
    locked = standby.locked;
    if (!locked) throw new SlotSyncError('SLOTSYNC_CONCURRENT', CONCURRENT_MESSAGE);
    const localRead = standby.slots ?? knownLocal ?? [];
    await deps.registry.refresh();
    const localNow = await checkNode(
      {
        registry: deps.registry,
        logger: deps.logger,
        standbyMain: deps.standby.main,
        resetState: deps.resetState,
        pauseAt: deps.pauseAt,
      },
      standby,
      localRead,
    );
    if (!standby.inRecovery) {
      // Promoted, with or without POST /shutdown: staging slots go before anything else.
      const cleanup = await dropStagingSlots(
        { registry: deps.registry, logger: deps.logger, standbyMain: deps.standby.main },
        standby.pid,
        localNow,
      );
      // PostgreSQL's synced slots keep failover on through promotion: nothing to re-arm.
      if (deps.rearm && deps.engine === 'sql') {
        Object.assign(
          cleanup,
          await rearmCopies(
            {
              registry: deps.registry,
              logger: deps.logger,
              replicationClient: deps.replicationClient,
              standbyMain: deps.standby.main,
            },
            localNow,
          ),
        );
      }
      cache.forget();
      // What the old primary said of this node's consumers means nothing on a primary.
      cache.primaryRead = null;
      if (deps.registry.primary !== null) {
        await deps.registry.writePrimary(() => null);
      }
      deps.onPromotion?.(cleanup);
    }
    // The facts of a read, with the standby's WAL position read again after it when they
    // rest on it (received only grows; the lock-and-read above may be older).
    const factsOf = async (
      state: TimedPrimaryState,
      remote: RemoteSlot[],
      others: RemoteSlot[],
    ) => {
      const timeline = cache.timelineOf(standby);
      const context: ReadContext = {
        startedAt: state.startedAt,
        endedAt: state.endedAt,
        forkPoint: await forkPointFor(deps.primary, timeline, state),
        namedFrom: cache.namedFrom(state, standby.primarySlotName, state.startedAt),
        standbyTimeline: timeline,
      };
      const read = primaryReadOf(standby, remote, others, state, deps.quorum, context);
      if (!needsFreshReceive(read)) return { read, received: null };
      const at = Date.now();
      const now = await readReceived(deps.standby.main).catch(() => null);
      if (now === null) return { read, received: null };
      const again = { ...context, standbyTimeline: cache.timelineOf(now) };
      return {
        read: primaryReadOf({ ...standby, ...now }, remote, others, state, deps.quorum, again),
        received: { ...now, at },
      };
    };
    // A read that cannot be taken as the upstream's, of the same cluster's primary: what it
    // takes away is recorded all the same, never in place of the error that stops the cycle.
    const recordTakenAway = async (state: TimedPrimaryState) => {
      if (state.inRecovery || state.systemIdentifier !== standby.systemIdentifier) return;
      const slots = (state.slots ?? cache.remote ?? []).filter((s) => deps.selectSlot(s.name));
      const others = (state.others ?? cache.others ?? []).filter((s) => deps.selectSlot(s.name));
      await factsOf(state, slots, others)
        .then((facts) => recordNarrowing(cache, deps.registry, facts.read))
        .catch((e: unknown) =>
          deps.logger.warn({ err: messageOf(e) }, 'could not record what the primary said'),
        );
    };
    const recordWhileUnsyncable = async (slotName: string | null) => {
      if (!slotName || !standby.inRecovery) return;
      const settled = early && slotName === cache.primarySlotName ? await early : null;
      const state = settled?.ok ? settled.value : await readRemote(slotName).catch(() => null);
      if (state !== null) await recordTakenAway(state);
    };
    try {
      validateStandby(standby, deps.engine);
    } catch (error) {
      // The standby cannot sync as set up (primary_conninfo cleared, a setting changed), but
      // what the primary says of it still counts: what a read takes away (the setting no
      // longer names it, its slot moved past what it received) is recorded before the cycle
      // stops, or a failover during the restart interval would rest on older facts.
      await recordWhileUnsyncable(standby.primarySlotName || cache.primarySlotName);
      throw error;
    }
    if (deps.engine === 'sql') refuseSyncedSlots(localNow);
    // Fencing needs the standby alone: done before the primary is waited for, so a primary
    // that is gone never leaves a moved copy under a subscriber's name. (Under the builtin
    // engine there is nothing to fence: nobody can move a synced slot on a standby.)
    const fenced: Fenced =
      deps.engine === 'sql'
        ? await fenceCopies(
            { registry: deps.registry, logger: deps.logger, standbyMain: deps.standby.main },
            standby.pid,
            localNow,
          )
        : { dropped: [], failed: [] };
    if (fenced.dropped.length > 0) deps.onFenced?.(fenced);
    const localFenced =
      fenced.dropped.length === 0
        ? localNow
        : localNow.filter((slot) => !fenced.dropped.some((f) => f.name === slot.name));
    const first = early ? await early : null;
    const known = standby.primarySlotName === cache.primarySlotName ? first : null;
    const readUpstream = async (settled: typeof first): Promise<TimedPrimaryState> => {
      if (settled && !settled.ok) throw primaryError(settled.error);
      const state: TimedPrimaryState = settled
        ? settled.value
        : await readRemote(standby.primarySlotName).catch((e: unknown) =>
            Promise.reject(primaryError(e)),
          );
      try {
        validatePrimary(state, standby);
        // Several hosts: one that does not stream to this standby is not followed while
        // another does (an old primary still running after a failover).
        if (!state.physicalSlotActive && deps.primaryTargets.multiple) {
          throw new SlotSyncError(
            'SLOTSYNC_WRONG_PRIMARY',
            `SLOTSYNC_PRIMARY_URL: replication slot "${standby.primarySlotName}" is not active on ${redactUrl(deps.primaryUrl)}`,
          );
        }
        checkUpstream(state, standby, deps.primaryUrl, cache);
      } catch (error) {
        cache.primaryFailed(`the primary is not this standby's upstream: ${messageOf(error)}`);
        // Not the upstream (or not streaming to this standby now), but maybe the same
        // cluster's primary: what it takes away from "safe" is recorded all the same.
        await recordTakenAway(state);
        throw error;
      }
      return state;
    };
    let primary: TimedPrimaryState;
    try {
      primary = await readUpstream(known);
    } catch (error) {
      // SLOTSYNC_PRIMARY_URL lists several hosts: follow the one that is the upstream now.
      const moved = await deps.primaryTargets.locate({
        systemIdentifier: standby.systemIdentifier,
        primarySlotName: standby.primarySlotName,
        conninfo: standby.upstream,
      });
      if (!moved) {
        const onlyInactive =
          deps.primaryTargets.multiple &&
          (error as SlotSyncError).code === 'SLOTSYNC_WRONG_PRIMARY' &&
          /is not active on/.test(messageOf(error));
        if (!onlyInactive) throw error;
        // No host streams to this standby right now (it reconnects): the grace applies.
        primary = await readRemote(standby.primarySlotName).catch((e: unknown) =>
          Promise.reject(primaryError(e)),
        );
        validatePrimary(primary, standby);
        checkUpstream(primary, standby, deps.primaryUrl, cache);
      } else {
        cache.forget();
        cache.upstreamInactiveSince = null;
        primary = await readUpstream(null);
      }
    }

    const everyRemote = primary.slots ?? cache.remote ?? [];
    // SLOTSYNC_SLOTS_INCLUDE/EXCLUDE: the slots left out are not slotsync's to look after.
    const remote = everyRemote.filter((slot) => deps.selectSlot(slot.name));
    const excluded = new Set(
      everyRemote.filter((slot) => !deps.selectSlot(slot.name)).map((slot) => slot.name),
    );
    const others = (primary.others ?? cache.others ?? []).filter((slot) =>
      deps.selectSlot(slot.name),
    );
    const facts = await factsOf(primary, remote, others);
    await recordPrimaryRead(cache, deps.registry, facts.read, deps.logger);
    // The standby as readiness compares it with that read: its WAL position read after it.
    const standbyRead = (slots: readonly LocalSlot[]) =>
      facts.received === null
        ? standbyReadOf(standby, slots, standbyReadAt, cache.timelineOf(null))
        : standbyReadOf(
            { ...standby, ...facts.received },
            slots,
            facts.received.at,
            cache.timelineOf(null),
          );
    // The copies as read at the start of this cycle: never the cache again, which a primary
    // found moved cleared meanwhile (an empty list would forget every copy it owns).
    const local = localFenced;
    const unchanged =
      primary.slots === null && standby.slots === null && fenced.dropped.length === 0;
    cache.primarySlotName = standby.primarySlotName;
    cache.primaryFingerprint = primary.fingerprint;
    cache.remote = everyRemote;
    cache.others = primary.others ?? cache.others;
    cache.standbyFingerprint = standby.fingerprint;
    cache.local = local;
    if (primary.slots !== null && standby.slots !== null) cache.fullReadAt = Date.now();

    if (deps.engine === 'builtin') {
      const step = await builtinStep(
        {
          standby: deps.standby,
          registry: deps.registry,
          logger: deps.logger,
          replaceStale: deps.replaceStale,
          cache,
          primary: deps.primary,
        },
        standby,
        local,
        remote,
      );
      cache.shapeProbe = standby.syncReplicationSlots;
      if (step.updated) {
        cache.local = step.local;
        cache.standbyFingerprint = null;
      }
      cache.stable = null;
      succeeded = true;
      return finish(
        {
          report: {
            ok: true,
            startedAt,
            durationMs: 0,
            updated: step.updated,
            slots: step.reports,
          },
          views: buildBuiltinViews(remote, step.local, step.reports),
          standby: standbyRead(step.local),
          primarySlotName: standby.primarySlotName,
          standbyReplayLsn: formatLsn(standby.replayLsn),
          synchronizedStandbySlots: primary.synchronizedStandbySlots,
          remote,
          excluded: [...excluded].sort(),
          local: step.local,
          // What the worker's change probe compares. With PostgreSQL's worker on, the failover
          // slots' shape and the setting: it follows the positions, slotsync naps while only
          // they move. Driving pg_sync_replication_slots() itself, every change, as over SQL.
          // Read in the same statement as the facts: an edit after it still wakes a cycle.
          fingerprint: cache.shapeProbe ? (primary.shape ?? '') : primary.fingerprint,
          waitingForReplay: 0,
          catchingUp: 0,
          builtin: step.status,
        },
        started,
        startedAt,
      );
    }

    const reusable = cache.stable;
    if (
      unchanged &&
      reusable &&
      reusable.registryVersion === deps.registry.version &&
      standby.orphanedStatements === 0
    ) {
      // Same remote slots, same copies, same registry, nothing waiting: same (empty) plan.
      succeeded = true;
      return finish(
        {
          ...reusable.result,
          standby: standbyRead(reusable.result.local),
        },
        started,
        startedAt,
      );
    }

    const input = {
      remote,
      local,
      registry: deps.registry.entries,
      standbyReplayLsn: standby.replayLsn ?? 0n,
      standbyDatabases: new Set(standby.databases),
      excluded,
      replaceStale: deps.replaceStale,
      standbyStartedAt: standby.startedAt.getTime(),
      notFailover: new Map(others.map((slot) => [slot.name, slot])),
    };
    const actions = planCycle(input);
    await deps.pauseAt?.('before_apply');
    const applied = await applyActions(actions, input, {
      primary: deps.primary,
      standby: deps.standby,
      registry: deps.registry,
      logger: deps.logger,
      concurrency: deps.concurrency,
      createTimeoutMs: deps.createTimeoutMs,
      onSnapshotRefused: deps.onSnapshotRefused,
      orphanedStatements: standby.orphanedStatements,
      lock: { pid: standby.pid, held: () => deps.lock.held },
      primaryNow: primary.now,
      pauseAt: deps.pauseAt,
      pacer: cache.pacer,
    });
    cache.window.afterAdvances(
      deps.primary,
      applied.moved.values(),
      deps.logger,
      deps.onSnapshotRefused,
    );
    const localAfter = applied.updated ? patchLocal(local, applied) : local;
    if (applied.updated) {
      cache.local = localAfter;
      cache.standbyFingerprint = null; // our own changes: read the copies again next time
    }
    const reports = withFenced(applied.reports, fenced);
    const result: CycleResult = {
      report: {
        ok: true,
        startedAt,
        durationMs: 0,
        updated: applied.updated || fenced.dropped.length > 0,
        slots: reports,
      },
      views: buildSlotViews(remote, localAfter, deps.registry.entries, reports),
      standby: standbyRead(localAfter),
      primarySlotName: standby.primarySlotName,
      standbyReplayLsn: formatLsn(standby.replayLsn),
      synchronizedStandbySlots: primary.synchronizedStandbySlots,
      remote,
      excluded: [...excluded].sort(),
      local: localAfter,
      fingerprint: primary.fingerprint,
      waitingForReplay: remote.filter(
        (slot) => slot.failover && remoteAheadOfStandby(slot, input.standbyReplayLsn),
      ).length,
      catchingUp: applied.catchingUp,
      builtin: null,
    };
    const stable =
      !applied.updated &&
      result.waitingForReplay === 0 &&
      result.catchingUp === 0 &&
      applied.reports.every((r) => r.action !== 'failed');
    cache.stable = stable ? { result, registryVersion: deps.registry.version } : null;
    succeeded = true;
    return finish(result, started, startedAt);
  } catch (error) {
    cache.stable = null;
    if (early && !locked) await early; // never leave the early read's rejection unobserved
    throw error;
  } finally {
    if (locked && succeeded && (options.keepLockMs ?? 0) > 0)
      deps.lock.keep(options.keepLockMs ?? 0);
    else if (locked) deps.lock.release();
  }
}

/**
 * SLOTSYNC_ENGINE=sql on a standby that holds slots PostgreSQL's slot sync made: slotsync
 * can neither drop nor move them (PostgreSQL refuses both on a standby, with its worker on or
 * off) and would stop at each one. Refused, naming them and the ways out.
 */
export const SYNCED_WAY_OUT =
  'Keep SLOTSYNC_ENGINE=builtin on this standby; or rebuild the standby from a fresh base backup (it holds no slots); or, slot by slot, turn failover off on the primary (ALTER_REPLICATION_SLOT name (FAILOVER false)) and run SELECT pg_sync_replication_slots() once on the standby, which drops its copy, then turn failover on again (no standby has a copy in between)';

function refuseSyncedSlots(local: readonly LocalSlot[]): void {
  const synced = local.filter((slot) => slot.synced && !slot.temporary).map((slot) => slot.name);
  if (synced.length === 0) return;
  throw new SlotSyncError(
    'SLOTSYNC_SETUP',
    `SLOTSYNC_ENGINE=sql: the standby holds slots PostgreSQL's slot sync made (synced = true): ${synced
      .sort()
      .map((name) => `"${name}"`)
      .join(
        ', ',
      )}; PostgreSQL allows neither dropping nor advancing them on a standby, so slotsync cannot copy these slots over SQL. ${SYNCED_WAY_OUT}`,
  );
}

/** Copies fenced before the plan, in the report: as dropped, or with the reason prepended. */
function withFenced(reports: SlotReport[], fenced: Fenced): SlotReport[] {
  if (fenced.dropped.length === 0 && fenced.failed.length === 0) return reports;
  const out = [...reports];
  for (const f of [...fenced.dropped, ...fenced.failed]) {
    const i = out.findIndex((r) => r.name === f.name);
    const existing = out[i];
    if (existing === undefined) {
      out.push({
        name: f.name,
        action: 'error' in f ? 'failed' : 'dropped',
        state: 'absent',
        reason: f.reason,
      });
    } else {
      out[i] = { ...existing, reason: `${f.reason}; ${existing.reason ?? 'staged afresh'}` };
    }
  }
  return out;
}

function finish(result: CycleResult, started: number, startedAt: string): CycleResult {
  const durationMs = Math.round((performance.now() - started) * 100) / 100;
  return { ...result, report: { ...result.report, startedAt, durationMs } };
}

/**
 * The primary URL must name this standby's upstream: the same cluster, and the standby's
 * physical slot in use there. Otherwise slotsync would copy another server's slots.
 */
function checkUpstream(
  primary: Pick<PrimaryState, 'systemIdentifier' | 'physicalSlotActive'>,
  standby: Pick<StandbyState, 'systemIdentifier' | 'primarySlotName'>,
  primaryUrl: string,
  cache: CycleCache,
): void {
  if (primary.systemIdentifier !== standby.systemIdentifier) {
    throw new SlotSyncError(
      'SLOTSYNC_WRONG_PRIMARY',
      `SLOTSYNC_PRIMARY_URL: ${redactUrl(primaryUrl)} is not this standby's upstream: its system identifier ${primary.systemIdentifier} differs from the standby's ${standby.systemIdentifier}`,
    );
  }
  // A standby reconnecting (after a restart of either server) leaves the slot inactive for a
  // few seconds: refused only once it stays inactive (a primary the standby left: split brain).
  if (primary.physicalSlotActive) {
    cache.upstreamInactiveSince = null;
    return;
  }
  cache.upstreamInactiveSince ??= Date.now();
  if (Date.now() - cache.upstreamInactiveSince > UPSTREAM_INACTIVE_GRACE_MS) {
    throw new SlotSyncError(
      'SLOTSYNC_WRONG_PRIMARY',
      `SLOTSYNC_PRIMARY_URL: replication slot "${standby.primarySlotName}" on ${redactUrl(primaryUrl)} is not active: the standby has not streamed from this server for ${UPSTREAM_INACTIVE_GRACE_MS / 1000} s: it is not this standby's upstream`,
    );
  }
}

/** The copies after this cycle's own changes, without reading them again. */
function patchLocal(local: readonly LocalSlot[], applied: Applied): LocalSlot[] {
  const out: LocalSlot[] = [];
  for (const slot of local) {
    if (applied.dropped.has(slot.name)) continue;
    const end: Lsn | undefined = applied.moved.get(slot.name);
    out.push(end === undefined ? slot : { ...slot, confirmedFlushLsn: end });
  }
  const present = new Set(out.map((slot) => slot.name));
  for (const [stagingName, { remote, lsn }] of applied.created) {
    if (present.has(stagingName) || applied.dropped.has(stagingName)) continue;
    out.push(copySlot(stagingName, remote, applied.moved.get(stagingName) ?? lsn));
    present.add(stagingName);
  }
  for (const [name, stagingName] of applied.published) {
    if (present.has(name)) continue;
    const stage = local.find((slot) => slot.name === stagingName);
    const created = applied.created.get(stagingName);
    const position =
      applied.moved.get(stagingName) ?? stage?.confirmedFlushLsn ?? created?.lsn ?? null;
    const from = stage ?? (created ? copySlot(stagingName, created.remote, position) : undefined);
    if (from) out.push({ ...from, name, confirmedFlushLsn: position });
  }
  return out.filter((slot) => !applied.dropped.has(slot.name));
}
