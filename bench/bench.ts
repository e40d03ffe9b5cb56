/**
 * npm run bench [-- --pg 17|18] [--slots 10,100,1000] [--reps 5] [--lag-seconds 15]
 *                  [--idle-seconds 60] [--out result.json]
 * npm run bench -- --load ...: under a steady write load with real subscriptions (load.ts)
 * npm run bench -- --quorum ...: one of two standbys stopped, ALL vs a quorum (quorum.ts)
 *
 * slotsync against PostgreSQL's own slot sync on two identical embedded primary/standby
 * pairs, measured in the same run: idle cycle, advance cycle, first sync, lag under steady
 * advancement and after an idle spell, and slotsync's footprint. Prints a table and one
 * RESULT line per N (largest last); writes the same as JSON to --out.
 */
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import { numberOption, option } from '../scripts/args.js';
import { delay } from '../src/util.js';
import type { Major } from '../test/support/binaries.js';
import { type Cluster, startCluster } from '../test/support/cluster.js';
import { median, percentile, round } from './stats.js';
import { BuiltinSystem, SlotsyncSystem, type System } from './systems.js';

const argv = process.argv.slice(2);
const major = Number(option(argv, 'pg') ?? 17) as Major;
const sizes = (option(argv, 'slots') ?? '10,100,1000')
  .split(',')
  .map(Number)
  .sort((a, b) => a - b);
const reps = numberOption(argv, 'reps') ?? 5;
const lagSeconds = numberOption(argv, 'lag-seconds') ?? 15;
const idleSeconds = numberOption(argv, 'idle-seconds') ?? 60;
const out = option(argv, 'out');
const log = (line: string) => process.stderr.write(`${line}\n`);

interface Row {
  n: number;
  idle_ms: [number, number];
  advance_ms: [number, number];
  first_sync_ms: [number, number];
  /** The first sync less the rounds' primary-side advances (the consumers' part). */
  first_sync_own_ms: [number, number];
  create_ms: [number, number];
  lag_p50_ms: [number, number];
  lag_p99_ms: [number, number];
  idle_lag_ms: [number, number];
  rss_mb: number;
  cpu_seconds: number;
  slots_p50_ms: number;
  slots_p99_ms: number;
  metrics_p50_ms: number;
  metrics_p99_ms: number;
  lag_samples: [number, number];
}

async function createSlots(cluster: Cluster, names: string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 100) {
    await cluster.primary.sql(
      `SELECT count(pg_create_logical_replication_slot(n, 'test_decoding', false, false, true)) FROM unnest($1::text[]) n`,
      [names.slice(i, i + 100)],
    );
  }
}

async function dropSlots(cluster: Cluster, prefix: string): Promise<void> {
  await cluster.primary.sql(
    `SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name LIKE $1`,
    [`${prefix}%`],
  );
}

async function advanceAll(cluster: Cluster, names: string[]): Promise<void> {
  // No running-xacts record here: in production only the servers (every 15 s) and slotsync
  // itself log them, and one logged right before each advance would hide the copies' decode
  // window (issue 11). A message only makes WAL for the slots to move over.
  await cluster.primary.sql(`SELECT pg_logical_emit_message(false, 'bench', 'x')`);
  await cluster.primary.sql(
    `SELECT count(pg_replication_slot_advance(n, pg_current_wal_lsn())) FROM unnest($1::text[]) n`,
    [names],
  );
}

/**
 * From no copy to every copy sync-ready; `create` is the first sync alone (the one that
 * makes every copy); `own` leaves out the rounds' advances of the primary's slots, which
 * stand for the consumers moving (a staged copy is published once its remote passed the
 * point where the copy was made; PostgreSQL's worker needs no such move).
 */
async function firstSync(
  system: System,
  names: string[],
): Promise<{ total: number; create: number; own: number }> {
  const started = performance.now();
  let create = 0;
  let consumers = 0;
  for (let round = 0; round < 50; round++) {
    const before = performance.now();
    await system.sync();
    if (round === 0) create = performance.now() - before;
    if ((await system.readyCount(names)) === names.length) {
      const total = performance.now() - started;
      return { total, create, own: total - consumers };
    }
    const moving = performance.now();
    await advanceAll(system.cluster, names);
    await system.cluster.waitForReplay();
    consumers += performance.now() - moving;
  }
  throw new Error(`${system.name}: copies not sync-ready after 50 rounds`);
}

