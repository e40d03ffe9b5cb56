/**
 * npm run bench -- --load [--subs 10,50] [--wal-mb-s 2] [--seconds 60] [--pg 17|18]
 *                          [--engine sql|builtin] [--slotsync-env K=V,K=V] [--out result.json]
 *
 * --engine builtin: the second run is PostgreSQL's worker again, with slotsync beside it
 * (SLOTSYNC_ENGINE=builtin): what slotsync's control plane costs over the built-in.
 *
 * What production sees: a primary that writes all the time, each failover slot the slot of
 * a real subscription (pgoutput, failover = true) that confirms continuously, and
 * running-xacts records only from the servers themselves (every 15 s) and from slotsync.
 * Identical embedded primary/standby/subscriber sets, one after the other (2 cores):
 * PostgreSQL's own worker (sync_replication_slots = on), then slotsync's service process.
 * Measured over the window: standby server CPU (the postmaster and every child, those that
 * exited included), slotsync process CPU, primary CPU, WAL rate achieved, copy lag (bytes,
 * and ms through a map of the primary's WAL position to time), WAL kept on the standby for
 * the copies, slotsync RSS.
 *
 * The subscriptions' publication publishes truncates only: the walsenders decode every
 * change (their slots confirm continuously, as the copies must follow), but the subscriber
 * applies nothing, so on 2 cores it does not compete with the servers being measured.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import pg from 'pg';
import { numberOption, option } from '../scripts/args.js';
import { parseLsn } from '../src/sync/lsn.js';
import { delay } from '../src/util.js';
import type { Major } from '../test/support/binaries.js';
import { type Cluster, startCluster } from '../test/support/cluster.js';
import { CLOCK_TICKS, cpuSecondsOfTree } from '../test/support/proc.js';
import type { PgServer } from '../test/support/server.js';
import { conninfo } from '../test/support/workload.js';
import { percentile, round } from './stats.js';
import { BuiltinSystem, SlotsyncSystem, type System } from './systems.js';

const log = (line: string) => process.stderr.write(`${line}\n`);
const SAMPLE_MS = 100;
const WRITE_EVERY_MS = 20;
const READY_TIMEOUT_MS = 180_000;
const WARMUP_MS = 5_000;

interface Options {
  major: Major;
  subs: number[];
  walMbS: number;
  seconds: number;
  out: string | undefined;
  /** --slotsync-env K=V,K=V: settings for slotsync's process (to compare choices). */
  slotsyncEnv: Record<string, string>;
  /** --engine: who copies in slotsync's run (builtin: PostgreSQL's worker, slotsync beside). */
  engine: 'sql' | 'builtin';
}

export interface LoadFigures {
  system: 'builtin' | 'slotsync';
  subs: number;
  standby_cpu_s: number;
  primary_cpu_s: number;
  slotsync_cpu_s: number;
  /** Of which in the kernel (system calls: sockets, registry writes). */
  slotsync_system_cpu_s: number;
  wal_mb_s: number;
  lag_p50_ms: number;
  lag_p99_ms: number;
  lag_p50_bytes: number;
  lag_p99_bytes: number;
  /** The subscribers' own lag behind the primary's WAL, the floor of the copies' lag. */
  subscriber_lag_p99_ms: number;
  wal_kept_p50_mb: number;
  wal_kept_max_mb: number;
  rss_max_mb: number;
  samples: number;
  /** slotsync's cycles in the window (its metrics), and their mean duration. */
  cycles_per_s: number;
  cycle_mean_ms: number;
  /** slotsync's event-loop delay p99 over the window (its metric). */
  eventloop_p99_ms: number;
  /** GET /ready and GET /slots while the load runs (after the CPU window: not in its CPU). */
  ready_p50_ms: number;
  ready_p99_ms: number;
  slots_p50_ms: number;
  slots_p99_ms: number;
}

const PROBE_MS = 20_000;

/**
 * GET /ready and GET /slots, one after the other every 100 ms for PROBE_MS, while the load
 * goes on: what an orchestrator and a dashboard see.
 */
