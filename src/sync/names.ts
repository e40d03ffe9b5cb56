/**
 * Reserved slot names. A copy that is not sync-ready lives under a staging name that no
 * subscriber asks for (DESIGN.md, "Staging"): a slot made over SQL on a standby is
 * persistent, so a not-ready copy under the subscriber's own name would survive promotion
 * and silently start the subscriber at the copy's consistent point. The node marker is a
 * physical slot that binds a state folder to the standby it describes (slots are never
 * replicated, so a cold copy or the old primary does not carry it).
 *
 * Both prefixes are reserved: a remote slot whose name starts with one is never copied.
 * The same names on PostgreSQL 17 and 18; at most 63 bytes (NAMEDATALEN - 1).
 */
import { createHash, randomBytes } from 'node:crypto';

export const STAGING_PREFIX = 'slotsync_stage_';
export const NODE_MARKER_PREFIX = 'slotsync_node_';

/** 24 hex digits of SHA-256: 96 bits, so two remote names never share a staging name. */
const STAGING_HASH_CHARS = 24;

/** The staging name of a remote slot: deterministic, so a restart finds it again. */
export function stagingNameOf(name: string): string {
  const hash = createHash('sha256').update(name, 'utf8').digest('hex');
  return `${STAGING_PREFIX}${hash.slice(0, STAGING_HASH_CHARS)}`;
}

export function isStagingName(name: string): boolean {
  return name.startsWith(STAGING_PREFIX);
}

export function isNodeMarkerName(name: string): boolean {
  return name.startsWith(NODE_MARKER_PREFIX);
}

/** A name slotsync keeps for itself: a remote slot with such a name is never copied. */
export function isReservedName(name: string): boolean {
  return isStagingName(name) || isNodeMarkerName(name);
}

/** A fresh node marker name: unpredictable, so two state folders never share one. */
export function newNodeMarkerName(): string {
  return `${NODE_MARKER_PREFIX}${randomBytes(12).toString('hex')}`;
}
