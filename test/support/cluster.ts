/**
 * A primary and a physical standby (and optionally a subscriber) of PostgreSQL 17 or 18,
 * configured for slot synchronization. Used by the tests, the demo and the benchmark.
 *
 * The standby is a cold copy of the cleanly stopped primary (the packages ship no
 * pg_basebackup): initdb, configure, create the physical slot, stop, copy, start both.
 */
import { execFile } from 'node:child_process';
import { chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { delay } from '../../src/util.js';
import { binariesFor, type Major } from './binaries.js';
import { PgServer, type Settings } from './server.js';
import { serverUser } from './user.js';

const execFileAsync = promisify(execFile);

export const STANDBY_SLOT = 'standby_slot';

export interface ClusterOptions {
  major: Major;
  /** Start a third, independent server to subscribe from the primary. */
  subscriber?: boolean;
  primarySettings?: Settings;
  standbySettings?: Settings;
  subscriberSettings?: Settings;
  /** Name the standby's slot in the primary's synchronized_standby_slots. */
  synchronizedStandbySlots?: boolean;
  /** Folder for the servers; a fresh temporary one by default. */
  root?: string;
}

export interface Cluster {
  major: Major;
  root: string;
  primary: PgServer;
  standby: PgServer;
  subscriber: PgServer | undefined;
  /** Waits until the standby has replayed everything the primary has written so far. */
  waitForReplay(timeoutMs?: number): Promise<void>;
  /**
   * A planned switchover: the primary stops cleanly, the standby is promoted, and the old
   * primary rejoins as the new primary's standby (with its own slots still on it).
   * `primary` and `standby` swap. `beforeRejoin` runs once the standby is promoted.
   */
  switchover(options?: { beforeRejoin?: () => Promise<void> }): Promise<void>;
  /** Stops every server and removes the folder. Idempotent. */
  stop(): Promise<void>;
}

const BASE_SETTINGS: Settings = {
  wal_level: 'logical',
  max_replication_slots: 1100,
  max_wal_senders: 16,
  max_connections: 200,
  hot_standby: true,
  hot_standby_feedback: true,
  shared_buffers: '32MB',
  fsync: false,
  full_page_writes: true,
  max_prepared_transactions: 10,
  wal_receiver_status_interval: 1,
  log_min_messages: 'warning',
  log_line_prefix: '%m [%p] ',
};

const live = new Set<Cluster>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // The watchdogs stop servers of a process that died; this stops them at a normal exit.
  process.once('exit', () => {
    for (const cluster of live) {
      for (const server of [cluster.primary, cluster.standby, cluster.subscriber]) {
        if (server?.pid) {
          try {
            process.kill(server.pid, 'SIGQUIT');
          } catch {
            // already gone
          }
        }
      }
    }
  });
}

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  installExitHook();
  const runAs = serverUser();
  const binaries = await binariesFor(options.major, runAs);
  const root = options.root ?? (await mkdtemp(join(tmpdir(), `slotsync-pg${options.major}-`)));
  if (runAs) await chown(root, runAs.uid, runAs.gid);
  const make = (name: string) => new PgServer({ name, root, binaries, runAs });
  const primary = make('primary');
  const standby = make('standby');
  const subscriber = options.subscriber ? make('subscriber') : undefined;

  const cluster: Cluster = {
    major: options.major,
    root,
    primary,
    standby,
    subscriber,
    waitForReplay: (timeoutMs = 30_000) =>
      waitForReplay(cluster.primary, cluster.standby, timeoutMs),
    switchover: async (options = {}) => {
      const [oldPrimary, newPrimary] = [cluster.primary, cluster.standby];
      await cluster.waitForReplay();
      await oldPrimary.stop('fast');
      await newPrimary.promote();
      await options.beforeRejoin?.();
      await newPrimary.sql(`SELECT pg_create_physical_replication_slot($1, true)`, [STANDBY_SLOT]);
      await writeFile(join(oldPrimary.dataDir, 'standby.signal'), '');
      if (runAs) await chown(join(oldPrimary.dataDir, 'standby.signal'), runAs.uid, runAs.gid);
      await oldPrimary.configure({
        primary_conninfo: `host=127.0.0.1 port=${newPrimary.port} user=postgres dbname=postgres application_name=standby`,
        primary_slot_name: STANDBY_SLOT,
        synchronized_standby_slots: '',
      });
      await oldPrimary.start();
      cluster.primary = newPrimary;
      cluster.standby = oldPrimary;
      await waitForStreaming(newPrimary);
    },
    stop: async () => {
      live.delete(cluster);
      await Promise.all(
        [cluster.primary, cluster.standby, subscriber].map((s) => s?.stop('immediate')),
      );
      await rm(root, { recursive: true, force: true });
    },
  };
  live.add(cluster);
  try {
    await Promise.all([primary.initdb(), subscriber?.initdb()]);
    await primary.configure({
      ...BASE_SETTINGS,
      ...(options.synchronizedStandbySlots ? { synchronized_standby_slots: STANDBY_SLOT } : {}),
      ...options.primarySettings,
    });
    await primary.start();
    await primary.sql(`SELECT pg_create_physical_replication_slot($1, true)`, [STANDBY_SLOT]);
    await primary.stop('fast');
    await copyAsServerUser(primary.dataDir, standby.dataDir, runAs);
    await rm(join(standby.dataDir, 'pg_replslot'), { recursive: true, force: true });
    await mkdirAsServerUser(join(standby.dataDir, 'pg_replslot'), runAs);
    await rm(join(standby.dataDir, 'postmaster.pid'), { force: true });
    await writeFile(join(standby.dataDir, 'standby.signal'), '');
    if (runAs) await chown(join(standby.dataDir, 'standby.signal'), runAs.uid, runAs.gid);
    await primary.start();
    await standby.configure({
      primary_conninfo: `host=127.0.0.1 port=${primary.port} user=postgres dbname=postgres application_name=standby`,
      primary_slot_name: STANDBY_SLOT,
      synchronized_standby_slots: '',
      ...options.standbySettings,
    });
    const subscriberReady = subscriber
      ? subscriber
          .configure({ ...BASE_SETTINGS, max_replication_slots: 20, ...options.subscriberSettings })
          .then(() => subscriber.start())
      : Promise.resolve();
    await Promise.all([standby.start(), subscriberReady]);
    await waitForStreaming(primary);
    return cluster;
  } catch (error) {
    await cluster.stop().catch(() => undefined);
    throw error;
  }
}

