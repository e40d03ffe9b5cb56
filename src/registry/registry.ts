/**
 * The ownership registry: which slots on the standby slotsync made, and their state.
 * PostgreSQL cannot mark a slot as synced from SQL, so without this record slotsync could
 * not tell its copies from users' slots. Written crash-safely: a temporary file, fsync,
 * rename over the old one, fsync of the folder. A kill -9 at any moment leaves the previous
 * or the new content; content that does not parse stops the start instead of being replaced.
 */
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { messageOf, SlotSyncError } from '../errors.js';
import { formatLsn, parseLsn, parseXid } from '../sync/lsn.js';
import type { RegistryEntry } from '../sync/types.js';

const FILE_NAME = 'registry.json';
const FORMAT = 'slotsync-registry';

const NullableString = Type.Union([Type.String(), Type.Null()]);
const StoredEntry = Type.Object({
  name: Type.String({ minLength: 1 }),
  database: Type.String(),
  plugin: Type.String(),
  twoPhase: Type.Boolean(),
  state: Type.Union([
    Type.Literal('creating'),
    Type.Literal('temporary'),
    Type.Literal('sync_ready'),
    Type.Literal('invalidated'),
  ]),
  createdLsn: NullableString,
  createdAt: NullableString,
  confirmedFlushLsn: NullableString,
  restartLsn: NullableString,
  catalogXmin: Type.Union([Type.Integer({ minimum: 0 }), Type.Null()]),
  remoteInvalidation: NullableString,
  updatedAt: Type.String(),
});
const StoredRegistry = Type.Object({
  format: Type.Literal(FORMAT),
  version: Type.Literal(1),
  slots: Type.Array(StoredEntry),
});
type Stored = Static<typeof StoredRegistry>;

export type RegistryMap = ReadonlyMap<string, RegistryEntry>;

export class Registry {
  readonly path: string;
  #entries: RegistryMap;
  #fingerprint: string | null;
  #version = 0;
  #writtenAt = 0;

  private constructor(path: string, entries: RegistryMap, fingerprint: string | null) {
    this.path = path;
    this.#entries = entries;
    this.#fingerprint = fingerprint;
  }

  /** Loads the registry of `dir`, creating the folder; corrupt content is an error. */
  static async open(dir: string): Promise<Registry> {
    try {
      await mkdir(dir, { recursive: true });
    } catch (error) {
      throw new SlotSyncError(
        'SLOTSYNC_REGISTRY_WRITE',
        `SLOTSYNC_STATE_DIR: cannot create ${dir}: ${messageOf(error)}`,
      );
    }
    const path = join(dir, FILE_NAME);
    const { entries, fingerprint } = await readRegistry(path);
    return new Registry(path, entries, fingerprint);
  }

  get entries(): RegistryMap {
    return this.#entries;
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
    if (current === this.#fingerprint) return;
    const { entries, fingerprint } = await readRegistry(this.path);
    this.#entries = entries;
    this.#fingerprint = fingerprint;
    this.#version++;
  }

  /** Replaces the content durably; on failure the old content stays, in memory and on disk. */
  async write(entries: RegistryMap): Promise<void> {
    const stored: Stored = {
      format: FORMAT,
      version: 1,
      slots: [...entries.values()].map(toStored),
    };
    const text = `${JSON.stringify(stored, null, 1)}\n`;
    const temporary = `${this.path}.${process.pid}.tmp`;
    try {
      const handle = await open(temporary, 'w', 0o600);
      try {
        await handle.writeFile(text, 'utf8');
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, this.path);
      await syncFolder(join(this.path, '..'));
    } catch (error) {
      await unlink(temporary).catch(() => undefined);
      throw new SlotSyncError(
        'SLOTSYNC_REGISTRY_WRITE',
        `could not write the ownership registry ${this.path}: ${messageOf(error)}`,
        { cause: error },
      );
    }
    this.#entries = new Map(entries);
    this.#fingerprint = await fingerprintOf(this.path);
    this.#version++;
    this.#writtenAt = Date.now();
  }
}

async function readRegistry(
  path: string,
): Promise<{ entries: RegistryMap; fingerprint: string | null }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return { entries: new Map(), fingerprint: null };
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
  return { entries, fingerprint: await fingerprintOf(path) };
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

function fromStored(stored: Static<typeof StoredEntry>): RegistryEntry {
  return {
    ...stored,
    createdLsn: parseLsn(stored.createdLsn),
    confirmedFlushLsn: parseLsn(stored.confirmedFlushLsn),
    restartLsn: parseLsn(stored.restartLsn),
    catalogXmin: parseXid(stored.catalogXmin),
  };
}

async function fingerprintOf(path: string): Promise<string | null> {
  try {
    const info = await stat(path);
    return `${info.ino}:${info.size}:${info.mtimeMs}`;
  } catch {
    return null;
  }
}

async function syncFolder(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
