/**
 * What the primary said about this standby (sync/safety.ts PrimaryFacts), in a file of its
 * own beside the ownership registry: `primary.json`. Readiness records it whenever a read
 * takes something away, without the sync lock and from any slotsync process on this node (the
 * service, `slotsync gate`), so it must never carry the copies: a writer that is not the
 * lock holder would otherwise write back an older list of them. Bound to the node by the
 * registry's marker: facts of another binding are not this node's.
 */
import { readFile } from 'node:fs/promises';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { formatLsn, type Lsn, parseLsn } from '../sync/lsn.js';
import type { PrimaryFacts } from '../sync/safety.js';

export const PRIMARY_FILE = 'primary.json';
const FORMAT = 'slotsync-primary-facts';

const NullableString = Type.Union([Type.String(), Type.Null()]);

/** The facts as stored (also inside registry.json files written before primary.json). */
export const StoredPrimary = Type.Object({
  standbySlot: Type.String(),
  waitsForStandby: Type.Boolean(),
  failoverSlots: Type.Array(Type.String()),
  ahead: Type.Array(Type.String()),
  quorumSilentMs: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
  diverged: Type.Optional(NullableString),
  unprotected: Type.Optional(NullableString),
  otherTimeline: Type.Optional(NullableString),
  standbyTimeline: Type.Optional(Type.Union([Type.Integer({ minimum: 0 }), Type.Null()])),
  standbySlots: Type.Optional(Type.Union([Type.Array(Type.String()), Type.Null()])),
  since: Type.String(),
  pastRemote: Type.Optional(
    Type.Array(Type.Object({ name: Type.String(), copy: Type.String(), remote: Type.String() })),
  ),
});
export type StoredPrimary = Static<typeof StoredPrimary>;

const StoredFile = Type.Object({
  format: Type.Literal(FORMAT),
  version: Type.Literal(1),
  /** The registry's node marker when written. */
  marker: Type.String(),
  primary: Type.Union([StoredPrimary, Type.Null()]),
});

/**
 * SLOTSYNC_ENGINE=builtin: the synced copies found past their remote slot (the remote made
 * again behind them), each with both positions, from a read of the primary made after the
 * read of the copy (engine/builtin.ts). Kept on disk: a restart with the primary gone must
 * not forget it (nobody else can move a synced copy back while the primary is away).
 */
export type PastRemote = ReadonlyMap<string, { copy: Lsn; remote: Lsn }>;

/** The primary's facts as kept: written when they change. */
export interface RecordedPrimary {
  facts: PrimaryFacts;
  /** When these facts were first read in this form (ms since the epoch). */
  since: number;
  /** Kept across every change of the facts; replaced only by a new comparison. */
  pastRemote?: PastRemote;
}

export function toStoredPrimary(recorded: RecordedPrimary): StoredPrimary {
  const stored: StoredPrimary = {
    ...recorded.facts,
    since: new Date(recorded.since).toISOString(),
  };
  if (recorded.pastRemote !== undefined && recorded.pastRemote.size > 0) {
    stored.pastRemote = [...recorded.pastRemote].map(([name, { copy, remote }]) => ({
      name,
      copy: formatLsn(copy),
      remote: formatLsn(remote),
    }));
  }
  return stored;
}

/** Both sets of evidence in one (the first one's positions where both name a copy). */
export function mergePastRemote(a: PastRemote, b: PastRemote | undefined): PastRemote {
  if (b === undefined || b.size === 0) return a;
  return new Map([...b, ...a]);
}

/** Whether two sets of evidence say the same. */
export function samePastRemote(a: PastRemote | undefined, b: PastRemote | undefined): boolean {
  const left = a ?? new Map();
  const right = b ?? new Map();
  if (left.size !== right.size) return false;
  for (const [name, { copy, remote }] of left) {
    const other = right.get(name);
    if (other === undefined || other.copy !== copy || other.remote !== remote) return false;
  }
  return true;
}

export function fromStoredPrimary(stored: StoredPrimary): RecordedPrimary {
  return {
    facts: {
      standbySlot: stored.standbySlot,
      waitsForStandby: stored.waitsForStandby,
      failoverSlots: stored.failoverSlots,
      ahead: stored.ahead,
      quorumSilentMs: stored.quorumSilentMs ?? null,
      diverged: stored.diverged ?? null,
      unprotected: stored.unprotected ?? null,
      otherTimeline: stored.otherTimeline ?? null,
      standbyTimeline: stored.standbyTimeline ?? null,
      standbySlots: stored.standbySlots ?? null,
    },
    since: Date.parse(stored.since),
    ...(stored.pastRemote === undefined
      ? {}
      : {
          pastRemote: new Map(
            stored.pastRemote.map((p) => [
              p.name,
              { copy: parseLsn(p.copy), remote: parseLsn(p.remote) },
            ]),
          ),
        }),
  };
}

export function primaryFileText(marker: string, recorded: RecordedPrimary | null): string {
  const stored: Static<typeof StoredFile> = {
    format: FORMAT,
    version: 1,
    marker,
    primary: recorded === null ? null : toStoredPrimary(recorded),
  };
  return `${JSON.stringify(stored, null, 1)}\n`;
}

/**
 * The facts in `path` for the node whose marker is `marker`: undefined when there is no
 * such file (the registry's own copy then counts), null when it holds none for this node.
 * A file that does not parse is an error (the caller names it).
 */
export async function readPrimaryFile(
  path: string,
  marker: string | null,
): Promise<RecordedPrimary | null | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  const parsed: unknown = JSON.parse(text);
  const problem = Value.Errors(StoredFile, parsed).First();
  if (problem) throw new Error(`${problem.path || '/'}: ${problem.message}`);
  const stored = parsed as Static<typeof StoredFile>;
  if (marker === null || stored.marker !== marker || stored.primary === null) return null;
  return fromStoredPrimary(stored.primary);
}
