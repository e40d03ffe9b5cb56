/**
 * The chaos checker: holds each promotion made on a "safe" to the ground truth. Pure: the
 * rows each side holds come in, the verdict goes out.
 *
 * After a promotion, a consumer must hold no row the new primary lacks (it was ahead of the
 * promoted standby: the new primary will write other rows at those ids and positions, and
 * the consumer skips or collides with them), and once settled it must hold every row the new
 * primary committed, each once; or it must have stopped with a clear error.
 */
import { formatLsn } from '../../src/sync/lsn.js';

export interface ConsumerCheck {
  consumer: string;
  /** Ids the consumer held at promotion that the new primary does not have. */
  ahead: number[];
  /** Ids the new primary committed that the consumer never got (after settling). */
  missing: number[];
  /** Ids the consumer got more than once after the promotion. */
  duplicates: number[];
  /** The consumer stopped with an error (a clear "no", not a silent gap). */
  error: string | null;
  /** It has not got past the new rows yet (waiting, e.g. for a standby the setting names). */
  stalled: boolean;
  violation: string | null;
}

export function checkConsumer(input: {
  consumer: string;
  /**
   * Where the consumer would resume (a subscription's origin, a client's last position),
   * and the end of the WAL the promoted node had: past it + 1, the consumer skips what the
   * new primary writes there (it was ahead of the standby called safe).
   */
  position?: { resume: bigint | null; endOfWal: bigint } | null;
  /** Ids on the new primary at promotion. */
  primaryAtPromotion: ReadonlySet<number>;
  /** Ids the consumer held at promotion. */
  heldAtPromotion: ReadonlySet<number>;
  /** Ids the new primary committed after promotion, as of the check. */
  committedAfter: readonly number[];
  /** How often the consumer got each id after the promotion. */
  receivedAfter: ReadonlyMap<number, number>;
  error: string | null;
  /**
   * The consumer's position passed a point after which every id of committedAfter was
   * committed: a row it lacks was skipped. Undefined: taken as passed.
   */
  passed?: boolean;
}): ConsumerCheck {
  const ahead = [...input.heldAtPromotion].filter((id) => !input.primaryAtPromotion.has(id));
  const missing = input.committedAfter.filter((id) => !input.receivedAfter.has(id));
  const duplicates = input.committedAfter.filter((id) => (input.receivedAfter.get(id) ?? 0) > 1);
  let violation: string | null = null;
  const position = input.position ?? null;
  if (position && position.resume !== null && position.resume > position.endOfWal + 1n) {
    violation = `${input.consumer} would resume at ${formatLsn(position.resume)}, past the end of the promoted node's WAL (${formatLsn(position.endOfWal)}): it was ahead of the standby called safe`;
  } else if (ahead.length > 0) {
    violation = `${input.consumer} held ${ahead.length} row(s) the promoted node lacks (ids ${ahead.slice(0, 5).join(', ')}…): it was ahead of the standby called safe`;
  } else if (input.error === null && missing.length > 0 && input.passed !== false) {
    violation = `${input.consumer} is missing ${missing.length} row(s) the new primary committed (ids ${missing.slice(0, 5).join(', ')}…) with no error: a silent gap`;
  } else if (duplicates.length > 0) {
    violation = `${input.consumer} got ${duplicates.length} row(s) of the new timeline more than once (ids ${duplicates.slice(0, 5).join(', ')}…)`;
  }
  return {
    consumer: input.consumer,
    ahead,
    missing,
    duplicates,
    error: input.error,
    stalled: input.error === null && missing.length > 0 && input.passed === false,
    violation,
  };
}
