/**
 * The ownership registry: which slots on the standby slotsync made, and their state.
 * PostgreSQL cannot mark a slot as synced from SQL, so without this record slotsync could
 * not tell its copies from users' slots. Written crash-safely: a temporary file, fsync,
 * rename over the old one, fsync of the folder. A kill -9 at any moment leaves the previous
 * or the new content; content that does not parse stops the start instead of being replaced.
 */
import { mkdir, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { messageOf, SlotSyncError } from '../errors.js';
import { formatLsn, parseLsn, parseXid } from '../sync/lsn.js';
import { stagingNameOf } from '../sync/names.js';
import type { NodeBinding, RegistryEntry } from '../sync/types.js';
import { fingerprintOf, writeAtomically } from './atomic.js';
import {
  fromStoredPrimary,
  PRIMARY_FILE,
  primaryFileText,
  type RecordedPrimary,
  readPrimaryFile,
  StoredPrimary,
  toStoredPrimary,
} from './primary-facts.js';

export type { RecordedPrimary } from './primary-facts.js';

const FILE_NAME = 'registry.json';
const FORMAT = 'slotsync-registry';

const NullableString = Type.Union([Type.String(), Type.Null()]);
const StoredEntry = Type.Object({
  name: Type.String({ minLength: 1 }),
  stagingName: Type.Optional(Type.String({ minLength: 1 })),
  database: Type.String(),
  plugin: Type.String(),
  twoPhase: Type.Boolean(),
  state: Type.Union([
    Type.Literal('creating'),
    Type.Literal('staging'),
    Type.Literal('publishing'),
    Type.Literal('sync_ready'),
    Type.Literal('retiring'),
    Type.Literal('invalidated'),
    // Version 1: a not-ready copy under the remote slot's own name (see migrate()).
    Type.Literal('temporary'),
  ]),
  createdLsn: NullableString,
  createdAt: NullableString,
  confirmedFlushLsn: NullableString,
  restartLsn: NullableString,
  catalogXmin: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  remoteInvalidation: NullableString,
  updatedAt: Type.String(),
});
const StoredNode = Type.Object({
  marker: Type.String({ minLength: 1 }),
  systemIdentifier: Type.String({ minLength: 1 }),
  timeline: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  /** Absent in files written before the binding had an intent: bound. */
  pending: Type.Optional(Type.Boolean()),
});
const StoredRegistry = Type.Object({
  format: Type.Literal(FORMAT),
  version: Type.Union([Type.Literal(1), Type.Literal(2)]),
  node: Type.Optional(Type.Union([StoredNode, Type.Null()])),
  primary: Type.Optional(Type.Union([StoredPrimary, Type.Null()])),
  slots: Type.Array(StoredEntry),
});
type Stored = Static<typeof StoredRegistry>;

export type RegistryMap = ReadonlyMap<string, RegistryEntry>;

interface Loaded {
  entries: RegistryMap;
  node: NodeBinding | null;
  primary: RecordedPrimary | null;
  fingerprint: string | null;
}

/**
 * The registry says which slots slotsync may drop: whoever can write its folder can make
 * slotsync drop a user's slot. As PostgreSQL does for its data folder, the start is refused
 * when the folder belongs to someone else or others may write to it.
 */
async function checkFolder(dir: string): Promise<void> {
  const info = await stat(dir);
  const uid = process.getuid?.();
  if (uid !== undefined && info.uid !== uid) {
    throw new SlotSyncError(
      'SLOTSYNC_CONFIG',
      `SLOTSYNC_STATE_DIR: ${dir} belongs to user ${info.uid}, not to the user slotsync runs as (${uid})`,
    );
  }
  if ((info.mode & 0o022) !== 0) {
    throw new SlotSyncError(
      'SLOTSYNC_CONFIG',
      `SLOTSYNC_STATE_DIR: ${dir} may be written by group or others (mode ${(info.mode & 0o777).toString(8)}); make it 0700`,
    );
  }
}

export class Registry {
  readonly path: string;
  #entries: RegistryMap;
  #node: NodeBinding | null;
  #primary: RecordedPrimary | null;
  #fingerprint: string | null;
  #version = 0;
  #writtenAt = 0;
  #queue: Promise<void> = Promise.resolve();
  /** primary.json beside the registry (RecordedPrimary), and its fingerprint. */
  readonly #primaryPath: string;
  #primaryFingerprint: string | null = null;

  private constructor(path: string, loaded: Loaded) {
    this.path = path;
    this.#primaryPath = join(path, '..', PRIMARY_FILE);
    this.#entries = loaded.entries;
    this.#node = loaded.node;
    this.#primary = loaded.primary;
    this.#fingerprint = loaded.fingerprint;
  }

  /** Loads the registry of `dir`, creating the folder; corrupt content is an error. */
  static async open(dir: string): Promise<Registry> {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (error) {
      throw new SlotSyncError(
        'SLOTSYNC_REGISTRY_WRITE',
        `SLOTSYNC_STATE_DIR: cannot create ${dir}: ${messageOf(error)}`,
      );
    }
    await checkFolder(dir);
    const path = join(dir, FILE_NAME);
    const registry = new Registry(path, await readRegistry(path));
    await registry.#loadPrimary();
    return registry;
  }

  /**
   * primary.json, when it exists, holds the primary's facts (the registry's own copy is what
   * files written before it had). Facts of another binding are not this node's.
   */
  async #loadPrimary(): Promise<void> {
    const fingerprint = await fingerprintOf(this.#primaryPath);
    if (fingerprint === this.#primaryFingerprint) return;
    let recorded: RecordedPrimary | null | undefined;
    try {
      recorded = await readPrimaryFile(this.#primaryPath, this.#node?.marker ?? null);
    } catch (error) {
      throw new SlotSyncError(
        'SLOTSYNC_REGISTRY_CORRUPT',
        `the primary's facts ${this.#primaryPath} are corrupt: ${messageOf(error)}`,
        { hint: 'Remove the file: the next read of the primary writes it again.' },
      );
    }
    if (recorded !== undefined) this.#primary = recorded;
    this.#primaryFingerprint = fingerprint;
  }

  get entries(): RegistryMap {
    return this.#entries;
  }

  /** The standby node this registry describes; null until the first cycle binds it. */
  get node(): NodeBinding | null {
    return this.#node;
  }

  /**
   * What the last read of the primary said about this standby: what promotion readiness
   * rests on once the primary is gone (sync/safety.ts). Null until a cycle read it.
   */
  get primary(): RecordedPrimary | null {
    return this.#primary;
  }

  /** Whether the file exists (a registry that was written once must never vanish). */
  get exists(): boolean {
    return this.#fingerprint !== null;
  }

  /** When this process last wrote the file (ms since the epoch; 0: never). */
  get writtenAt(): number {
    return this.#writtenAt;
  }

  /** Changes whenever the content may have changed (a write, or a reload from disk). */
  get version(): number {
    return this.#version;
  }

  /**
   * Reloads when another process (or an operator) replaced the file since we last read or
   * wrote it; cheap when nothing changed (one stat).
   */
  async refresh(): Promise<void> {
    const current = await fingerprintOf(this.path);
    if (current === this.#fingerprint) {
      await this.#loadPrimary();
      return;
    }
    if (current === null) {
      throw new SlotSyncError(
        'SLOTSYNC_REGISTRY_CORRUPT',
        `SLOTSYNC_STATE_DIR: the ownership registry ${this.path} vanished after it was written`,
        {
          hint: 'slotsync will not guess which slots it owns. Restore the file, or restart with SLOTSYNC_RESET_STATE=on to start afresh.',
        },
      );
    }
    const loaded = await readRegistry(this.path);
    this.#entries = loaded.entries;
    this.#node = loaded.node;
    this.#primary = loaded.primary;
    this.#fingerprint = loaded.fingerprint;
    this.#primaryFingerprint = null;
    await this.#loadPrimary();
    this.#version++;
  }

  /**
   * SLOTSYNC_RESET_STATE: the file is moved aside (kept for the operator, never deleted)
   * and the registry starts empty and unbound.
   */
  async reset(): Promise<void> {
    if (this.#fingerprint !== null) {
      const aside = `${this.path}.reset-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      await rename(this.path, aside);
    }
    if (this.#primaryFingerprint !== null) {
      const aside = `${this.#primaryPath}.reset-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      await rename(this.#primaryPath, aside).catch(() => undefined);
      this.#primaryFingerprint = null;
    }
    this.#entries = new Map();
    this.#node = null;
    this.#primary = null;
    this.#fingerprint = null;
    this.#version++;
  }

  /**
   * Replaces the content durably; on failure the old content stays, in memory and on disk.
   * The node binding and the primary's facts stay as they are unless given.
   */
  async write(entries: RegistryMap, changes: { node?: NodeBinding | null } = {}): Promise<void> {
    return this.#serial(() => this.#write(entries, changes));
  }

  /**
   * Records the primary's facts in primary.json, never touching the copies: `update` gets
   * the facts as they are on disk when the write runs (another slotsync process on this node
   * may have written since) and returns the new ones, or undefined to leave them. Only a
   * registry bound to a node writes them (an unbound one owns no copy: nothing rests on
   * them); it keeps them in memory.
   */
  async writePrimary(
    update: (current: RecordedPrimary | null) => RecordedPrimary | null | undefined,
  ): Promise<void> {
    return this.#serial(async () => {
      await this.#loadPrimary().catch(() => undefined);
      const next = update(this.#primary);
      if (next === undefined) return;
      const node = this.#node;
      if (node === null) {
        this.#primary = next;
        return;
      }
      try {
        await writeAtomically(this.#primaryPath, primaryFileText(node.marker, next));
      } catch (error) {
        throw new SlotSyncError(
          'SLOTSYNC_REGISTRY_WRITE',
          `could not write the primary's facts ${this.#primaryPath}: ${messageOf(error)}`,
          { cause: error },
        );
      }
      this.#primary = next;
      this.#primaryFingerprint = await fingerprintOf(this.#primaryPath);
    });
  }

  /** Writes one at a time, in the order asked; a failed one does not stop the next. */
  #serial(write: () => Promise<void>): Promise<void> {
    const run = this.#queue.then(write, write);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #write(entries: RegistryMap, changes: { node?: NodeBinding | null }): Promise<void> {
    const node = changes.node === undefined ? this.#node : changes.node;
    // A copy of the primary's facts for files read by versions before primary.json.
    const primary = this.#primary;
    const stored: Stored = {
      format: FORMAT,
      version: 2,
      node,
      primary: primary === null ? null : toStoredPrimary(primary),
      slots: [...entries.values()].map(toStored),
    };
    try {
      await writeAtomically(this.path, `${JSON.stringify(stored, null, 1)}\n`);
    } catch (error) {
      throw new SlotSyncError(
        'SLOTSYNC_REGISTRY_WRITE',
        `could not write the ownership registry ${this.path}: ${messageOf(error)}`,
        { cause: error },
      );
    }
    this.#entries = new Map(entries);
    this.#node = node;
    this.#fingerprint = await fingerprintOf(this.path);
    this.#version++;
    this.#writtenAt = Date.now();
  }
}

async function readRegistry(path: string): Promise<Loaded> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return { entries: new Map(), node: null, primary: null, fingerprint: null };
    }
    throw new SlotSyncError(
      'SLOTSYNC_REGISTRY_CORRUPT',
      `cannot read the ownership registry ${path}: ${messageOf(error)}`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw corrupt(path, `it is not JSON (${messageOf(error)})`);
  }
  const problem = Value.Errors(StoredRegistry, parsed).First();
  if (problem) throw corrupt(path, `${problem.path || '/'}: ${problem.message}`);
  const entries = new Map<string, RegistryEntry>();
  try {
    for (const stored of (parsed as Stored).slots) entries.set(stored.name, fromStored(stored));
  } catch (error) {
    throw corrupt(path, messageOf(error));
  }
  const stored = parsed as Stored;
  const primary = stored.primary ?? null;
  return {
    entries,
    node: stored.node ?? null,
    primary: primary === null ? null : fromStoredPrimary(primary),
    fingerprint: await fingerprintOf(path),
  };
}

function corrupt(path: string, detail: string): SlotSyncError {
  return new SlotSyncError(
    'SLOTSYNC_REGISTRY_CORRUPT',
    `the ownership registry ${path} is corrupt: ${detail}`,
    {
      hint: "slotsync will not guess which slots it owns. Restore the file from a backup, or move it away to start with an empty registry (copies made earlier are then treated as users' slots and never touched).",
    },
  );
}

function toStored(entry: RegistryEntry): Static<typeof StoredEntry> {
  return {
    ...entry,
    createdLsn: formatLsn(entry.createdLsn),
    confirmedFlushLsn: formatLsn(entry.confirmedFlushLsn),
    restartLsn: formatLsn(entry.restartLsn),
  };
}

/**
 * Version 1 kept a not-ready copy under the remote slot's own name, which promotion would
 * hand to a subscriber (DESIGN.md invariant 7): such a copy is retired (dropped, then
 * staged afresh). Sync-ready copies stay, checked by the fencing rule like any other.
 */
function migratedState(state: Static<typeof StoredEntry>['state']): RegistryEntry['state'] {
  return state === 'temporary' || state === 'creating' ? 'retiring' : state;
}

function fromStored(stored: Static<typeof StoredEntry>): RegistryEntry {
  const v1 = stored.stagingName === undefined;
  return {
    ...stored,
    stagingName: stored.stagingName ?? stagingNameOf(stored.name),
    state: v1 ? migratedState(stored.state) : (stored.state as RegistryEntry['state']),
    createdLsn: parseLsn(stored.createdLsn),
    confirmedFlushLsn: parseLsn(stored.confirmedFlushLsn),
    restartLsn: parseLsn(stored.restartLsn),
    catalogXmin: parseXid(stored.catalogXmin),
  };
}
