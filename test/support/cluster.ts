/**
 * A primary and its physical standbys (and optionally a subscriber) of PostgreSQL 17 or 18,
 * configured for slot synchronization. Used by the tests, the demo and the benchmark.
 *
 * The standbys are cold copies of the cleanly stopped primary (the packages ship no
 * pg_basebackup): initdb, configure, create the physical slots, stop, copy, start them all.
 * Roles change as in production: an unplanned failover (the primary killed, a standby
 * promoted, the others re-pointed at it) and a node rejoining as a standby of the new
 * primary by a fresh online copy (pg_backup_start() / pg_backup_stop()).
 */
import { execFile } from 'node:child_process';
import { chown, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { delay } from '../../src/util.js';
import { binariesFor, type Major } from './binaries.js';
import { PgServer, type Settings } from './server.js';
import { serverUser } from './user.js';

const execFileAsync = promisify(execFile);

export const STANDBY_SLOT = 'standby_slot';

/** The physical slot a node streams through, on whichever node is its primary. */
export function slotOf(server: PgServer): string {
  return `${server.name}_slot`;
}

export interface ClusterOptions {
  major: Major;
  /** Physical standbys: `standby`, then `standby2`, ... (1 by default). */
  standbys?: number;
  /** Start a third, independent server to subscribe from the primary. */
  subscriber?: boolean;
  primarySettings?: Settings;
  standbySettings?: Settings;
  subscriberSettings?: Settings;
  /**
   * Name every standby's slot in the primary's synchronized_standby_slots (ALL of them, as
   * PostgreSQL and the operators do), and again after each failover.
   */
  synchronizedStandbySlots?: boolean;
  /** Folder for the servers; a fresh temporary one by default. */
  root?: string;
}

export interface Cluster {
  major: Major;
  root: string;
  primary: PgServer;
  /** The first standby (standbys[0]). */
  standby: PgServer;
  /** Every standby of the current primary. */
  standbys: PgServer[];
  subscriber: PgServer | undefined;
  /** Waits until every standby has replayed everything the primary has written so far. */
  waitForReplay(timeoutMs?: number): Promise<void>;
  /**
   * An unplanned failover: the primary is killed (pg_ctl stop -m immediate) unless
   * `keepOld`, `to` is promoted, and the other standbys are re-pointed at it (their slots
   * made there first). The old primary is left out of `standbys` (see rejoin()).
   */
  failover(to: PgServer, options?: { keepOld?: boolean }): Promise<PgServer>;
  /**
   * `server` (stopped, or still running as a fenced old primary) becomes a standby of the
   * current primary by a fresh online copy: its data folder is replaced.
   */
  rejoin(server: PgServer): Promise<void>;
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
  // The benchmark's 1,000 failover slots, each staged then published by a copy: both exist
  // for a moment on the standby (docs/configuration.md).
  max_replication_slots: 2100,
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
  const standbys = Array.from({ length: options.standbys ?? 1 }, (_, i) =>
    make(i === 0 ? 'standby' : `standby${i + 1}`),
  );
  const subscriber = options.subscriber ? make('subscriber') : undefined;
  const standbySlots = (servers: readonly PgServer[]) => servers.map(slotOf).join(',');

  /** `server` streams from `upstream` through its own slot there. */
  const follow = async (server: PgServer, upstream: PgServer) => {
    await server.configure({
      primary_conninfo: `host=127.0.0.1 port=${upstream.port} user=postgres dbname=postgres application_name=${server.name}`,
      primary_slot_name: slotOf(server),
      synchronized_standby_slots: '',
      ...options.standbySettings,
    });
  };

  const cluster: Cluster = {
    major: options.major,
    root,
    primary,
    standby: standbys[0] as PgServer,
    standbys,
    subscriber,
    waitForReplay: async (timeoutMs = 30_000) => {
      for (const standby of cluster.standbys) {
        await waitForReplay(cluster.primary, standby, timeoutMs);
      }
    },
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
      cluster.standbys = [oldPrimary];
      await waitForStreaming(newPrimary);
    },
    failover: async (to, failoverOptions = {}) => {
      const old = cluster.primary;
      if (!failoverOptions.keepOld) await old.stop('immediate');
      // Promoted already (a test that times the promotion itself): the rest follows.
      const [state] = await to.sql<{ standby: boolean }>('SELECT pg_is_in_recovery() AS standby');
      if (state?.standby) await to.promote();
      const others = cluster.standbys.filter((s) => s !== to);
      for (const other of others) {
        await to.sql('SELECT pg_create_physical_replication_slot($1, true)', [slotOf(other)]);
      }
      if (options.synchronizedStandbySlots && others.length > 0) {
        await to.sql(`ALTER SYSTEM SET synchronized_standby_slots = '${standbySlots(others)}'`);
        await to.sql('SELECT pg_reload_conf()');
      }
      for (const other of others) {
        await other.sql(
          `ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=${to.port} user=postgres dbname=postgres application_name=${other.name}'`,
        );
        await other.sql('SELECT pg_reload_conf()');
      }
      cluster.primary = to;
      cluster.standbys = others;
      cluster.standby = others[0] ?? to;
      for (const other of others) await waitForStreaming(to, other.name);
      return old;
    },
    rejoin: async (server) => {
      await server.stop('immediate');
      await rm(server.dataDir, { recursive: true, force: true });
      const upstream = cluster.primary;
      await upstream.sql(
        `SELECT pg_create_physical_replication_slot($1, true)
          WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
        [slotOf(server)],
      );
      // A non-exclusive online backup: one session from start to stop.
      const session = upstream.client();
      await session.connect();
      try {
        await session.query(`SELECT pg_backup_start('slotsync-rejoin', true)`);
        await copyAsServerUser(upstream.dataDir, server.dataDir, runAs, true);
        const { rows } = await session.query<{ labelfile: string }>(
          'SELECT labelfile FROM pg_backup_stop(false)',
        );
        for (const dir of ['pg_wal', 'pg_replslot']) {
          await rm(join(server.dataDir, dir), { recursive: true, force: true });
          await mkdirAsServerUser(join(server.dataDir, dir), runAs);
        }
        await mkdirAsServerUser(join(server.dataDir, 'pg_wal', 'archive_status'), runAs);
        await rm(join(server.dataDir, 'postmaster.pid'), { force: true });
        await writeAsServerUser(
          join(server.dataDir, 'backup_label'),
          rows[0]?.labelfile ?? '',
          runAs,
        );
        // ALTER SYSTEM settings of the upstream's own past (where it streamed from as a
        // standby) would override the ones this node follows with.
        const auto = join(server.dataDir, 'postgresql.auto.conf');
        const kept = (await readFile(auto, 'utf8').catch(() => ''))
          .split('\n')
          .filter(
            (line) =>
              !/^\s*(primary_conninfo|primary_slot_name|synchronized_standby_slots)\s*=/.test(line),
          )
          .join('\n');
        await writeAsServerUser(auto, kept, runAs);
      } finally {
        await session.end();
      }
      await writeAsServerUser(join(server.dataDir, 'standby.signal'), '', runAs);
      await follow(server, upstream);
      await server.start();
      cluster.standbys = [...cluster.standbys.filter((s) => s !== server), server];
      cluster.standby = cluster.standbys[0] as PgServer;
      await waitForStreaming(upstream, server.name);
      if (options.synchronizedStandbySlots) {
        await upstream.sql(
          `ALTER SYSTEM SET synchronized_standby_slots = '${standbySlots(cluster.standbys)}'`,
        );
        await upstream.sql('SELECT pg_reload_conf()');
      }
    },
    stop: async () => {
      live.delete(cluster);
      await Promise.all([primary, ...standbys, subscriber].map((s) => s?.stop('immediate')));
      await rm(root, { recursive: true, force: true });
    },
  };
  live.add(cluster);
  try {
    await Promise.all([primary.initdb(), subscriber?.initdb()]);
    await primary.configure({
      ...BASE_SETTINGS,
      ...(options.synchronizedStandbySlots
        ? { synchronized_standby_slots: standbySlots(standbys) }
        : {}),
      ...options.primarySettings,
    });
    await primary.start();
    for (const standby of standbys) {
      await primary.sql(`SELECT pg_create_physical_replication_slot($1, true)`, [slotOf(standby)]);
    }
    await primary.stop('fast');
    for (const standby of standbys) {
      await copyAsServerUser(primary.dataDir, standby.dataDir, runAs);
      await rm(join(standby.dataDir, 'pg_replslot'), { recursive: true, force: true });
      await mkdirAsServerUser(join(standby.dataDir, 'pg_replslot'), runAs);
      await rm(join(standby.dataDir, 'postmaster.pid'), { force: true });
      await writeAsServerUser(join(standby.dataDir, 'standby.signal'), '', runAs);
    }
    await primary.start();
    for (const standby of standbys) await follow(standby, primary);
    const subscriberSettings = {
      ...BASE_SETTINGS,
      max_replication_slots: 20,
      ...options.subscriberSettings,
    };
    // PostgreSQL 18 counts a subscriber's replication origins (one per subscription and per
    // table being synced) against max_active_replication_origins, no longer max_replication_slots.
    if (options.major >= 18) {
      Object.assign(subscriberSettings, {
        max_active_replication_origins: subscriberSettings.max_replication_slots,
      });
    }
    const subscriberReady = subscriber
      ? subscriber.configure(subscriberSettings).then(() => subscriber.start())
      : Promise.resolve();
    await Promise.all([...standbys.map((s) => s.start()), subscriberReady]);
    for (const standby of standbys) await waitForStreaming(primary, standby.name);
    return cluster;
  } catch (error) {
    await cluster.stop().catch(() => undefined);
    throw error;
  }
}

/**
 * `cp -a` as the servers' user. `live`: the source is a running server's folder (an online
 * backup): files that change or vanish meanwhile are what the backup's WAL replay mends.
 */
async function copyAsServerUser(
  from: string,
  to: string,
  runAs: ReturnType<typeof serverUser>,
  live = false,
) {
  try {
    await execFileAsync('cp', ['-a', from, to], runAs ? { uid: runAs.uid, gid: runAs.gid } : {});
  } catch (error) {
    if (!live) throw error;
  }
}

async function writeAsServerUser(path: string, text: string, runAs: ReturnType<typeof serverUser>) {
  await writeFile(path, text);
  if (runAs) await chown(path, runAs.uid, runAs.gid);
}

async function mkdirAsServerUser(path: string, runAs: ReturnType<typeof serverUser>) {
  await execFileAsync(
    'mkdir',
    ['-m', '700', path],
    runAs ? { uid: runAs.uid, gid: runAs.gid } : {},
  );
}

/** Waits until `name` (any standby when omitted) streams from `primary`. */
async function waitForStreaming(primary: PgServer, name?: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const rows = await primary.sql<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_replication
        WHERE state = 'streaming' AND ($1::text IS NULL OR application_name = $1)`,
      [name ?? null],
    );
    if ((rows[0]?.n ?? 0) > 0) return;
    await delay(50);
  }
  throw new Error(
    `${name ?? 'the standby'} did not start streaming within 60 s\n${await primary.logTail()}`,
  );
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
