/**
 * Promotion readiness as a process sees it: the latest read of the standby (a cycle's, the
 * worker's check between cycles, or a question's own read), the engine's latest read of the
 * primary, and the one verdict over them (sync/safety.ts). GET /ready, the gate, POST
 * /shutdown, GET /slots and the slotsync_ready metric all answer from here, so at the same
 * moment they give the same answer.
 */
import type pg from 'pg';
import { pollStandby, readReceived, type StandbyState } from '../db/standby.js';
import type { Queryable } from '../db/standby-pools.js';
import { messageOf } from '../errors.js';
import { mergePastRemote } from '../registry/primary-facts.js';
import { assessSafety, type Safety, type StandbyRead } from '../sync/safety.js';
import type { CycleResult } from './cycle.js';
import type { Engine } from './engine.js';
import { bindingProblem, refreshPrimary, standbyReadOf } from './facts.js';
import { fenceNeeded } from './fence.js';

/** A read of the primary for a question waits at most this long (a partition answers no). */
const PRIMARY_READ_MS = 1_500;
/** ... and this long when the primary did not answer its last contact either. */
const PRIMARY_DOWN_READ_MS = 250;
/** Readiness.read() starts at the primary when the last read of the standby is this recent. */
const LAST_STANDBY_MS = 1_000;

export interface AskOptions {
  /** The slots asked for; null: SLOTSYNC_REQUIRED_SLOTS, else every one. */
  required: readonly string[] | null;
  /** How long a read of a primary that does not wait for this standby is trusted. */
  maxAgeMs: number;
}

export class Readiness {
  #standby: StandbyRead | null = null;
  #standbyFingerprint: string | null = null;
  #standbyDown: string | null = 'not read yet';
  /** The last read of the standby as it came (its settings: the physical slot's name). */
  #standbyState: StandbyState | null = null;
  /** The read of the primary in flight: a question joins it rather than queue another. */
  #primaryReading: Promise<void> | undefined;
  /** When the last cycle of the current engine succeeded (null: none yet). */
  #lastCycleAt: number | null = null;
  #reloaded = false;

  constructor(private engine: Engine) {}

  /** A reload swapped the engine: nothing it did not read itself is trusted. */
  replaceEngine(engine: Engine): void {
    this.engine = engine;
    this.#lastCycleAt = null;
    this.#reloaded = true;
    this.#standbyFingerprint = null;
    this.#standbyState = null;
  }

  get standby(): StandbyRead | null {
    return this.#standby;
  }

  /** A cycle succeeded: its view of the standby is the latest. */
  recordCycle(result: CycleResult, at = Date.now()): void {
    this.#standby = result.standby;
    this.#standbyFingerprint = null; // the cycle's own changes: read the slots again next time
    this.#standbyDown = null;
    this.#lastCycleAt = at;
    this.#reloaded = false;
  }

  /**
   * Reads the standby now (the slots only when they changed since the last read here).
   * Never throws: a failure is what the verdict then says.
   */
  async readStandby(pool: Queryable): Promise<StandbyState | null> {
    try {
      // Stamped when the read starts: a read of the primary that ended before it is older.
      const startedAt = Date.now();
      const state = await pollStandby(pool, this.#standbyFingerprint);
      this.#standbyState = state;
      const slots = state.slots ?? this.#standby?.slots ?? [];
      const timeline = this.engine.deps.cache.timelineOf(state);
      this.#standby = standbyReadOf(state, slots, startedAt, timeline);
      this.#standbyFingerprint =
        state.slots === null ? this.#standbyFingerprint : state.fingerprint;
      this.#standbyDown = null;
      return state;
    } catch (error) {
      this.#standbyDown = messageOf(error);
      this.#standby = null;
      this.#standbyState = null;
      this.#standbyFingerprint = null;
      return null;
    }
  }

  /**
   * Reads the primary now, for at most PRIMARY_READ_MS (PRIMARY_DOWN_READ_MS when it did
   * not answer its last contact: a partitioned primary never holds a question long). A
   * read still in flight is joined, never queued behind. Never throws.
   */
  async readPrimary(pool: pg.Pool, standby: StandbyState, standbyPool: Queryable): Promise<void> {
    const { cache, registry, selectSlot, quorum } = this.engine.deps;
    if (!standby.inRecovery) return;
    const waitMs = cache.primaryDown === null ? PRIMARY_READ_MS : PRIMARY_DOWN_READ_MS;
    if (this.#primaryReading === undefined) {
      const reading = refreshPrimary(pool, cache, registry, standby, selectSlot, quorum, () =>
        readReceived(standbyPool).catch(() => null),
      ).finally(() => {
        if (this.#primaryReading === reading) this.#primaryReading = undefined;
      });
      this.#primaryReading = reading;
    }
    const reading = this.#primaryReading;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), waitMs);
    });
    const outcome = await Promise.race([reading, timeout]).finally(() => clearTimeout(timer));
    if (outcome === 'timeout') {
      cache.primaryFailed(`the primary does not answer: no answer within ${waitMs} ms`);
    }
  }