async function probeAnswers(base: string): Promise<{ ready: number[]; slots: number[] }> {
  const ready: number[] = [];
  const slots: number[] = [];
  const timed = async (url: string, into: number[]) => {
    const started = performance.now();
    const answer = await fetch(url);
    await answer.arrayBuffer();
    into.push(performance.now() - started);
  };
  const started = performance.now();
  for (let next = started; performance.now() - started < PROBE_MS; ) {
    await timed(`${base}/ready`, ready);
    await timed(`${base}/slots`, slots);
    next += 100;
    await delay(Math.max(0, next - performance.now()));
  }
  return { ready, slots };
}

/**
 * CPU seconds per child of a server, by what its process title says it is (backends show
 * their application_name only through pg_stat_activity; the title gives the kind): to see
 * where a standby's time goes (BENCH_BREAKDOWN=1).
 */
function cpuByChild(pid: number): Map<number, { title: string; seconds: number }> {
  const out = new Map<number, { title: string; seconds: number }>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const f = readFileSync(`/proc/${entry}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
      if (Number(f[1]) !== pid) continue;
      const title = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
      out.set(Number(entry), {
        title,
        seconds: (Number(f[11] ?? 0) + Number(f[12] ?? 0)) / CLOCK_TICKS,
      });
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

/** Inserts rows every 20 ms, sized each second to reach the target WAL rate. */
export class WalWriter {
  #stop = false;
  #running: Promise<void> | undefined;
  rows = 100;

  constructor(
    private readonly primary: PgServer,
    private readonly bytesPerSecond: number,
  ) {}

  start(): void {
    this.#running = this.#loop();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#running;
  }

  async #loop(): Promise<void> {
    const client = new pg.Client({ connectionString: this.primary.url() });
    client.on('error', () => undefined); // a failover benchmark kills the primary
    await client.connect();
    const walNow = async () =>
      parseLsn(
        (await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0]
          ?.lsn ?? '0/0',
      );
    try {
      let windowStart = performance.now();
      let walStart = await walNow();
      while (!this.#stop) {
        const started = performance.now();
        await client.query(
          `INSERT INTO load_items (payload) SELECT repeat('x', 200) FROM generate_series(1, $1::int)`,
          [this.rows],
        );
        if (started - windowStart >= 1000) {
          const wal = await walNow();
          const rate = Number(wal - walStart) / ((started - windowStart) / 1000);
          const factor = Math.min(2, Math.max(0.5, this.bytesPerSecond / Math.max(rate, 1)));
          this.rows = Math.max(1, Math.min(20_000, Math.round(this.rows * factor)));
          windowStart = started;
          walStart = wal;
        }
        await delay(Math.max(0, WRITE_EVERY_MS - (performance.now() - started)));
      }
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

/** When the primary's WAL reached each position: samples, interpolated between them. */
export class WalClock {
  readonly #samples: { at: number; lsn: bigint }[] = [];

  add(at: number, lsn: bigint): void {
    this.#samples.push({ at, lsn });
  }

  /** The time the primary's WAL position reached `lsn`, or undefined before the first sample. */
  timeOf(lsn: bigint): number | undefined {
    const s = this.#samples;
    let lo = 0;
    let hi = s.length - 1;
    if (hi < 0 || (s[hi] as { lsn: bigint }).lsn < lsn) return s.at(-1)?.at;
    if ((s[0] as { lsn: bigint }).lsn >= lsn) return undefined;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if ((s[mid] as { lsn: bigint }).lsn >= lsn) hi = mid;
      else lo = mid;
    }
    const a = s[lo] as { at: number; lsn: bigint };
    const b = s[hi] as { at: number; lsn: bigint };
    const span = Number(b.lsn - a.lsn);
    return span === 0 ? b.at : a.at + ((b.at - a.at) * Number(lsn - a.lsn)) / span;
  }
}

/**
 * `names` real subscriptions (failover = true) of a publication of truncates only: every
 * walsender decodes every change and confirms it, the subscriber applies nothing.
 */
export async function subscribe(cluster: Cluster, names: string[]): Promise<void> {
  const subscriber = cluster.subscriber as PgServer;
  await cluster.primary.sql('CREATE TABLE load_items (id bigserial PRIMARY KEY, payload text)');
  await cluster.primary.sql(
    `CREATE PUBLICATION load_pub FOR TABLE load_items WITH (publish = 'truncate')`,
  );
  await subscriber.sql('CREATE TABLE load_items (id bigint, payload text)');
  for (const name of names) {
    await subscriber.sql(
      `CREATE SUBSCRIPTION ${name} CONNECTION '${conninfo(cluster.primary)}' PUBLICATION load_pub WITH (failover = true, copy_data = false)`,
    );
  }
}

async function runOne(
  kind: 'builtin' | 'slotsync',
  subs: number,
  options: Options,
): Promise<LoadFigures> {
  log(`\n== ${kind}, ${subs} subscriptions, PostgreSQL ${options.major}`);
  const cluster = await startCluster({
    major: options.major,
    subscriber: true,
    synchronizedStandbySlots: true,
    primarySettings: { max_wal_senders: subs + 10 },
    subscriberSettings: {
      max_replication_slots: subs + 10,
      max_logical_replication_workers: subs + 4,
      max_worker_processes: subs + 16,
    },
  });
  const names = Array.from({ length: subs }, (_, i) => `load_sub_${i + 1}`);
  const system: System & { pid?: number } =
    kind === 'builtin'
      ? new BuiltinSystem(cluster)
      : new SlotsyncSystem(cluster, {
          env: { SLOTSYNC_ENGINE: options.engine, ...options.slotsyncEnv },
        });
  const worker =
    kind === 'slotsync' && options.engine === 'builtin' ? new BuiltinSystem(cluster) : null;
  const writer = new WalWriter(cluster.primary, options.walMbS * 2 ** 20);
  try {
    await subscribe(cluster, names);
    await cluster.waitForReplay();
    if (worker) await worker.startWorker();
    if (system instanceof SlotsyncSystem) await system.start(true);
    else await system.startWorker();
    writer.start();
    const readyBy = Date.now() + READY_TIMEOUT_MS;
    while ((await system.readyCount(names)) < subs) {
      if (Date.now() > readyBy) throw new Error(`${kind}: copies not ready within 180 s`);
      await delay(200);
    }
    log(`all ${subs} copies ready; warming up ${WARMUP_MS / 1000} s`);
    await delay(WARMUP_MS);
    return await measure(kind, subs, cluster, system, names, options.seconds);
  } finally {
    await writer.stop().catch(() => undefined);
    await system.close().catch(() => undefined);
    await worker?.close().catch(() => undefined);
    await cluster.stop();
  }
}

async function measure(
  kind: 'builtin' | 'slotsync',
  subs: number,
  cluster: Cluster,
  system: System,
  names: string[],
  seconds: number,
): Promise<LoadFigures> {
  const primary = new pg.Client({ connectionString: cluster.primary.url() });
  const standby = new pg.Client({ connectionString: cluster.standby.url() });
  await Promise.all([primary.connect(), standby.connect()]);
  const clock = new WalClock();
  const lagMs: number[] = [];
  const lagBytes: number[] = [];
  const subscriberLagMs: number[] = [];
  const walKept: number[] = [];
  let rssMax = 0;
  const slotsyncPid = system instanceof SlotsyncSystem ? system.pid : undefined;
  const cpu = () => ({
    standby: cpuSecondsOfTree(cluster.standby.pid ?? 0),
    primary: cpuSecondsOfTree(cluster.primary.pid ?? 0),
    slotsync: slotsyncPid ? cpuSecondsOfTree(slotsyncPid) : 0,
    slotsyncSystem: slotsyncPid ? cpuSecondsOfTree(slotsyncPid, 'system') : 0,
  });
  const cycles = async () => {
    if (!(system instanceof SlotsyncSystem)) return { count: 0, sum: 0, eventLoopP99: 0 };
    const text = await fetch(`${system.base}/metrics`).then((r) => r.text());
    const total = (name: string) =>
      text
        .split('\n')
        .filter((line) => line.startsWith(name))
        .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
    return {
      count: total('slotsync_cycle_duration_seconds_count'),
      sum: total('slotsync_cycle_duration_seconds_sum'),
      // Reset at every scrape: over the window.
      eventLoopP99: total('slotsync_eventloop_delay_p99_seconds') * 1000,
    };
  };
  const walStart = await currentWal(primary);
  const cyclesBefore = await cycles();
  const started = performance.now();
  const before = cpu();
  const breakdown = process.env.BENCH_BREAKDOWN ? cpuByChild(cluster.standby.pid ?? 0) : null;
  try {
    for (let next = started; performance.now() - started < seconds * 1000; ) {
      const at = performance.now();
      const remote = await primary.query<{ lsn: string; names: string[]; flushed: string[] }>(
        `SELECT pg_current_wal_lsn()::text AS lsn,
                array_agg(slot_name::text ORDER BY slot_name) AS names,
                array_agg(confirmed_flush_lsn::text ORDER BY slot_name) AS flushed
           FROM pg_replication_slots WHERE slot_name = ANY($1)`,
        [names],
      );
      const copies = await standby.query<{
        replay: string;
        names: string[] | null;
        flushed: string[] | null;
        restart: string[] | null;
      }>(
        `SELECT pg_last_wal_replay_lsn()::text AS replay,
                array_agg(slot_name::text ORDER BY slot_name) AS names,
                array_agg(confirmed_flush_lsn::text ORDER BY slot_name) AS flushed,
                array_agg(restart_lsn::text ORDER BY slot_name) AS restart
           FROM pg_replication_slots WHERE slot_name = ANY($1) AND NOT temporary`,
        [names],
      );
      const now = performance.now();
      const r = remote.rows[0];
      const c = copies.rows[0];
      if (r && c) {
        clock.add(at, parseLsn(r.lsn));
        const remoteBy = new Map(r.names.map((n, i) => [n, parseLsn(r.flushed[i] ?? '0/0')]));
        for (const flushed of remoteBy.values()) {
          const t = clock.timeOf(flushed);
          if (t !== undefined) subscriberLagMs.push(Math.max(0, now - t));
        }
        let oldestRestart: bigint | undefined;
        (c.names ?? []).forEach((name, i) => {
          const copy = parseLsn(c.flushed?.[i] ?? '0/0');
          const restart = c.restart?.[i] ? parseLsn(c.restart[i] as string) : undefined;
          if (restart !== undefined && (oldestRestart === undefined || restart < oldestRestart))
            oldestRestart = restart;
          const remoteFlushed = remoteBy.get(name);
          if (remoteFlushed !== undefined) {
            lagBytes.push(Math.max(0, Number(remoteFlushed - copy)));
          }
          const t = clock.timeOf(copy);
          if (t !== undefined) lagMs.push(Math.max(0, now - t));
        });
        if (oldestRestart !== undefined) {
          walKept.push(Number(parseLsn(c.replay) - oldestRestart) / 2 ** 20);
        }
      }
      if (slotsyncPid) rssMax = Math.max(rssMax, rssMb(slotsyncPid));
      next += SAMPLE_MS;
      await delay(Math.max(0, next - performance.now()));
    }
    const after = cpu();
    const elapsed = (performance.now() - started) / 1000;
    const cyclesAfter = await cycles();
    if (breakdown) {
      const pids = await standby.query<{ pid: number; application_name: string }>(
        'SELECT pid, application_name FROM pg_stat_activity',
      );
      const names = new Map(pids.rows.map((row) => [row.pid, row.application_name]));
      for (const [pid, now] of cpuByChild(cluster.standby.pid ?? 0)) {
        const spent = now.seconds - (breakdown.get(pid)?.seconds ?? 0);
        if (spent >= 0.05)
          log(`  standby ${pid} ${names.get(pid) ?? ''} ${now.title}: ${round(spent)} s`);
      }
    }
    const cycleCount = cyclesAfter.count - cyclesBefore.count;
    const walEnd = await currentWal(primary);
    const probed =
      system instanceof SlotsyncSystem
        ? await probeAnswers(system.base)
        : { ready: [] as number[], slots: [] as number[] };
    return {
      system: kind,
      subs,
      standby_cpu_s: after.standby - before.standby,
      primary_cpu_s: after.primary - before.primary,
      slotsync_cpu_s: after.slotsync - before.slotsync,
      slotsync_system_cpu_s: after.slotsyncSystem - before.slotsyncSystem,
      wal_mb_s: Number(walEnd - walStart) / 2 ** 20 / elapsed,
      lag_p50_ms: percentile(lagMs, 50),
      lag_p99_ms: percentile(lagMs, 99),
      lag_p50_bytes: percentile(lagBytes, 50),
      lag_p99_bytes: percentile(lagBytes, 99),
      subscriber_lag_p99_ms: percentile(subscriberLagMs, 99),
      wal_kept_p50_mb: percentile(walKept, 50),
      wal_kept_max_mb: walKept.length ? Math.max(...walKept) : Number.NaN,
      rss_max_mb: rssMax,
      samples: lagMs.length,
      cycles_per_s: cycleCount / elapsed,
      cycle_mean_ms: cycleCount ? ((cyclesAfter.sum - cyclesBefore.sum) / cycleCount) * 1000 : 0,
      eventloop_p99_ms: cyclesAfter.eventLoopP99,
      ready_p50_ms: percentile(probed.ready, 50),
      ready_p99_ms: percentile(probed.ready, 99),
      slots_p50_ms: percentile(probed.slots, 50),
      slots_p99_ms: percentile(probed.slots, 99),
    };
  } finally {
    await Promise.all([primary.end(), standby.end()]);
  }
}

async function currentWal(client: pg.Client): Promise<bigint> {
  const { rows } = await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn');
  return parseLsn(rows[0]?.lsn ?? '0/0');
}

function table(options: Options, pairs: [LoadFigures, LoadFigures][]): string {
  const lines = [
    `slotsync vs PostgreSQL ${options.major}'s built-in slot sync under load · ${os.cpus().length} cores, ${os.cpus()[0]?.model ?? ''} · target ${options.walMbS} MB/s of WAL, ${options.seconds} s window`,
    '',
    '| subs | figure | slotsync | built-in |',
    '|---|---|---|---|',
  ];
  for (const [s, b] of pairs) {
    const add = (name: string, a: number | string, c: number | string) =>
      lines.push(`| ${s.subs} | ${name} | ${a} | ${c} |`);
    add('WAL rate achieved', `${round(s.wal_mb_s)} MB/s`, `${round(b.wal_mb_s)} MB/s`);
    add('standby server CPU', `${round(s.standby_cpu_s)} s`, `${round(b.standby_cpu_s)} s`);
    add(
      'slotsync cycles per second, mean duration',
      `${round(s.cycles_per_s, 2)}/s, ${round(s.cycle_mean_ms, 1)} ms`,
      '–',
    );
    add(
      'slotsync process CPU (of which kernel)',
      `${round(s.slotsync_cpu_s)} s (${round(s.slotsync_system_cpu_s)} s)`,
      '–',
    );
    add('primary CPU', `${round(s.primary_cpu_s)} s`, `${round(b.primary_cpu_s)} s`);
    add(
      'copy lag p50 / p99',
      `${round(s.lag_p50_ms)} / ${round(s.lag_p99_ms)} ms`,
      `${round(b.lag_p50_ms)} / ${round(b.lag_p99_ms)} ms`,
    );
    add(
      'copy lag p50 / p99 (bytes)',
      `${round(s.lag_p50_bytes / 1024)} / ${round(s.lag_p99_bytes / 1024)} KB`,
      `${round(b.lag_p50_bytes / 1024)} / ${round(b.lag_p99_bytes / 1024)} KB`,
    );
    add(
      "subscribers' own lag p99",
      `${round(s.subscriber_lag_p99_ms)} ms`,
      `${round(b.subscriber_lag_p99_ms)} ms`,
    );
    add(
      'WAL kept for the copies p50 / max',
      `${round(s.wal_kept_p50_mb)} / ${round(s.wal_kept_max_mb)} MB`,
      `${round(b.wal_kept_p50_mb)} / ${round(b.wal_kept_max_mb)} MB`,
    );
    add('slotsync RSS (max)', `${round(s.rss_max_mb, 1)} MB`, '–');
    add('slotsync event-loop delay p99', `${round(s.eventloop_p99_ms, 1)} ms`, '–');
    add(
      'GET /ready p50 / p99, under the load',
      `${round(s.ready_p50_ms, 1)} / ${round(s.ready_p99_ms, 1)} ms`,
      '–',
    );
    add(
      'GET /slots p50 / p99, under the load',
      `${round(s.slots_p50_ms, 1)} / ${round(s.slots_p99_ms, 1)} ms`,
      '–',
    );
  }
  return lines.join('\n');
}

