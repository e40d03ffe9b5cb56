/**
 * npm run soak [-- --minutes 2] [--kills 100] [--slots 1000] [--kill-slots 200]
 *                 [--clients 4] [--pg 17|18] [--out soak.json]
 *
 * Two parts, on an embedded primary/standby pair and slotsync built from this checkout
 * (dist/, rebuilt by the presoak script), run as a separate process as in production
 * (bench/systems.ts's SlotsyncSystem, its state folder kept across restarts):
 *
 * 1. Kill loop: `--kills` times, slotsync is started, does at least one cycle while slots
 *    keep advancing (and some are dropped and made again), and is killed with SIGKILL at a
 *    random moment. After every kill: no copy moved backwards or past replay, every copy on
 *    the standby is in the registry; after every restart: the new process owns every copy
 *    (no `conflict`).
 * 2. Load, `--minutes` long: `--slots` slots advanced constantly on the primary while
 *    `--clients` API clients loop over GET /slots, GET /metrics and POST /sync. Reports RSS
 *    over time (flat after warm-up), cycle p99, errors (must be zero) and invariant checks
 *    (all must hold); at the end every copy must catch up with its primary slot.
 *
 * Exits 1 when anything failed. Prints SOAK lines; writes the figures as JSON to --out.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { numberOption, option } from '../scripts/args.js';
import { delay } from '../src/util.js';
import type { Major } from '../test/support/binaries.js';
import { type Cluster, startCluster } from '../test/support/cluster.js';
import { InvariantChecker, unownedCopies } from '../test/support/invariants.js';
import { median, percentile, round } from './stats.js';
import { SlotsyncSystem } from './systems.js';

const argv = process.argv.slice(2);
const major = Number(option(argv, 'pg') ?? 17) as Major;
const minutes = numberOption(argv, 'minutes') ?? 2;
const kills = numberOption(argv, 'kills') ?? 100;
const slotCount = numberOption(argv, 'slots') ?? 1000;
const killSlotCount = numberOption(argv, 'kill-slots') ?? 200;
const clientCount = numberOption(argv, 'clients') ?? 4;
const out = option(argv, 'out');
const log = (line: string) => process.stderr.write(`${line}\n`);

async function createSlots(cluster: Cluster, names: string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 100) {
    await cluster.primary.sql(
      `SELECT count(pg_create_logical_replication_slot(n, 'test_decoding', false, false, true))
         FROM unnest($1::text[]) n
        WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = n)`,
      [names.slice(i, i + 100)],
    );
  }
}

/** One round of primary activity: a write, a running-xacts record, every slot advanced. */
async function advanceAll(cluster: Cluster, names: string[]): Promise<void> {
  await cluster.primary.sql(
    `INSERT INTO soak_load (payload) SELECT md5(g::text) FROM generate_series(1, 50) g`,
  );
  await cluster.primary.sql('SELECT pg_log_standby_snapshot()');
  await cluster.primary.sql(
    `SELECT count(pg_replication_slot_advance(n, pg_current_wal_lsn())) FROM unnest($1::text[]) n`,
    [names],
  );
}

interface Advancer {
  stop(): Promise<void>;
  /** Runs `work` between two rounds (slots dropped and made again must not be advanced). */
  between(work: () => Promise<void>): Promise<void>;
  rounds(): number;
  errors: string[];
}