/** Lag from a primary slot's advance to its copy's, sampled under steady advancement. */
async function measureLag(
  systems: System[],
  names: string[],
  seconds: number,
): Promise<number[][]> {
  const subset = names.slice(0, Math.min(20, names.length));
  return Promise.all(
    systems.map(async (system) => {
      const pending: { slot: string; target: string; at: number }[] = [];
      const lags: number[] = [];
      let stop = false;
      const standby = system.cluster.standby.client();
      await standby.connect();
      const poller = (async () => {
        while (!stop || pending.length > 0) {
          if (pending.length > 0) {
            const rows = await standby.query<{ slot_name: string; ok: boolean; t: string }>(
              `SELECT p.slot, p.target, s.confirmed_flush_lsn >= p.target::pg_lsn AS ok
                 FROM unnest($1::text[], $2::text[]) AS p(slot, target)
                 JOIN pg_replication_slots s ON s.slot_name = p.slot`,
              [pending.map((p) => p.slot), pending.map((p) => p.target)],
            );
            const now = performance.now();
            const done = new Set(rows.rows.map((r, i) => (r.ok ? i : -1)).filter((i) => i >= 0));
            for (let i = pending.length - 1; i >= 0; i--) {
              if (done.has(i)) lags.push(now - (pending[i]?.at ?? now));
            }
            const left = pending.filter((_, i) => !done.has(i));
            pending.length = 0;
            pending.push(...left.filter((p) => now - p.at < 120_000));
          }
          if (
            stop &&
            pending.length > 0 &&
            lags.length > 0 &&
            pending.every((p) => performance.now() - p.at > 60_000)
          )
            break;
          await delay(5);
        }
      })();
      const primary = system.cluster.primary.client();
      await primary.connect();
      const until = performance.now() + seconds * 1000;
      for (let i = 0; performance.now() < until; i++) {
        const slot = subset[i % subset.length] as string;
        await primary.query(`SELECT pg_logical_emit_message(false, 'bench', 'x')`);
        const at = performance.now();
        const result = await primary.query<{ lsn: string }>(
          'SELECT (pg_replication_slot_advance($1, pg_current_wal_lsn())).end_lsn::text AS lsn',
          [slot],
        );
        pending.push({ slot, target: result.rows[0]?.lsn ?? '0/0', at });
        await delay(50);
      }
      stop = true;
      await poller;
      await primary.end();
      await standby.end();
      return lags;
    }),
  );
}

async function httpLatency(url: string, count: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = performance.now();
    const answer = await fetch(url);
    await answer.arrayBuffer();
    times.push(performance.now() - started);
  }
  return times;
}

async function runSize(n: number): Promise<Row> {
  log(`\n== N = ${n}: starting two PostgreSQL ${major} primary/standby pairs`);
  const [clusterA, clusterB] = await Promise.all([
    startCluster({ major, synchronizedStandbySlots: true }),
    startCluster({ major, synchronizedStandbySlots: true }),
  ]);
  const slotsync = new SlotsyncSystem(clusterA);
  const builtin = new BuiltinSystem(clusterB);
  const systems: System[] = [slotsync, builtin];
  try {
    await slotsync.start(false);
    const first: number[][] = [[], []];
    const creates: number[][] = [[], []];
    const owns: number[][] = [[], []];
    let names: string[] = [];
    for (let rep = 0; rep < reps; rep++) {
      names = Array.from({ length: n }, (_, i) => `r${rep}_s${i}`);
      for (const [index, system] of systems.entries()) {
        if (rep > 0) {
          await dropSlots(system.cluster, `r${rep - 1}_`);
          await system.cluster.waitForReplay();
          await system.sync(); // drops the previous copies: the first sync starts from nothing
        }
        await createSlots(system.cluster, names);
        await system.cluster.waitForReplay();
        const { total, create, own } = await firstSync(system, names);
        owns[index]?.push(own);
        first[index]?.push(total);
        creates[index]?.push(create);
      }
      log(
        `first sync rep ${rep + 1}: slotsync ${round(first[0]?.at(-1) ?? 0)} ms, built-in ${round(first[1]?.at(-1) ?? 0)} ms`,
      );
    }

    const idle: number[][] = [[], []];
    for (let rep = 0; rep < Math.max(reps, 9); rep++) {
      for (const [index, system] of systems.entries()) idle[index]?.push(await system.sync());
    }

    const advance: number[][] = [[], []];
    for (let rep = 0; rep < reps; rep++) {
      for (const system of systems) {
        await system.cluster.primary.sql(
          `CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, payload text)`,
        );
        await system.cluster.primary.sql(
          `INSERT INTO bench_rows (payload) SELECT md5(g::text) FROM generate_series(1, 1000) g`,
        );
        await advanceAll(system.cluster, names);
        await system.cluster.waitForReplay();
      }
      for (const [index, system] of systems.entries()) advance[index]?.push(await system.sync());
    }
    log(
      `idle cycle: slotsync ${round(median(idle[0] ?? []))} ms, built-in ${round(median(idle[1] ?? []))} ms; advance cycle: slotsync ${round(median(advance[0] ?? []))} ms, built-in ${round(median(advance[1] ?? []))} ms`,
    );

    await Promise.all(systems.map((s) => s.startWorker()));
    log(`lag under steady advancement for ${lagSeconds} s ...`);
    const [lagA = [], lagB = []] = await measureLag(systems, names, lagSeconds);
    log(`idle for ${idleSeconds} s, then one advance ...`);
    await delay(idleSeconds * 1000);
    const [idleA = [], idleB = []] = await measureLag(systems, names.slice(0, 1), 0.001);

    const footprint = slotsync.footprint();
    const slotsLatency = await httpLatency(`${slotsync.base}/slots`, 200);
    const metricsLatency = await httpLatency(`${slotsync.base}/metrics`, 200);
    return {
      n,
      idle_ms: [median(idle[0] ?? []), median(idle[1] ?? [])],
      advance_ms: [median(advance[0] ?? []), median(advance[1] ?? [])],
      first_sync_ms: [median(first[0] ?? []), median(first[1] ?? [])],
      first_sync_own_ms: [median(owns[0] ?? []), median(owns[1] ?? [])],
      create_ms: [median(creates[0] ?? []), median(creates[1] ?? [])],
      lag_p50_ms: [percentile(lagA, 50), percentile(lagB, 50)],
      lag_p99_ms: [percentile(lagA, 99), percentile(lagB, 99)],
      idle_lag_ms: [idleA[0] ?? Number.NaN, idleB[0] ?? Number.NaN],
      rss_mb: footprint.rssMb,
      cpu_seconds: footprint.cpuSeconds,
      slots_p50_ms: percentile(slotsLatency, 50),
      slots_p99_ms: percentile(slotsLatency, 99),
      metrics_p50_ms: percentile(metricsLatency, 50),
      metrics_p99_ms: percentile(metricsLatency, 99),
      lag_samples: [lagA.length, lagB.length],
    };
  } finally {
    await Promise.all(systems.map((s) => s.close().catch(() => undefined)));
    await Promise.all([clusterA.stop(), clusterB.stop()]);
  }
}