async function copyAsServerUser(from: string, to: string, runAs: ReturnType<typeof serverUser>) {
  await execFileAsync('cp', ['-a', from, to], runAs ? { uid: runAs.uid, gid: runAs.gid } : {});
}

async function mkdirAsServerUser(path: string, runAs: ReturnType<typeof serverUser>) {
  await execFileAsync(
    'mkdir',
    ['-m', '700', path],
    runAs ? { uid: runAs.uid, gid: runAs.gid } : {},
  );
}

async function waitForStreaming(primary: PgServer): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const rows = await primary.sql<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming'`,
    );
    if ((rows[0]?.n ?? 0) > 0) return;
    await delay(50);
  }
  throw new Error(`the standby did not start streaming within 60 s\n${await primary.logTail()}`);
}

async function waitForReplay(
  primary: PgServer,
  standby: PgServer,
  timeoutMs: number,
): Promise<void> {
  const [row] = await primary.sql<{ lsn: string }>(
    'SELECT pg_current_wal_flush_lsn()::text AS lsn',
  );
  const target = row?.lsn;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const [done] = await standby.sql<{ ok: boolean }>(
      'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok',
      [target],
    );
    if (done?.ok) return;
    await delay(20);
  }
  throw new Error(`the standby did not replay up to ${target} within ${timeoutMs} ms`);
}