/** Keeps advancing until stopped; errors are counted, not thrown. */
function advanceForever(cluster: Cluster, names: string[], pauseMs: number): Advancer {
  let running = true;
  let rounds = 0;
  let queue = Promise.resolve();
  const errors: string[] = [];
  const loop = (async () => {
    while (running) {
      const round = queue.then(async () => {
        try {
          await advanceAll(cluster, names);
          rounds++;
        } catch (error) {
          errors.push((error as Error).message);
        }
      });
      queue = round;
      await round;
      await delay(pauseMs);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
    between: async (work) => {
      const turn = queue.then(work);
      queue = turn.catch(() => undefined);
      await turn;
    },
    rounds: () => rounds,
    errors,
  };
}

interface SlotsAnswer {
  slots: { name: string; state: string; sync_ready: boolean }[];
}

async function slotsOf(service: SlotsyncSystem): Promise<SlotsAnswer['slots']> {
  return ((await (await fetch(`${service.base}/slots`)).json()) as SlotsAnswer).slots;
}

const failures: string[] = [];
function fail(message: string): void {
  failures.push(message);
  log(`FAIL ${message}`);
}

async function killLoop(cluster: Cluster): Promise<Record<string, number>> {
  const stateDir = await mkdtemp(join(tmpdir(), 'slotsync-soak-kill-'));
  const names = Array.from({ length: killSlotCount }, (_, i) => `kill_${i}`);
  await createSlots(cluster, names);
  const service = new SlotsyncSystem(cluster, {
    stateDir,
    env: {
      SLOTSYNC_WORKER: 'on',
      SLOTSYNC_NAPTIME_MIN_MS: '10',
      SLOTSYNC_NAPTIME_MAX_MS: '100',
      SLOTSYNC_RESTART_INTERVAL_MS: '100',
    },
  });
  const checker = new InvariantChecker(cluster);
  const advancer = advanceForever(cluster, names, 50);
  let cyclesSeen = 0;
  let conflicts = 0;
  let recreated = 0;
  let killsInCycle = 0;
  const started = performance.now();
  try {
    for (let i = 1; i <= kills; i++) {
      // Churn: a few slots dropped and made again, so creations happen under the kills too.
      if (i % 5 === 0) {
        const churn = names.slice((i * 3) % killSlotCount, ((i * 3) % killSlotCount) + 3);
        await advancer.between(async () => {
          await cluster.primary.sql(
            `SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots
              WHERE slot_name = ANY($1)`,
            [churn],
          );
          await createSlots(cluster, churn);
        });
        recreated += churn.length;
      }
      await service.start(true);
      // At least one complete cycle of this process, then the new process owns every copy.
      const deadline = Date.now() + 60_000;
      while (
        (await service.metric('slotsync_cycles_total{trigger="worker",outcome="success"}')) < 1
      ) {
        if (Date.now() > deadline) throw new Error('no cycle completed within 60 s');
        await delay(10);
      }
      cyclesSeen++;
      const conflicted = (await slotsOf(service)).filter((s) => s.state === 'conflict');
      if (conflicted.length > 0) {
        conflicts += conflicted.length;
        fail(
          `kill ${i}: copies not owned after restart: ${conflicted.map((s) => s.name).join(', ')}`,
        );
      }
      await delay(Math.random() * 600);
      cyclesSeen += (await service.metric('slotsync_cycles_total{trigger="worker"')) - 1;
      // Whether this kill lands inside a cycle (read just before it: an indication).
      if ((await service.metric('slotsync_cycles_in_flight')) > 0) killsInCycle++;
      await service.kill9();
      try {
        await checker.check();
      } catch (error) {
        fail(`kill ${i}: ${(error as Error).message}`);
      }
      const unowned = await unownedCopies(cluster, stateDir);
      if (unowned.length > 0) fail(`kill ${i}: copies owned by nobody: ${unowned.join(', ')}`);
      if (i % 10 === 0) log(`  kill ${i}/${kills}: ${cyclesSeen} cycles so far, invariants held`);
    }
    // Finally, one clean process: every slot synced, nothing in conflict.
    await service.start(true);
    const deadline = Date.now() + 120_000;
    let ready = 0;
    while (Date.now() < deadline) {
      const slots = await slotsOf(service);
      ready = slots.filter((s) => s.sync_ready).length;
      if (ready === killSlotCount && !slots.some((s) => s.state === 'conflict')) break;
      await delay(200);
    }
    if (ready !== killSlotCount)
      fail(`after the kill loop only ${ready}/${killSlotCount} copies are sync-ready`);
    // Clean up through slotsync itself: slots dropped on the primary, copies dropped by it.
    await advancer.stop();
    await cluster.primary.sql(
      `SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name LIKE 'kill\\_%'`,
    );
    await cluster.waitForReplay();
    const dropDeadline = Date.now() + 60_000;
    const copiesLeft = `SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE 'kill\\_%'`;
    while ((await cluster.standby.sql(copiesLeft)).length > 0) {
      if (Date.now() > dropDeadline) throw new Error('the kill loop copies were not dropped');
      await delay(100);
    }
    await service.stopWorker();
  } finally {
    await advancer.stop();
    await service.kill9().catch(() => undefined);
    await rm(stateDir, { recursive: true, force: true });
  }
  if (advancer.errors.length > 0)
    fail(`the advancer failed ${advancer.errors.length} times: ${advancer.errors[0]}`);
  return {
    kills,
    kills_inside_a_cycle: killsInCycle,
    cycles: cyclesSeen,
    slots: killSlotCount,
    slots_recreated: recreated,
    invariant_checks: checker.checks,
    conflicts,
    seconds: round((performance.now() - started) / 1000, 1),
  };
}

interface ClientStats {
  requests: number;
  statuses: Map<string, number>;
  errors: string[];
  syncMs: number[];
}

/** One API client: GET /slots, GET /metrics, POST /sync, again and again. */
function apiClient(
  service: SlotsyncSystem,
  stats: ClientStats,
  until: () => boolean,
): Promise<void> {
  const expected: Record<string, number[]> = {
    'GET /slots': [200],
    'GET /metrics': [200],
    // 409: another client's or the worker's cycle was in flight (nowait); 429: rate limit.
    'POST /sync': [200, 409, 429],
  };
  return (async () => {
    while (!until()) {
      for (const [method, path] of [
        ['GET', '/slots'],
        ['GET', '/metrics'],
        ['POST', '/sync'],
      ] as const) {
        const what = `${method} ${path}`;
        try {
          const answer = await fetch(`${service.base}${path}`, {
            method,
            ...(method === 'POST'
              ? { headers: { 'content-type': 'application/json' }, body: '{"nowait":true}' }
              : {}),
          });
          const text = await answer.text();
          stats.requests++;
          const key = `${what} ${answer.status}`;
          stats.statuses.set(key, (stats.statuses.get(key) ?? 0) + 1);
          if (!expected[what]?.includes(answer.status)) {
            stats.errors.push(`${key}: ${text.slice(0, 300)}`);
          } else if (method === 'POST' && answer.status === 200) {
            stats.syncMs.push((JSON.parse(text) as { durationMs: number }).durationMs);
          }
        } catch (error) {
          stats.errors.push(`${what}: ${(error as Error).message}`);
        }
        await delay(20);
      }
    }
  })();
}

async function load(cluster: Cluster): Promise<Record<string, unknown>> {
  const stateDir = await mkdtemp(join(tmpdir(), 'slotsync-soak-load-'));
  const names = Array.from({ length: slotCount }, (_, i) => `soak_${i}`);
  log(`creating ${slotCount} slots`);
  await createSlots(cluster, names);
  const service = new SlotsyncSystem(cluster, {
    stateDir,
    env: {
      SLOTSYNC_WORKER: 'on',
      SLOTSYNC_SYNC_RATE: '5',
    },
  });
  await service.start(true);
  log('first sync of every slot');
  const firstDeadline = Date.now() + 300_000;
  while ((await slotsOf(service)).filter((s) => s.sync_ready).length < slotCount) {
    if (Date.now() > firstDeadline) throw new Error('the first sync did not finish in 5 min');
    await advanceAll(cluster, names);
    await delay(500);
  }
  const checker = new InvariantChecker(cluster);
  await checker.check();
  const cycleErrorsBefore = await service.metric(
    'slotsync_cycles_total{trigger="worker",outcome="error"}',
  );
  const workerCyclesBefore = await service.metric('slotsync_cycles_total{trigger="worker"');

  const durationMs = minutes * 60_000;
  const started = performance.now();
  const done = () => performance.now() - started > durationMs;
  const advancer = advanceForever(cluster, names, 250);
  const stats: ClientStats = { requests: 0, statuses: new Map(), errors: [], syncMs: [] };
  const clients = Array.from({ length: clientCount }, () => apiClient(service, stats, done));
  const rss: { s: number; mb: number }[] = [];
  let invariantFailures = 0;
  log(`load for ${minutes} min: ${slotCount} slots advancing, ${clientCount} API clients`);
  let nextReport = 60_000;
  while (!done()) {
    await delay(5_000);
    const s = (performance.now() - started) / 1000;
    rss.push({ s: round(s, 0), mb: round(service.footprint().rssMb, 1) });
    try {
      await checker.check();
    } catch (error) {
      invariantFailures++;
      fail(`invariant at ${round(s, 0)} s: ${(error as Error).message}`);
    }
    if (s * 1000 >= nextReport) {
      nextReport += 60_000;
      log(
        `  ${round(s / 60, 1)} min: RSS ${rss.at(-1)?.mb} MB, ${stats.requests} requests, ${advancer.rounds()} advance rounds, ${stats.errors.length} errors`,
      );
    }
  }
  await Promise.all(clients);
  await advancer.stop();

  // Catch-up: with the primary quiet, every copy reaches its primary slot's position.
  const catchUpStarted = performance.now();
  const positions = `SELECT slot_name, confirmed_flush_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name LIKE 'soak\\_%'`;
  let behind = slotCount;
  while (performance.now() - catchUpStarted < 120_000) {
    await cluster.waitForReplay();
    const remote = await cluster.primary.sql<{ slot_name: string; lsn: string }>(positions);
    const local = new Map(
      (await cluster.standby.sql<{ slot_name: string; lsn: string }>(positions)).map((r) => [
        r.slot_name,
        r.lsn,
      ]),
    );
    behind = remote.filter((r) => local.get(r.slot_name) !== r.lsn).length;
    if (behind === 0) break;
    await delay(250);
  }
  const catchUpMs = performance.now() - catchUpStarted;
  if (behind > 0) fail(`${behind} copies had not caught up 120 s after the load`);
  await checker.check();
  const unowned = await unownedCopies(cluster, stateDir);
  if (unowned.length > 0) fail(`copies owned by nobody: ${unowned.join(', ')}`);
  const conflicts = (await slotsOf(service)).filter((s) => s.state === 'conflict').length;
  if (conflicts > 0) fail(`${conflicts} copies in conflict`);

  const cycleErrors =
    (await service.metric('slotsync_cycles_total{trigger="worker",outcome="error"}')) -
    cycleErrorsBefore;
  const workerCycles =
    (await service.metric('slotsync_cycles_total{trigger="worker"')) - workerCyclesBefore;
  const metricsText = await (await fetch(`${service.base}/metrics`)).text();
  const workerP99 = histogramPercentile(
    metricsText,
    'slotsync_cycle_duration_seconds',
    'worker',
    0.99,
  );
  await service.stopWorker();
  await rm(stateDir, { recursive: true, force: true });

  if (cycleErrors > 0) fail(`${cycleErrors} worker cycles failed`);
  if (stats.errors.length > 0) fail(`${stats.errors.length} API errors, first: ${stats.errors[0]}`);
  if (advancer.errors.length > 0) fail(`the advancer failed: ${advancer.errors[0]}`);

  // Memory after warm-up (the first fifth of the run, at least 30 s). RSS swings by tens of
  // MB between garbage collections, so a leak shows in the floor each window comes back
  // to: the lowest sample of the last third against the lowest of the first third.
  const warm = rss.filter((r) => r.s >= Math.max(30, (durationMs / 1000) * 0.2));
  const third = Math.max(1, Math.floor(warm.length / 3));
  const floor = (samples: { mb: number }[]) => Math.min(...samples.map((r) => r.mb));
  const early = floor(warm.slice(0, third));
  const late = floor(warm.slice(-third));
  const growth = round(late - early, 1);
  const flat = warm.length < 3 || growth <= Math.max(5, early * 0.1);
  if (!flat) fail(`RSS floor grew from ${early} MB to ${late} MB after warm-up`);

  return {
    minutes,
    slots: slotCount,
    clients: clientCount,
    requests: stats.requests,
    statuses: Object.fromEntries([...stats.statuses].sort()),
    api_errors: stats.errors.length,
    worker_cycles: workerCycles,
    worker_cycle_errors: cycleErrors,
    worker_cycle_p99_ms_bucket: workerP99,
    api_cycle_p50_ms: round(median(stats.syncMs), 1),
    api_cycle_p99_ms: round(percentile(stats.syncMs, 99), 1),
    api_cycles: stats.syncMs.length,
    advance_rounds: advancer.rounds(),
    invariant_checks: checker.checks,
    invariant_failures: invariantFailures,
    catch_up_ms: round(catchUpMs, 0),
    rss_mb: rss,
    rss_warm_early_floor_mb: early,
    rss_warm_late_floor_mb: late,
    rss_warm_median_mb: median(warm.map((r) => r.mb)),
    rss_growth_mb: growth,
    rss_flat: flat,
  };
}

/** Upper bound (ms) of the histogram bucket holding quantile q: what Prometheus would see. */
function histogramPercentile(text: string, name: string, trigger: string, q: number): number {
  const buckets: { le: number; count: number }[] = [];
  const pattern = new RegExp(`^${name}_bucket\\{le="([^"]+)",trigger="${trigger}"\\} (\\d+)`);
  for (const line of text.split('\n')) {
    const m = pattern.exec(line);
    if (m)
      buckets.push({
        le: m[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[1]),
        count: Number(m[2]),
      });
  }
  const total = buckets.at(-1)?.count ?? 0;
  const bucket = buckets.find((b) => b.count >= total * q);
  return bucket ? bucket.le * 1000 : Number.NaN;
}

async function main(): Promise<void> {
  log(
    `soak on PostgreSQL ${major}: ${kills} kills (${killSlotCount} slots), then ${minutes} min of load (${slotCount} slots)`,
  );
  const cluster = await startCluster({ major });
  const result: Record<string, unknown> = { pg: major };
  try {
    await cluster.primary.sql('CREATE TABLE soak_load (id bigserial PRIMARY KEY, payload text)');
    if (kills > 0) {
      log(`kill loop: ${kills} × kill -9 at a random moment`);
      result.kill_loop = await killLoop(cluster);
      log(`SOAK kill_loop ${JSON.stringify(result.kill_loop)}`);
    }
    if (minutes > 0) {
      const figures = await load(cluster);
      result.load = figures;
      const { rss_mb, ...summary } = figures;
      log(
        `SOAK rss_mb ${(rss_mb as { s: number; mb: number }[]).map((r) => `${r.s}s:${r.mb}`).join(' ')}`,
      );
      log(`SOAK load ${JSON.stringify(summary)}`);
    }
  } finally {
    await cluster.stop();
  }
  result.failures = failures;
  if (out) await writeFile(out, `${JSON.stringify(result, null, 2)}\n`);
  log(failures.length === 0 ? 'SOAK passed' : `SOAK FAILED: ${failures.length} failures`);
  process.exitCode = failures.length === 0 ? 0 : 1;
}

await main();