const ratio = (pair: [number, number]) => round(pair[0] / pair[1], 3);

function table(rows: Row[]): string {
  const lines = [
    `slotsync vs PostgreSQL ${major}'s built-in slot sync · ${os.cpus().length} cores, ${round(os.totalmem() / 2 ** 30, 0)} GiB, ${os.cpus()[0]?.model ?? ''} · median of ${reps} (idle: ${Math.max(reps, 9)})`,
    '',
    '| N | figure | slotsync | built-in | ratio |',
    '|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const add = (name: string, pair: [number, number], unit: string) =>
      lines.push(
        `| ${r.n} | ${name} | ${round(pair[0])} ${unit} | ${round(pair[1])} ${unit} | ${ratio(pair)} |`,
      );
    add('idle cycle', r.idle_ms, 'ms');
    add('advance cycle (1,000 rows)', r.advance_ms, 'ms');
    add('creation (first sync call)', r.create_ms, 'ms');
    add('first sync', r.first_sync_ms, 'ms');
    add("first sync, less the consumers' moves", r.first_sync_own_ms, 'ms');
    add('lag p50, steady', r.lag_p50_ms, 'ms');
    add('lag p99, steady', r.lag_p99_ms, 'ms');
    add(`lag after ${idleSeconds} s idle`, r.idle_lag_ms, 'ms');
    lines.push(
      `| ${r.n} | RSS / CPU | ${round(r.rss_mb, 1)} MB / ${round(r.cpu_seconds, 1)} s | n/a | |`,
    );
    lines.push(
      `| ${r.n} | GET /slots p50 / p99 | ${round(r.slots_p50_ms)} / ${round(r.slots_p99_ms)} ms | n/a | |`,
    );
    lines.push(
      `| ${r.n} | GET /metrics p50 / p99 | ${round(r.metrics_p50_ms)} / ${round(r.metrics_p99_ms)} ms | n/a | |`,
    );
  }
  return lines.join('\n');
}

if (argv.includes('--load')) {
  const { runLoad } = await import('./load.js');
  await runLoad(argv);
} else if (argv.includes('--quorum')) {
  const { runQuorum } = await import('./quorum.js');
  await runQuorum(argv);
} else {
  await runClassic();
}

async function runClassic(): Promise<void> {
  const rows: Row[] = [];
  for (const n of sizes) rows.push(await runSize(n));
  process.stdout.write(`\n${table(rows)}\n\n`);
  for (const r of rows) {
    process.stdout.write(
      `RESULT pg=${major} n=${r.n} idle_ratio=${ratio(r.idle_ms)} advance_ratio=${ratio(r.advance_ms)} first_sync_ratio=${ratio(r.first_sync_ms)} first_sync_own_ratio=${ratio(r.first_sync_own_ms)} create_ms=${round(r.create_ms[0], 1)} builtin_create_ms=${round(r.create_ms[1], 1)} lag_p99_ms=${round(r.lag_p99_ms[0], 1)} builtin_lag_p99_ms=${round(r.lag_p99_ms[1], 1)} idle_lag_ms=${round(r.idle_lag_ms[0], 1)} builtin_idle_lag_ms=${round(r.idle_lag_ms[1], 1)} rss_mb_1000=${r.n === 1000 ? round(r.rss_mb, 1) : 'na'} rss_mb=${round(r.rss_mb, 1)} slots_p99_ms=${round(r.slots_p99_ms)}\n`,
    );
  }
  if (out)
    await writeFile(
      out,
      `${JSON.stringify({ pg: major, reps, lagSeconds, idleSeconds, machine: { cores: os.cpus().length, model: os.cpus()[0]?.model }, rows }, null, 2)}\n`,
    );
}
