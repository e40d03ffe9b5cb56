/** Real PostgreSQL for integration tests: a cluster, the engine wired to it, invariant checks. */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import pg from 'pg';
import { type CycleResult, type EngineDeps, runCycle } from '../../src/engine/cycle.js';
import { createEngine, type Engine } from '../../src/engine/engine.js';
import type { SlotReport } from '../../src/sync/types.js';
import { delay } from '../../src/util.js';
import { type Cluster, type ClusterOptions, startCluster } from '../support/cluster.js';
import { InvariantChecker } from '../support/invariants.js';
import { tempDir, testConfig, testLogger } from './setup.js';

export { InvariantChecker };

export interface Harness {
  cluster: Cluster;
  stateDir: string;
  deps: EngineDeps;
  cycle(): Promise<CycleResult>;
  /** The report of one slot in a cycle. */
  slot(result: CycleResult, name: string): SlotReport;
  invariants: InvariantChecker;
  close(): Promise<void>;
}

export interface HarnessOptions extends ClusterOptions {
  /** More configuration for the engine, given the running cluster (a proxy's URL, timeouts). */
  env?: (cluster: Cluster) => Promise<Record<string, string>>;
}

/** An engine on `cluster` with the state folder `stateDir`, as a slotsync process has. */
export async function openEngine(
  cluster: Cluster,
  stateDir: string,
  env: Record<string, string> = {},
): Promise<Engine> {
  const config = testConfig(cluster, stateDir, { SLOTSYNC_CREATE_TIMEOUT_MS: '30000', ...env });
  return createEngine(config, testLogger());
}

