/** What the failover tests share: the subscriber's verdict, a pre_promote hook, slot facts. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Major } from '../support/binaries.js';
import { type Cluster, type ClusterOptions, startCluster } from '../support/cluster.js';
import type { PgServer } from '../support/server.js';
import { countRows, type Writer } from '../support/workload.js';
import { CLI, type Running, startProcess } from './cli.js';
import { waitFor } from './harness.js';
import { tempDir } from './setup.js';

const run = promisify(execFile);

/**
 * Errors a subscriber logs while its publisher goes down or changes: not a lost change (the
 * rows are checked apart). Among them, a new apply worker starting while the one before it,
 * of a re-pointed subscription, still holds the slot or the replication origin.
 */
const EXPECTED_SUBSCRIBER_ERRORS =
  /could not receive data from WAL stream|could not connect to the publisher|terminating logical replication worker due to|the database system is starting up|server closed the connection unexpectedly|terminating connection due to administrator command|the database system is shutting down|replication slot "[^"]+" is active for PID|replication origin with ID \d+ is already active for PID/;

/**
 * Stops the writer, then waits until the subscriber holds every row it committed and the
 * standbys replayed them: a failover from here must lose nothing. The last id written.
 */
export async function stopAndSettle(
  writer: Writer,
  subscriber: PgServer,
  cluster: Pick<Cluster, 'waitForReplay'>,
): Promise<number> {
  const last = await writer.stop();
  await waitFor(
    'the subscriber caught up',
    async () => (await countRows(subscriber)).count === last,
  );
  await cluster.waitForReplay();
  return last;
}

/** Subscriber rows are exactly 1..expected: none missing, none twice (id is the key). */
export async function assertExactlyOnce(cluster: Cluster, expected: number): Promise<void> {
  const subscriber = cluster.subscriber;
  assert.ok(subscriber);
  await waitFor(
    `the subscriber to hold ${expected} rows`,
    async () => (await countRows(subscriber)).count >= expected,
    60_000,
  );
  const [row] = await subscriber.sql<{ n: number; distinct_ids: number; min: number; max: number }>(
    'SELECT count(*)::int AS n, count(DISTINCT id)::int AS distinct_ids, min(id)::int AS min, max(id)::int AS max FROM items',
  );
  assert.deepEqual(row, { n: expected, distinct_ids: expected, min: 1, max: expected });
  // The only errors allowed are those of the publisher going down or changing.
  const errors = (await subscriber.logTail(2000))
    .split('\n')
    .filter((line) => /ERROR|FATAL/.test(line))
    .filter((line) => !EXPECTED_SUBSCRIBER_ERRORS.test(line));
  assert.deepEqual(
    errors,
    [],
    'the subscription applied every change without error (no duplicate key)',
  );
}