function engineOption(value: string | undefined): 'sql' | 'builtin' {
  if (value === undefined || value === 'sql' || value === 'builtin') return value ?? 'sql';
  throw new Error(`--engine: sql or builtin, not "${value}"`);
}

export async function runLoad(argv: string[]): Promise<void> {
  const options: Options = {
    major: Number(option(argv, 'pg') ?? 17) as Major,
    subs: (option(argv, 'subs') ?? '10,50').split(',').map(Number),
    walMbS: numberOption(argv, 'wal-mb-s') ?? 2,
    seconds: numberOption(argv, 'seconds') ?? 60,
    out: option(argv, 'out'),
    engine: engineOption(option(argv, 'engine')),
    slotsyncEnv: Object.fromEntries(
      (option(argv, 'slotsync-env') ?? '')
        .split(',')
        .filter((pair) => pair.includes('='))
        .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
    ),
  };
  const pairs: [LoadFigures, LoadFigures][] = [];
  for (const subs of options.subs) {
    const builtin = await runOne('builtin', subs, options);
    const slotsync = await runOne('slotsync', subs, options);
    pairs.push([slotsync, builtin]);
  }
  process.stdout.write(`\n${table(options, pairs)}\n\n`);
  for (const [s, b] of pairs) {
    const ratio = (s.standby_cpu_s + s.slotsync_cpu_s) / b.standby_cpu_s;
    const perSubMb =
      (s.standby_cpu_s + s.slotsync_cpu_s - b.standby_cpu_s) /
      s.subs /
      (s.wal_mb_s * options.seconds);
    process.stdout.write(
      `RESULT load pg=${options.major} engine=${options.engine} subs=${s.subs} wal_mb_s=${round(s.wal_mb_s)} standby_cpu_ratio=${round(ratio, 3)} lag_p99_ms=${round(s.lag_p99_ms, 1)} builtin_lag_p99_ms=${round(b.lag_p99_ms, 1)} slotsync_cpu_s=${round(s.slotsync_cpu_s)} rss_mb=${round(s.rss_max_mb, 1)} extra_cpu_ms_per_sub_per_mb=${round(perSubMb * 1000, 3)} builtin_wal_mb_s=${round(b.wal_mb_s)} eventloop_p99_ms=${round(s.eventloop_p99_ms, 1)} ready_p99_ms=${round(s.ready_p99_ms, 1)} slots_p99_ms=${round(s.slots_p99_ms, 1)}\n`,
    );
  }
  if (options.out) {
    await writeFile(options.out, `${JSON.stringify({ options, pairs }, null, 2)}\n`);
  }
}