export async function startHarness(options: HarnessOptions): Promise<Harness> {
  const cluster = await startCluster(options);
  const stateDir = await tempDir('state');
  const engine = await openEngine(cluster, stateDir, await options.env?.(cluster));
  const deps = engine.deps;
  const invariants = new InvariantChecker(cluster, stateDir);
  return {
    cluster,
    stateDir,
    deps,
    invariants,
    cycle: async () => {
      const result = await runCycle(deps);
      await invariants.check();
      return result;
    },
    slot: (result, name) => {
      const found = result.report.slots.find((s) => s.name === name);
      assert.ok(found, `slot ${name} is in the report: ${JSON.stringify(result.report.slots)}`);
      return found;
    },
    close: async () => {
      await engine.close();
      await cluster.stop();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

/** Creates a logical slot on the primary (failover by default). */
export async function createPrimarySlot(
  cluster: Cluster,
  name: string,
  options: { plugin?: string; failover?: boolean; twoPhase?: boolean; database?: string } = {},
): Promise<void> {
  await cluster.primary.sql(
    'SELECT pg_create_logical_replication_slot($1, $2, false, $3, $4)',
    [name, options.plugin ?? 'pgoutput', options.twoPhase ?? false, options.failover ?? true],
    options.database,
  );
}

/** Moves a primary slot's confirmed_flush_lsn to the primary's current WAL position. */
export async function advancePrimarySlot(cluster: Cluster, name: string): Promise<string> {
  const [row] = await cluster.primary.sql<{ lsn: string }>(
    `SELECT (pg_replication_slot_advance($1, pg_current_wal_lsn())).end_lsn::text AS lsn`,
    [name],
  );
  return row?.lsn ?? '';
}

/**
 * A prepared transaction on the primary: until it is committed, a copy created on the
 * standby cannot reach a consistent point, so its creation waits (up to its timeout).
 * `commit()` ends it; committing twice is harmless.
 */
export async function holdConsistentPoint(
  cluster: Cluster,
  gid: string,
): Promise<{ commit(): Promise<void> }> {
  const session = cluster.primary.client();
  await session.connect();
  try {
    await session.query('CREATE TABLE IF NOT EXISTS held_open (x int)');
    await session.query('BEGIN');
    await session.query('INSERT INTO held_open VALUES (1)');
    await session.query(`PREPARE TRANSACTION '${gid}'`);
  } finally {
    await session.end();
  }
  let committed = false;
  return {
    commit: async () => {
      if (committed) return;
      committed = true;
      await cluster.primary.sql(`COMMIT PREPARED '${gid}'`);
    },
  };
}

export async function writeRows(cluster: Cluster, rows = 100): Promise<void> {
  await cluster.primary.sql(
    'CREATE TABLE IF NOT EXISTS load (id bigserial primary key, payload text)',
  );
  await cluster.primary.sql(
    `INSERT INTO load (payload) SELECT md5(g::text) FROM generate_series(1, $1::int) g`,
    [rows],
  );
}

export async function slotRow(
  server: Cluster['primary'],
  name: string,
): Promise<
  | {
      confirmed_flush_lsn: string;
      restart_lsn: string;
      catalog_xmin: string;
      invalidation_reason: string | null;
    }
  | undefined
> {
  const [row] = await server.sql<{
    confirmed_flush_lsn: string;
    restart_lsn: string;
    catalog_xmin: string;
    invalidation_reason: string | null;
  }>(
    `SELECT confirmed_flush_lsn::text, restart_lsn::text, catalog_xmin::text, invalidation_reason
       FROM pg_replication_slots WHERE slot_name = $1`,
    [name],
  );
  return row;
}

/**
 * Holds the next cycle of `deps` between its reads and its actions until `open()` is
 * called; `reached` tells when a cycle is held there.
 */
export function holdNextCycle(deps: EngineDeps): { reached: () => boolean; open: () => void } {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  let reached = false;
  deps.pauseAt = async (point) => {
    if (point !== 'before_apply') return;
    reached = true;
    deps.pauseAt = undefined;
    return gate;
  };
  return { reached: () => reached, open };
}

/**
 * Runs `step` again and again, `pauseMs` apart, one at a time (a timer that fires while the
 * last step still runs would pile connections up on a busy machine). A failed step is
 * ignored; `stop()` resolves once the step in flight ended.
 */
export function repeatUntilStopped(
  step: () => Promise<unknown>,
  pauseMs: number,
): { stop: () => Promise<void> } {
  let running = true;
  const done = (async () => {
    while (running) {
      await step().catch(() => undefined);
      if (running) await delay(pauseMs);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/** Polls `condition` until it holds (never a fixed sleep as synchronization). */
export async function waitFor(
  what: string,
  condition: () => Promise<boolean>,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) return;
    await delay(25);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** A replication connection, for commands that have no SQL function (ALTER_REPLICATION_SLOT). */
export async function replicationCommand(cluster: Cluster, command: string): Promise<void> {
  await replicationCommandOn(cluster.primary, command);
}

/** The same on any server. */
export async function replicationCommandOn(
  server: Cluster['primary'],
  command: string,
): Promise<void> {
  const client = new pg.Client({
    connectionString: server.url(),
    replication: 'database',
  } as pg.ClientConfig & { replication: string });
  await client.connect();
  try {
    await client.query(command);
  } finally {
    await client.end();
  }
}

/**
 * Drops every logical slot on the primary and lets a cycle drop the copies: slotsync's own
 * way back to no copy, within one deployment (same state folder, same node marker).
 */
export async function dropRemotesAndSync(h: Harness): Promise<void> {
  await h.cluster.primary.sql(
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT active`,
  );
  await h.cluster.waitForReplay();
  await h.cycle();
}

/**
 * Drops every logical slot on both servers, whoever made it, and slotsync's node markers
 * (between service tests: the next test is a new deployment with a new state folder).
 */
export async function dropEverySlot(cluster: Cluster): Promise<void> {
  const drop = `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_type = 'logical' AND NOT active`;
  await cluster.primary.sql(drop);
  await cluster.waitForReplay();
  await cluster.standby.sql(drop);
  await dropNodeMarkers(cluster);
}

/**
 * Removes slotsync's node markers from the standby: what an operator does when retiring a
 * deployment, so that a new state folder may bind to this standby.
 */
export async function dropNodeMarkers(
  cluster: Cluster,
  standby: Cluster['standby'] = cluster.standby,
): Promise<void> {
  await standby.sql(
    `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
      WHERE slot_type = 'physical' AND slot_name LIKE 'slotsync\\_node\\_%' AND NOT active`,
  );
}

/** A consumer reads every change `slot` holds and confirms it (test_decoding: one line each). */
export async function consume(
  server: Cluster['primary'],
  slot: string,
): Promise<{ data: string }[]> {
  return server.sql<{ data: string }>(
    'SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)',
    [slot],
  );
}