export interface HookResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * A Patroni-style `pre_promote` script (or repmgr's failover_validation_command) calling
 * `slotsync gate` with `args`: a non-zero exit stops the promotion.
 */
export async function prePromoteHook(
  dir: string,
  name: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<() => Promise<HookResult>> {
  const script = join(dir, `${name}.sh`);
  const quoted = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  await writeFile(
    script,
    `#!/bin/sh\nexec "${process.execPath}" --import tsx "${CLI}" gate ${quoted}\n`,
  );
  await chmod(script, 0o700);
  return async () => {
    const started = Date.now();
    const result = await run(script, [], {
      env: { PATH: process.env.PATH ?? '', ...env },
    }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({
        code: e.code,
        stdout: e.stdout,
        stderr: e.stderr,
      }),
    );
    return { ...result, ms: Date.now() - started };
  };
}

/** pg_replication_slots.failover of `slot` on `server`, undefined when it does not exist. */
export async function failoverOf(server: PgServer, slot: string): Promise<boolean | undefined> {
  const [row] = await server.sql<{ failover: boolean }>(
    'SELECT failover FROM pg_replication_slots WHERE slot_name = $1',
    [slot],
  );
  return row?.failover;
}

/** Stops `server`'s walreceiver (primary_conninfo cleared), until restored. */
export async function stopStreaming(server: PgServer): Promise<() => Promise<void>> {
  const [row] = await server.sql<{ conninfo: string }>(
    `SELECT setting AS conninfo FROM pg_settings WHERE name = 'primary_conninfo'`,
  );
  await server.sql(`ALTER SYSTEM SET primary_conninfo = ''`);
  await server.sql('SELECT pg_reload_conf()');
  await waitFor('the walreceiver stopped', async () => {
    const rows = await server.sql('SELECT 1 FROM pg_stat_wal_receiver');
    return rows.length === 0;
  });
  return async () => {
    await server.sql(`ALTER SYSTEM SET primary_conninfo = '${row?.conninfo ?? ''}'`);
    await server.sql('SELECT pg_reload_conf()');
  };
}

/** A JSON answer, read by tests as they like. */
// biome-ignore lint/suspicious/noExplicitAny: test code reads answers field by field
type Json = any;

/** slotsync as the process an operator runs beside one node. */
export interface Node {
  p: Running;
  env: Record<string, string>;
  stateDir: string;
}

/**
 * What a failover test sets up, torn down in reverse by close(): clusters, folders and
 * slotsync processes, with the questions a test asks them.
 */
export class Scenario {
  readonly #cleanups: (() => Promise<void>)[] = [];

  constructor(readonly major: Major) {}

  /** Registers a cleanup (run in reverse order by close()). */
  defer(cleanup: () => Promise<unknown>): void {
    this.#cleanups.push(async () => {
      await cleanup();
    });
  }

  async cluster(options: Omit<ClusterOptions, 'major'>): Promise<Cluster> {
    const cluster = await startCluster({ major: this.major, ...options });
    this.defer(() => cluster.stop());
    return cluster;
  }

  async folder(purpose: string): Promise<string> {
    const dir = await tempDir(purpose);
    this.defer(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }

  /** slotsync beside `at.standby` (the cluster's first standby) as a process. */
  async slotsync(
    cluster: Cluster,
    extra: Record<string, string> = {},
    at: { primaryUrl?: string; standby?: PgServer } = {},
  ): Promise<Node> {
    const stateDir = await this.folder('node-state');
    const env = {
      SLOTSYNC_PRIMARY_URL: at.primaryUrl ?? cluster.primary.url('postgres', 'node-pw'),
      SLOTSYNC_STANDBY_URL: (at.standby ?? cluster.standby).url('postgres', 'node-pw'),
      SLOTSYNC_STATE_DIR: stateDir,
      SLOTSYNC_NAPTIME_MIN_MS: '50',
      ...extra,
    };
    const p = await startProcess(env);
    this.defer(() => p.stop());
    return { p, env, stateDir };
  }

  /** slotsync started again with the same environment (same state folder). */
  async restart(node: Node): Promise<Node> {
    const p = await startProcess(node.env);
    this.defer(() => p.stop());
    return { ...node, p };
  }

  async get(node: Node, path: string): Promise<{ status: number; body: Json }> {
    const response = await fetch(`${node.p.base}${path}`);
    return { status: response.status, body: await response.json() };
  }

  async post(node: Node, path: string): Promise<{ status: number; body: Json }> {
    const response = await fetch(`${node.p.base}${path}`, { method: 'POST' });
    return { status: response.status, body: await response.json() };
  }

  async waitSafe(node: Node, slot: string, timeoutMs = 60_000): Promise<void> {
    let last: Json;
    await waitFor(
      `"${slot}" safe to promote onto`,
      async () => {
        const answer = await this.get(node, `/ready?slots=${slot}`);
        last = answer.body;
        return answer.status === 200;
      },
      timeoutMs,
    ).catch(async (error: Error) => {
      const slots = await this.get(node, '/slots').catch(() => ({ body: null }));
      const health = await this.get(node, '/health').catch(() => ({ body: null }));
      // What the node's slotsync said about the slot: why it stayed not ready.
      const said = node.p
        .output()
        .split('\n')
        .filter((line) => line.trim() !== '' && !line.includes('"component":"http"'))
        .slice(-40)
        .join('\n');
      throw new Error(
        `${error.message} at ${node.p.base}: ${JSON.stringify(last)}\nits slots: ${JSON.stringify(slots.body)}\nits health: ${JSON.stringify(health.body)}\nits log:\n${said}`,
      );
    });
  }

  async close(): Promise<void> {
    for (const cleanup of this.#cleanups.reverse()) await cleanup().catch(() => undefined);
  }
}
