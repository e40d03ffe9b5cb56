/**
 * npm run bench -- --quorum [--pg 17|18] [--subs 10] [--wal-mb-s 2] [--stop-seconds 60]
 *
 * One of two standbys stopped for a minute, side by side in one run: a primary writing
 * ~2 MB/s, `--subs` real subscriptions (failover = true) and one more that carries rows
 * (to count them after a failover), two standbys, one slotsync beside every node.
 * 1. `all`: synchronized_standby_slots names both standbys (what PostgreSQL and the
 *    operators do today); the second standby is stopped.
 * 2. `quorum`: SLOTSYNC_STANDBY_SLOTS_QUORUM='ANY 1 (standby_slot, standby2_slot)' managed
 *    by slotsync; the standby in the set is stopped (the worst case: it must be replaced).
 *    Near the end of the minute the primary is killed, the other standby promoted, and the
 *    row-carrying subscription must hold every row exactly once.
 * Over the minute it samples the consumers' lag (from their confirmed_flush_lsn, through a
 * map of the primary's WAL position to time) and whether the stopped standby's slotsync
 * calls it safe to promote onto.
 */
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import pg from 'pg';
import { pino } from 'pino';
import { numberOption, option } from '../scripts/args.js';
import { loadConfig } from '../src/config.js';
import { SlotSyncService } from '../src/service/service.js';
import { parseLsn } from '../src/sync/lsn.js';
import { delay } from '../src/util.js';
import type { Major } from '../test/support/binaries.js';
import { slotOf, startCluster } from '../test/support/cluster.js';
import type { PgServer } from '../test/support/server.js';
import {
  countRows,
  pointSubscriptionAt,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../test/support/workload.js';
import { subscribe, WalClock, WalWriter } from './load.js';
import { percentile, round } from './stats.js';

const log = (line: string) => process.stderr.write(`${line}\n`);
const SAMPLE_MS = 200;
const QUORUM = 'ANY 1 (standby_slot, standby2_slot)';

interface Figures {
  mode: 'all' | 'quorum';
  lag_p50_ms: number;
  lag_p99_ms: number;
  lag_max_ms: number;
  /** From the stop to the stopped standby's slot leaving the setting (quorum). */
  replaced_after_ms: number | null;
  /** Samples in which the stopped standby's slotsync said "safe to promote onto". */
  stopped_called_safe: number;
  samples: number;
  /** quorum: the failover onto the other standby during the minute. */
  failover: { gate_ready: boolean; rows: number; exact: boolean } | null;
}

async function standbySlots(primary: pg.Client): Promise<string[]> {
  const { rows } = await primary.query<{ s: string }>(
    `SELECT current_setting('synchronized_standby_slots') AS s`,
  );
  return (rows[0]?.s ?? '').split(',').filter(Boolean);
}

async function runMode(
  mode: 'all' | 'quorum',
  options: { major: Major; subs: number; walMbS: number; stopSeconds: number },
): Promise<Figures> {
  log(
    `\n== ${mode}: ${options.subs} subscriptions, ${options.walMbS} MB/s, PostgreSQL ${options.major}`,
  );
  const cluster = await startCluster({
    major: options.major,
    standbys: 2,
    subscriber: true,
    synchronizedStandbySlots: true,
    primarySettings: { max_wal_senders: options.subs + 12 },
    subscriberSettings: {
      max_replication_slots: options.subs + 12,
      max_logical_replication_workers: options.subs + 6,
      max_worker_processes: options.subs + 18,
    },
  });
  const services: SlotSyncService[] = [];
  const writer = new WalWriter(cluster.primary, options.walMbS * 2 ** 20);
  const rows = new Writer(20);
  const primary = new pg.Client({ connectionString: cluster.primary.url() });
  primary.on('error', () => undefined); // the primary is killed on purpose
  try {
    const names = Array.from({ length: options.subs }, (_, i) => `quorum_sub_${i + 1}`);
    await subscribe(cluster, names);
    await setupSubscription(cluster.primary, cluster.subscriber as PgServer);
    await cluster.waitForReplay();
    const serviceOf = new Map<PgServer, SlotSyncService>();
    for (const node of [cluster.primary, ...cluster.standbys]) {
      const config = loadConfig({
        SLOTSYNC_PRIMARY_URL: cluster.primary.url(),
        SLOTSYNC_STANDBY_URL: node.url(),
        SLOTSYNC_STATE_DIR: `${cluster.root}/state-${node.name}`,
        SLOTSYNC_PORT: '0',
        ...(mode === 'quorum' ? { SLOTSYNC_STANDBY_SLOTS_QUORUM: QUORUM } : {}),
      });
      const service = await SlotSyncService.create(config, pino({ level: 'silent' }));
      service.start();
      services.push(service);
      serviceOf.set(node, service);
    }
    await primary.connect();
    writer.start();
    rows.start(cluster.primary);
    const all = [...names, SUBSCRIPTION];
    const readyBy = Date.now() + 180_000;
    for (;;) {
      const set = await standbySlots(primary);
      const ready = await Promise.all(
        cluster.standbys.map(async (s) => {
          const answer = await (serviceOf.get(s) as SlotSyncService).readiness(all);
          return answer.ready || !set.includes(slotOf(s)); // outside the set it cannot be
        }),
      );
      if (ready.every(Boolean) && (mode === 'all' || set.length === 1)) break;
      if (Date.now() > readyBy) throw new Error(`${mode}: copies not ready within 180 s`);
      await delay(500);
    }
    const set = await standbySlots(primary);
    const stopped =
      mode === 'quorum'
        ? (cluster.standbys.find((s) => set.includes(slotOf(s))) as PgServer)
        : (cluster.standbys[1] as PgServer);
    const other = cluster.standbys.find((s) => s !== stopped) as PgServer;
    log(
      `setting: ${set.join(',')}; warming up 5 s, then ${stopped.name} stops for ${options.stopSeconds} s`,
    );
    await delay(5_000);

    const clock = new WalClock();
    const lag: number[] = [];
    let calledSafe = 0;
    let replacedAfter: number | null = null;
    const stopService = serviceOf.get(stopped) as SlotSyncService;
    await stopped.stop('fast');
    const stoppedAt = performance.now();
    // The quorum run fails over near the end of the minute; the ALL run waits the minute out.
    const window = (mode === 'quorum' ? 0.75 : 1) * options.stopSeconds * 1000;
    for (let next = stoppedAt; performance.now() - stoppedAt < window; ) {
      const at = performance.now();
      const { rows: sample } = await primary.query<{ lsn: string; flushed: string[] }>(
        `SELECT pg_current_wal_lsn()::text AS lsn,
                array_agg(confirmed_flush_lsn::text) AS flushed
           FROM pg_replication_slots WHERE slot_name = ANY($1)`,
        [all],
      );
      const now = performance.now();
      const row = sample[0];
      if (row) {
        clock.add(at, parseLsn(row.lsn));
        const times = row.flushed.map((f) => clock.timeOf(parseLsn(f)));
        // The lag of the furthest-behind consumer; a consumer still at the stop's time counts
        // from then (the WAL map starts at the stop).
        lag.push(Math.max(0, ...times.map((t) => now - (t ?? stoppedAt))));
      }
      if ((await stopService.readiness(all)).ready) calledSafe++;
      if (replacedAfter === null && !(await standbySlots(primary)).includes(slotOf(stopped))) {
        replacedAfter = now - stoppedAt;
      }
      next += SAMPLE_MS;
      await delay(Math.max(0, next - performance.now()));
    }
    let failover: Figures['failover'] = null;
    if (mode === 'quorum') {
      // The primary dies during the minute; the other standby is promoted.
      const gate = await (serviceOf.get(other) as SlotSyncService).readiness(all);
      await writer.stop();
      await cluster.primary.stop('immediate');
      await rows.stop();
      await other.promote();
      const subscriber = cluster.subscriber as PgServer;
      await pointSubscriptionAt(subscriber, other);
      await rows.resumeOn(other);
      await delay(3_000);
      const total = await rows.stop();
      const deadline = Date.now() + 60_000;
      while ((await countRows(subscriber)).count < total && Date.now() < deadline) await delay(200);
      const [counted] = await subscriber.sql<{ n: number; d: number; max: number }>(
        'SELECT count(*)::int AS n, count(DISTINCT id)::int AS d, coalesce(max(id), 0)::int AS max FROM items',
      );
      const [onPrimary] = await other.sql<{ n: number; max: number }>(
        'SELECT count(*)::int AS n, coalesce(max(id), 0)::int AS max FROM items',
      );
      failover = {
        gate_ready: gate.ready,
        rows: counted?.n ?? 0,
        exact:
          counted !== undefined &&
          onPrimary !== undefined &&
          counted.n === onPrimary.n &&
          counted.d === counted.n &&
          counted.max === onPrimary.max &&
          onPrimary.n === onPrimary.max,
      };
      log(
        `failover onto ${other.name}: gate ${gate.ready ? 'ready' : `NOT ready (${gate.reason ?? ''} ${JSON.stringify(gate.not_ready.slice(0, 3))})`}, ${counted?.n} rows, exact ${failover.exact}`,
      );
    } else {
      await stopped.start();
    }
    return {
      mode,
      lag_p50_ms: percentile(lag, 50),
      lag_p99_ms: percentile(lag, 99),
      lag_max_ms: lag.length ? Math.max(...lag) : Number.NaN,
      replaced_after_ms: replacedAfter,
      stopped_called_safe: calledSafe,
      samples: lag.length,
      failover,
    };
  } finally {
    await writer.stop().catch(() => undefined);
    await rows.stop().catch(() => undefined);
    await primary.end().catch(() => undefined);
    for (const service of services) await service.close().catch(() => undefined);
    await cluster.stop();
  }
}

export async function runQuorum(argv: string[]): Promise<void> {
  const options = {
    major: Number(option(argv, 'pg') ?? 17) as Major,
    subs: numberOption(argv, 'subs') ?? 10,
    walMbS: numberOption(argv, 'wal-mb-s') ?? 2,
    stopSeconds: numberOption(argv, 'stop-seconds') ?? 60,
  };
  const all = await runMode('all', options);
  const quorum = await runMode('quorum', options);
  const line = (f: Figures) =>
    `| ${f.mode} | ${round(f.lag_p50_ms)} | ${round(f.lag_p99_ms)} | ${round(f.lag_max_ms)} | ${f.replaced_after_ms === null ? '–' : round(f.replaced_after_ms)} | ${f.stopped_called_safe} of ${f.samples} | ${f.failover ? `${f.failover.gate_ready ? 'ready' : 'not ready'}, ${f.failover.rows} rows, ${f.failover.exact ? 'exactly once' : 'NOT EXACT'}` : '–'} |`;
  process.stdout.write(
    `\none of two standbys stopped for ${options.stopSeconds} s · ${options.subs} subscriptions + 1 · ${options.walMbS} MB/s · PostgreSQL ${options.major} · ${os.cpus().length} cores\n\n| synchronized_standby_slots | consumers' lag p50 (ms) | p99 | max | stopped standby left the set after (ms) | stopped standby called safe | failover onto the other |\n|---|---|---|---|---|---|---|\n${line(all)}\n${line(quorum)}\n\n`,
  );
  process.stdout.write(
    `RESULT quorum pg=${options.major} subs=${options.subs} stop_s=${options.stopSeconds} all_lag_max_ms=${round(all.lag_max_ms)} quorum_lag_p99_ms=${round(quorum.lag_p99_ms)} quorum_lag_max_ms=${round(quorum.lag_max_ms)} replaced_after_ms=${quorum.replaced_after_ms === null ? 'na' : round(quorum.replaced_after_ms)} stopped_called_safe=${quorum.stopped_called_safe + all.stopped_called_safe} failover_exact=${quorum.failover?.exact === true ? 1 : 0}\n`,
  );
  const out = option(argv, 'out');
  if (out) await writeFile(out, `${JSON.stringify({ options, all, quorum }, null, 2)}\n`);
}
