/**
 * LSNs and transaction ids, parsed once at the edge into values that compare correctly.
 *
 * An LSN is an unsigned 64-bit WAL position, printed by PostgreSQL as `%X/%X` (high and low
 * 32 bits). It is held as a bigint so that positions past 4 GiB compare correctly.
 */

import { SlotSyncError } from '../errors.js';

export type Lsn = bigint;

const UINT32 = 0xffffffffn;
const LSN_PATTERN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export class LsnParseError extends SlotSyncError {
  constructor(message: string) {
    super('SLOTSYNC_BAD_ANSWER', message);
  }
}

/** Parses `16/B374D848`; null stays null (an invalidated or ephemeral slot's LSN). */
export function parseLsn(text: string): Lsn;
export function parseLsn(text: string | null | undefined): Lsn | null;
export function parseLsn(text: string | null | undefined): Lsn | null {
  if (text === null || text === undefined) return null;
  const match = LSN_PATTERN.exec(text);
  if (!match) throw new LsnParseError(`invalid input syntax for type pg_lsn: "${text}"`);
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

/** Formats as PostgreSQL does (`LSN_FORMAT_ARGS`): upper-case hex, no padding. */
export function formatLsn(lsn: Lsn): string;
export function formatLsn(lsn: Lsn | null): string | null;
export function formatLsn(lsn: Lsn | null): string | null {
  if (lsn === null) return null;
  const high = (lsn >> 32n) & UINT32;
  const low = lsn & UINT32;
  return `${high.toString(16).toUpperCase()}/${low.toString(16).toUpperCase()}`;
}

/** For sorting, the latest position first; unknown (null) last. */
export function compareLsnDesc(a: Lsn | null, b: Lsn | null): number {
  if (a === b) return 0;
  if (a === null) return 1;
  if (b === null) return -1;
  return a > b ? -1 : 1;
}

/** Bytes from `from` to `to`, 0 when `to` is not ahead (lag is never negative). */
export function lsnDistance(from: Lsn | null, to: Lsn | null): number | null {
  if (from === null || to === null) return null;
  return to > from ? Number(to - from) : 0;
}

/**
 * 32-bit transaction ids wrap around. PostgreSQL's `TransactionIdPrecedes` compares normal
 * xids (>= 3) by the sign of their 32-bit difference; the special ids 0..2 (invalid,
 * bootstrap, frozen) compare as plain unsigned numbers and precede every normal xid.
 */
export type Xid = number;

const FIRST_NORMAL_XID = 3;

export function parseXid(text: string | number | null | undefined): Xid | null {
  if (text === null || text === undefined) return null;
  const value = typeof text === 'number' ? text : Number(text);
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new LsnParseError(`invalid input syntax for type xid: "${text}"`);
  }
  return value;
}

export function xidIsNormal(xid: Xid): boolean {
  return xid >= FIRST_NORMAL_XID;
}

export function transactionIdPrecedes(a: Xid, b: Xid): boolean {
  if (!xidIsNormal(a) || !xidIsNormal(b)) return a >>> 0 < b >>> 0;
  // Signed 32-bit difference, exactly as `(int32) (id1 - id2) < 0`.
  return ((a - b) | 0) < 0;
}

export function transactionIdFollows(a: Xid, b: Xid): boolean {
  return transactionIdPrecedes(b, a);
}
