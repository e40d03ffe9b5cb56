/**
 * Keeps the copies' decode window short while the primary writes.
 *
 * pg_replication_slot_advance() decodes from the copy's restart_lsn, and restart_lsn moves
 * only when decoding passes a running-xacts record. The servers log one every 15 s, so on a
 * busy primary each advance would read up to 15 s of WAL again, for every copy, every
 * cycle (measured: 8× the built-in's standby CPU at 10 subscriptions and 2 MB/s). After a
 * cycle that advanced copies, one record is logged on the primary unless the last one
 * slotsync logged is still ahead of where the copies now are: the next advance passes it and
 * restart_lsn follows, so each advance reads about two cycles of WAL. Every record costs
 * each copy a little when decoded, hence at most one per cycle, and none while idle.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { logRunningXacts } from '../db/primary.js';
import { hasSqlState, SQLSTATE } from '../db/sqlstate.js';
import { messageOf } from '../errors.js';
import type { Lsn } from '../sync/lsn.js';

/** After a refused record (no EXECUTE on pg_log_standby_snapshot), ask again this late. */
const REFUSED_RETRY_MS = 60_000;
/**
 * How long before the next cycle the record is logged: the subscribers must confirm past
 * it by then (their own lag measured ~25-30 ms at p99 under 2 MB/s), so that the next
 * advance passes it and restart_lsn lands just behind the copies' new position. Measured
 * (bench --load, PostgreSQL 17, 10 subscriptions, 2 MB/s, 30 s): 100 ms: advancing
 * session 2.53 s, WAL kept p50 0.56 MB; 50 ms: 2.31 s, 0.44 MB; 25 ms: 2.48 s, 0.68 MB
 * (records the subscribers had not confirmed yet: restart_lsn stayed behind).
 */
const LEAD_MS = 50;
/** A record is never held back longer than this (the cadence estimate may follow an idle nap). */
const MAX_WAIT_MS = 1_000;
/** Weight of the newest interval between cycles in the running estimate. */
const INTERVAL_WEIGHT = 0.3;

export class DecodeWindow {
  /** The last record slotsync logged; copies past it have their restart_lsn near it. */
  #last: Lsn | null = null;
  #refusedAt = Number.NEGATIVE_INFINITY;
  #pending: NodeJS.Timeout | undefined;
  #fire: (() => void) | undefined;
  #inFlight = false;
  #lastStart: number | undefined;
  /** Estimated time between the starts of two cycles that advance copies. */
  #interval: number | undefined;

  /**
   * A cycle starts: the cadence the next record is timed by. A record still waiting is
   * logged now (this cycle's targets were read before it, the next cycle passes it).
   */
  cycleStarted(now = performance.now()): void {
    this.#fire?.();
    if (this.#lastStart !== undefined) {
      const observed = now - this.#lastStart;
      this.#interval =
        this.#interval === undefined
          ? observed
          : this.#interval + INTERVAL_WEIGHT * (observed - this.#interval);
    }
    this.#lastStart = now;
  }

  /**
   * `moved`: where this cycle's advances left the copies. The record is logged in the
   * background, timed to land shortly before the next cycle: a cycle never waits for it.
   */
  afterAdvances(
    primary: pg.Pool,
    moved: Iterable<Lsn>,
    logger: Logger,
    onRefused: ((message: string) => void) | undefined,
  ): void {
    let furthest: Lsn | null = null;
    for (const lsn of moved) if (furthest === null || lsn > furthest) furthest = lsn;
    if (furthest === null || this.#pending !== undefined || this.#inFlight) return;
    if (this.#last !== null && this.#last > furthest) return; // not passed yet
    if (performance.now() - this.#refusedAt < REFUSED_RETRY_MS) return;
    const since = performance.now() - (this.#lastStart ?? performance.now());
    const wait = Math.min(MAX_WAIT_MS, Math.max(0, (this.#interval ?? 0) - since - LEAD_MS));
    this.#fire = () => {
      clearTimeout(this.#pending);
      this.#pending = undefined;
      this.#fire = undefined;
      this.#inFlight = true;
      void this.#log(primary, logger, onRefused).finally(() => {
        this.#inFlight = false;
      });
    };
    this.#pending = setTimeout(() => this.#fire?.(), wait);
    this.#pending.unref();
  }

  /** The engine closes: no record after that. */
  close(): void {
    clearTimeout(this.#pending);
    this.#pending = undefined;
    this.#fire = undefined;
  }

  async #log(
    primary: pg.Pool,
    logger: Logger,
    onRefused: ((message: string) => void) | undefined,
  ): Promise<void> {
    try {
      this.#last = await logRunningXacts(primary);
    } catch (error) {
      const message = messageOf(error);
      if (hasSqlState(error, SQLSTATE.insufficientPrivilege)) {
        this.#refusedAt = performance.now();
        onRefused?.(message);
      }
      logger.warn({ err: message }, 'could not log a running-xacts record on the primary');
    }
  }
}
