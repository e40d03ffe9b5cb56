/**
 * Bounded advances (issue "The moment of truth", item 5). pg_replication_slot_advance()
 * keeps nothing when it is cancelled: an advance that outgrows the statement timeout is
 * lost whole, again and again (32 MB of small transactions behind a 100 ms timeout: 7
 * cancelled advances, 53 s). A copy far behind is therefore moved in steps that each fit
 * well within the timeout, each kept: the next cycle goes on from where the last step
 * ended, and the copy's lag falls cycle by cycle.
 *
 * The cost of an advance is the WAL it decodes: from the copy's restart_lsn to its target,
 * and restart_lsn moves only where decoding passes a running-xacts record (the primary logs
 * one every 15 s of activity and at checkpoints: in a backlog, hundreds of MB apart). The
 * pacer learns how many bytes a statement decodes per millisecond on this standby and sizes
 * each step so that the whole decode fits a fifth of the statement timeout; when the
 * window behind the copy is already that large, the step may take the decode up to 40% of
 * the timeout (the window is paid anyway: a bigger step passes the next record sooner). A
 * statement that still timed out makes it four times more careful.
 */
import type { Lsn } from '../sync/lsn.js';

/** A step never decodes less than this (below it, the fixed cost dominates). */
export const MIN_STEP_BYTES = 1024 * 1024;
/** Until measured: 64 kB per ms (a third of what the load benchmark decodes). */
const INITIAL_BYTES_PER_MS = 64 * 1024;
/**
 * Each step aims at this share of the statement timeout: a standby whose CPU is suddenly
 * shared (other sessions, other services) may take several times as long as measured.
 */
const BUDGET_SHARE = 0.2;
/** No step takes a statement's decode beyond this share of the timeout. */
const CEILING_SHARE = 0.4;
/** A statement that decoded less than this says little about the rate. */
const MIN_SAMPLE_BYTES = 1024 * 1024;

export class AdvancePacer {
  #bytesPerMs = INITIAL_BYTES_PER_MS;

  constructor(private readonly statementTimeoutMs: number) {}

  /** The most WAL one statement should decode now. */
  get maxDecodeBytes(): number {
    return Math.max(
      MIN_STEP_BYTES,
      Math.floor(this.#bytesPerMs * this.statementTimeoutMs * BUDGET_SHARE),
    );
  }

  /**
   * The target of this cycle's step for a copy at `from` whose decoding starts at
   * `restart` (null: unknown, taken as `from`): `to` itself when it fits, else as far as
   * the budget reaches (never less than MIN_STEP_BYTES past `from`).
   */
  step(from: Lsn, restart: Lsn | null, to: Lsn): Lsn {
    const window = windowOf(from, restart);
    const budget = this.maxDecodeBytes;
    const ceiling = this.#bytesPerMs * this.statementTimeoutMs * CEILING_SHARE;
    const allowance = window < budget ? budget - window : ceiling - window;
    const limit = from + BigInt(Math.floor(Math.max(MIN_STEP_BYTES, allowance)));
    return to > limit ? limit : to;
  }

  /**
   * Whether the WAL behind the copy alone (from restart_lsn: a transaction open on the
   * primary holds it back) takes more than the ceiling: then no step fits, whatever its size.
   */
  windowTooLarge(from: Lsn, restart: Lsn | null): boolean {
    return windowOf(from, restart) > this.#bytesPerMs * this.statementTimeoutMs * CEILING_SHARE;
  }

  /** A statement decoded `bytes` in `ms`. */
  observe(bytes: number, ms: number): void {
    if (bytes < MIN_SAMPLE_BYTES || ms <= 0) return;
    const sample = bytes / ms;
    // Slower news is believed at once; faster news half way.
    this.#bytesPerMs = sample < this.#bytesPerMs ? sample : (this.#bytesPerMs + sample) / 2;
  }

  /** A statement was cancelled by the statement timeout. */
  timedOut(): void {
    this.#bytesPerMs = Math.max(1, this.#bytesPerMs / 4);
  }
}

/** Bytes decoded before reaching `from`: the window behind the copy. */
export function windowOf(from: Lsn, restart: Lsn | null): number {
  return restart !== null && restart < from ? Number(from - restart) : 0;
}