  /** Reads both sides now and answers. */
  async ask(pools: { standby: Queryable; primary: pg.Pool }, options: AskOptions): Promise<Safety> {
    await this.read(pools);
    return this.verdict(options);
  }

  /**
   * Reads both sides now: the standby, the primary, and the standby again until its read
   * started after the primary's (see below). Never throws.
   */
  async read(pools: { standby: Queryable; primary: pg.Pool }): Promise<void> {
    // The primary is read with what a recent read of the standby said (its physical slot,
    // its system identifier), then the standby: two round trips, not three. Not older than
    // LAST_STANDBY_MS: a standby promoted since would make this read wait for the primary.
    const seen = this.#standby;
    const recent = seen?.inRecovery === true && seen.at >= Date.now() - LAST_STANDBY_MS;
    const last = recent && this.#standbyState?.inRecovery ? this.#standbyState : null;
    const standby = last ?? (await this.readStandby(pools.standby));
    if (standby?.inRecovery) {
      await this.readPrimary(pools.primary, standby, pools.standby);
      if (standby === last) await this.readStandby(pools.standby);
      // The standby again, after the primary: what it holds now is compared with what the
      // consumers had confirmed at that read (read before, a standby streaming fast would
      // look behind consumers that are not ahead of it). A cycle may record a newer read of
      // the primary meanwhile: then once more. Cheap: the slots come back only if changed.
      const { cache } = this.engine.deps;
      for (let i = 0; i < 3; i++) {
        const read = cache.primaryRead;
        if (this.#standby !== null && (read?.endedAt ?? read?.at ?? 0) <= this.#standby.at) break;
        await this.readStandby(pools.standby);
      }
    }
  }

  /** The verdict over the latest facts, without reading anything. */
  verdict(options: AskOptions, now = Date.now()): Safety {
    const { registry, cache } = this.engine.deps;
    return assessSafety({
      now,
      required: options.required,
      registry: registry.entries,
      bindingProblem: this.#standby === null ? null : bindingProblem(registry, this.#standby),
      standby: this.#standby,
      standbyDown: this.#standbyDown,
      primary: cache.primaryRead,
      primaryDown: cache.primaryDown,
      lastCycleAt: this.#lastCycleAt,
      reloaded: this.#reloaded,
      maxAgeMs: options.maxAgeMs,
      engine: this.engine.deps.engine,
      // Every comparison known, in memory or on disk (another engine of this process, a
      // reload, a write that failed): each takes the yes away until a newer one clears it.
      pastRemote: mergePastRemote(cache.builtinPastRemote, registry.primary?.pastRemote),
    });
  }

  /**
   * The worker's check between cycles (change-poll cadence): reads the standby and says
   * what it found: `primary` (this node is not in recovery: promoted), `fence` (a published
   * copy was moved or invalidated), `standby` (nothing to do), null (not readable).
   */
  async check(pool: Queryable): Promise<'primary' | 'fence' | 'standby' | null> {
    const state = await this.readStandby(pool);
    if (state === null) return null;
    if (!state.inRecovery) return 'primary';
    const slots = new Map((this.#standby?.slots ?? []).map((slot) => [slot.name, slot]));
    for (const entry of this.engine.deps.registry.entries.values()) {
      if (fenceNeeded(entry, slots.get(entry.name)) !== null) return 'fence';
    }
    return 'standby';
  }
}
