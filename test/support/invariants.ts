/**
 * Invariants of DESIGN.md checked from outside on a real standby, for the tests, the soak
 * and the demo: no copy moves backwards (confirmed_flush, restart_lsn, catalog_xmin) or
 * past replay, and every copy on the standby is owned by slotsync's registry.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatLsn, type Lsn, parseLsn, transactionIdPrecedes } from '../../src/sync/lsn.js';
import type { Cluster } from './cluster.js';

interface Seen {
  confirmed: Lsn | null;
  restart: Lsn | null;
  xmin: number | null;
}

/**
 * Invariants 1 and 2 of DESIGN.md, checked on the standby after every cycle: no slot moves
 * backwards (confirmed_flush, restart_lsn, catalog_xmin) and none is past replay.
 */
export class InvariantChecker {
  readonly #seen = new Map<string, Seen>();
  checks = 0;

  /** With `stateDir`, invariants 7 and 8 are checked too (see checkPublished). */
  constructor(
    private readonly cluster: Cluster,
    private readonly stateDir?: string,
  ) {}

  async check(): Promise<void> {
    await this.#checkPositions();
    if (this.stateDir !== undefined) await checkPublished(this.cluster, this.stateDir);
    this.checks++;
  }

  async #checkPositions(): Promise<void> {
    const rows = await this.cluster.standby.sql<{
      slot_name: string;
      confirmed_flush_lsn: string | null;
      restart_lsn: string | null;
      catalog_xmin: string | null;
      replay: string;
    }>(
      `SELECT slot_name, confirmed_flush_lsn::text, restart_lsn::text, catalog_xmin::text,
              pg_last_wal_replay_lsn()::text AS replay
         FROM pg_replication_slots WHERE slot_type = 'logical'`,
    );
    const present = new Set<string>();
    for (const row of rows) {
      present.add(row.slot_name);
      const now: Seen = {
        confirmed: parseLsn(row.confirmed_flush_lsn),
        restart: parseLsn(row.restart_lsn),
        xmin: row.catalog_xmin === null ? null : Number(row.catalog_xmin),
      };
      const replay = parseLsn(row.replay);
      if (now.confirmed !== null) {
        assert.ok(
          now.confirmed <= replay,
          `${row.slot_name}: confirmed ${formatLsn(now.confirmed)} is past replay ${row.replay}`,
        );
      }
      const before = this.#seen.get(row.slot_name);
      if (before) {
        for (const key of ['confirmed', 'restart'] as const) {
          const a = before[key];
          const b = now[key];
          if (a !== null && b !== null) {
            assert.ok(
              b >= a,
              `${row.slot_name}: ${key} moved backwards ${formatLsn(a)} -> ${formatLsn(b)}`,
            );
          }
        }
        if (before.xmin !== null && now.xmin !== null) {
          assert.ok(
            !transactionIdPrecedes(now.xmin, before.xmin),
            `${row.slot_name}: catalog_xmin moved backwards`,
          );
        }
      }
      this.#seen.set(row.slot_name, now);
    }
    for (const name of this.#seen.keys()) if (!present.has(name)) this.#seen.delete(name);
  }
}

/** How long the invariant check waits for the primary before checking the standby alone. */
const PRIMARY_READ_TIMEOUT_MS = 2_000;

interface StoredEntry {
  name: string;
  stagingName?: string;
  state: string;
  confirmedFlushLsn: string | null;
}

async function readEntries(stateDir: string): Promise<StoredEntry[]> {
  const text = await readFile(join(stateDir, 'registry.json'), 'utf8').catch(() => '');
  return text ? (JSON.parse(text).slots as StoredEntry[]) : [];
}

/**
 * Invariants 7 and 8 of DESIGN.md, from outside: a slot slotsync owns under a remote
 * slot's name is recorded sync-ready (or mid-publication, made from a sync-ready staging
 * slot), is not invalidated, is not past the position slotsync recorded for it, and is
 * never ahead of its remote slot (so never ahead of the subscriber). Only meaningful
 * between cycles.
 */
export async function checkPublished(cluster: Cluster, stateDir: string): Promise<void> {
  const entries = new Map((await readEntries(stateDir)).map((e) => [e.name, e]));
  const standby = await cluster.standby.sql<{
    slot_name: string;
    confirmed_flush_lsn: string | null;
    invalidation_reason: string | null;
  }>(
    `SELECT slot_name, confirmed_flush_lsn::text, invalidation_reason
       FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT synced`,
  );
  // The primary may be down or frozen in a fault test: then only the standby-side checks
  // apply (a frozen server never answers, so the read is bounded).
  type Row = { slot_name: string; confirmed_flush_lsn: string | null };
  const read = cluster.primary
    .sql<Row>(
      `SELECT slot_name, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_type = 'logical'`,
    )
    .catch((): Row[] => []);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Row[]>((resolve) => {
    timer = setTimeout(() => resolve([]), PRIMARY_READ_TIMEOUT_MS);
  });
  const remoteRows = await Promise.race([read, timeout]).finally(() => clearTimeout(timer));
  const primary = new Map(remoteRows.map((r) => [r.slot_name, parseLsn(r.confirmed_flush_lsn)]));
  for (const row of standby) {
    const entry = entries.get(row.slot_name);
    if (entry === undefined || entry.state === 'invalidated') continue; // not slotsync's
    assert.ok(
      entry.state === 'sync_ready' || entry.state === 'publishing',
      `invariant 7: "${row.slot_name}" exists under the remote name while ${entry.state}`,
    );
    const at = parseLsn(row.confirmed_flush_lsn);
    const recorded = parseLsn(entry.confirmedFlushLsn);
    if (recorded !== null && at !== null) {
      assert.ok(
        at <= recorded,
        `invariant 8: "${row.slot_name}" at ${formatLsn(at)} is past what slotsync recorded (${formatLsn(recorded)})`,
      );
    }
    const remote = primary.get(row.slot_name);
    if (remote !== undefined && remote !== null && at !== null) {
      assert.ok(
        at <= remote,
        `invariant 7: "${row.slot_name}" at ${formatLsn(at)} is ahead of its remote slot (${formatLsn(remote)})`,
      );
    }
  }
}

/**
 * Logical slots on the standby that the registry in `stateDir` does not own (users' slots
 * listed in `foreign` aside): a copy owned by nobody. Must always be empty. Only meaningful
 * while no cycle runs (between the harness's cycles, after a kill -9): a cycle in flight
 * may drop a copy between the two reads.
 */
export async function unownedCopies(
  cluster: Cluster,
  stateDir: string,
  foreign: readonly string[] = [],
): Promise<string[]> {
  const owned = new Set<string>();
  for (const entry of await readEntries(stateDir)) {
    owned.add(entry.name);
    if (entry.stagingName) owned.add(entry.stagingName);
  }
  for (const name of foreign) owned.add(name);
  const rows = await cluster.standby.sql<{ slot_name: string }>(
    `SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical'`,
  );
  return rows.map((r) => r.slot_name).filter((name) => !owned.has(name));
}
