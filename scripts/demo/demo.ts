/**
 * npm run demo: a primary, a standby and a subscriber on embedded PostgreSQL, a write
 * load, slotsync with its worker and HTTP API, a live view of the slots, and a failover on
 * a key press (f) or after --failover-after SECONDS. Ctrl-C stops everything it started.
 */
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import { buildApp } from '../../src/service/app.js';
import { SlotSyncService } from '../../src/service/service.js';
import type { SlotView } from '../../src/sync/view.js';
import { delay } from '../../src/util.js';
import type { Major } from '../../test/support/binaries.js';
import { type Cluster, startCluster } from '../../test/support/cluster.js';
import {
  countRows,
  pointSubscriptionAt,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../../test/support/workload.js';
import { numberOption, option } from '../args.js';

type Phase = 'syncing' | 'failing over' | 'promoted';

const CDC_SLOT = 'cdc_consumer';

export async function runDemo(argv: readonly string[]): Promise<void> {
  const major = Number(option(argv, 'pg') ?? 17) as Major;
  if (major !== 17 && major !== 18) throw new Error('--pg must be 17 or 18');
  const failoverAfter = numberOption(argv, 'failover-after');
  const exitAfter = numberOption(argv, 'exit-after');
  const port = numberOption(argv, 'port') ?? 8432;
  const tty = process.stdout.isTTY === true;
  const say = (line: string) => process.stdout.write(`${line}\n`);

  say(
    `starting PostgreSQL ${major}: primary, standby and subscriber (embedded, ${process.getuid?.() === 0 ? 'run as an unprivileged user' : 'run as you'}) ...`,
  );
  const started = Date.now();
  const cluster = await startCluster({ major, subscriber: true, synchronizedStandbySlots: true });
  let service: SlotSyncService | undefined;
  let app: Awaited<ReturnType<typeof buildApp>> | undefined;
  const writer = new Writer(50);
  let stopping = false;
  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    await writer.stop().catch(() => undefined);
    await app?.close().catch(() => undefined);
    await service?.close().catch(() => undefined);
    await cluster.stop().catch(() => undefined);
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
    process.exit(code);
  };
  process.once('SIGINT', () => void stopAll(0));
  process.once('SIGTERM', () => void stopAll(0));

  try {
    const subscriber = cluster.subscriber as NonNullable<Cluster['subscriber']>;
    await setupSubscription(cluster.primary, subscriber);
    await cluster.primary.sql(
      `SELECT pg_create_logical_replication_slot($1, 'test_decoding', false, false, true)`,
      [CDC_SLOT],
    );

    const stateDir = `${cluster.root}/slotsync-state`;
    const config = loadConfig({
      SLOTSYNC_PRIMARY_URL: cluster.primary.url(),
      SLOTSYNC_STANDBY_URL: cluster.standby.url(),
      SLOTSYNC_STATE_DIR: stateDir,
      SLOTSYNC_PORT: String(port),
      SLOTSYNC_NAPTIME_MAX_MS: '2000',
    });
    service = await SlotSyncService.create(config, pino({ level: 'silent' }));
    app = await buildApp({ service });
    try {
      await app.listen({ host: config.host, port: config.port });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        process.stderr.write(
          `\nport ${port} on 127.0.0.1 is busy (another slotsync?): run npm run demo -- --port 18432\n`,
        );
        await stopAll(2);
      }
      throw error;
    }
    service.start();
    writer.start(cluster.primary);
    const base = `http://${config.host}:${config.port}`;
    say(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    say(`  API      ${base}/slots   ${base}/health   (POST ${base}/sync, ${base}/shutdown)`);
    say(`  metrics  ${base}/metrics`);
    say(`  OpenAPI  ${base}/openapi.json`);
    say(
      tty
        ? '  press f to fail over, Ctrl-C to stop'
        : `  not a terminal: f cannot be read here; ${failoverAfter === undefined ? 'run with --failover-after SECONDS to fail over' : `failing over after ${failoverAfter} s`}; Ctrl-C to stop`,
    );

    let phase = 'syncing' as Phase;
    const serviceStarted = Date.now();
    let firstReadyMs: number | undefined;
    let failoverMs: number | undefined;
    let failoverStartedAt = 0;
    let lastOld = 0;
    let note = '';
    let failoverRequested = false;
    if (tty) {
      process.stdin.setRawMode(true);
      process.stdin.resume();
      process.stdin.on('data', (key: Buffer) => {
        const k = key.toString();
        if (k === '\u0003') void stopAll(0);
        if (k === 'f' || k === 'F') failoverRequested = true;
      });
    }

    const failover = async () => {
      phase = 'failing over';
      failoverStartedAt = Date.now();
      const all = async () => {
        const views = (await (await fetch(`${base}/slots`)).json()).slots as SlotView[];
        return views.length >= 2 && views.every((v) => v.sync_ready);
      };
      note = 'waiting until every copy is sync-ready (GET /slots)';
      while (!(await all())) await delay(200);
      note = 'POST /shutdown';
      const answer = await (await fetch(`${base}/shutdown`, { method: 'POST' })).json();
      note = `shutdown: ${answer.slots.filter((s: SlotView) => s.sync_ready).length} sync-ready copies kept, ${answer.dropped.length} dropped; stopping the primary (-m immediate)`;
      const shutdownMs = Date.now() - failoverStartedAt;
      lastOld = await writer.stop();
      await cluster.waitForReplay();
      await cluster.primary.stop('immediate');
      note = 'promoting the standby';
      const promoteStarted = Date.now();
      await cluster.standby.promote();
      const promoteMs = Date.now() - promoteStarted;
      await pointSubscriptionAt(subscriber, cluster.standby);
      writer.start(cluster.standby);
      note = `promoted; subscription ${SUBSCRIPTION} now reads from the new primary (port ${cluster.standby.port}); shutdown took ${shutdownMs} ms, promotion ${promoteMs} ms`;
      phase = 'promoted';
    };

    // The CDC consumer (test_decoding) reads the primary, then the promoted standby.
    const cdc = { ids: [] as number[], lastBefore: 0, firstAfter: undefined as number | undefined };
    const consumeCdc = async () => {
      if (phase === 'failing over') return;
      const server = phase === 'promoted' ? cluster.standby : cluster.primary;
      const rows = await server
        .sql<{ data: string }>(`SELECT data FROM pg_logical_slot_get_changes($1, NULL, NULL)`, [
          CDC_SLOT,
        ])
        .catch(() => []);
      const ids = rows
        .map((r) => /^table public\.items: INSERT: id\[bigint\]:(\d+)/.exec(r.data)?.[1])
        .filter((id): id is string => id !== undefined)
        .map(Number);
      if (phase === 'promoted' && cdc.firstAfter === undefined && ids.length > 0) {
        cdc.firstAfter = ids[0];
      }
      if (phase === 'syncing' && ids.length > 0) cdc.lastBefore = ids.at(-1) ?? cdc.lastBefore;
      cdc.ids.push(...ids);
    };
    /** Every row exactly once at the subscriber so far, or what is wrong. */
    const verdict = async (committed: number): Promise<string> => {
      const [row] = await subscriber.sql<{ n: number; d: number; max: number }>(
        'SELECT count(*)::int AS n, count(DISTINCT id)::int AS d, coalesce(max(id), 0)::int AS max FROM items',
      );
      if (!row) return '';
      if (row.d !== row.n) return `DUPLICATES: ${row.n - row.d} rows twice`;
      if (row.n !== row.max) return `MISSING: ${row.max - row.n} rows below id ${row.max}`;
      return row.max === committed
        ? `every row exactly once (1..${row.max})`
        : `rows 1..${row.max} exactly once, ${committed - row.max} on the way`;
    };

    for (;;) {
      await consumeCdc();
      const views = ((await (await fetch(`${base}/slots`)).json()).slots ?? []) as SlotView[];
      if (firstReadyMs === undefined && views.length > 0 && views.every((v) => v.sync_ready))
        firstReadyMs = Date.now() - serviceStarted;
      const sub = await countRows(subscriber);
      if (phase === 'promoted' && failoverMs === undefined && sub.max > lastOld)
        failoverMs = Date.now() - failoverStartedAt;
      const cdcLine =
        cdc.firstAfter === undefined
          ? `CDC consumer (test_decoding): ${cdc.ids.length} inserts read${phase === 'promoted' ? ', waiting for its first change from the new primary' : ''}`
          : `CDC consumer (test_decoding): last id ${cdc.lastBefore} before the failover, first id ${cdc.firstAfter} after it: ${
              cdc.firstAfter > cdc.lastBefore + 1
                ? `GAP: ids ${cdc.lastBefore + 1}..${cdc.firstAfter - 1} lost`
                : cdc.firstAfter === cdc.lastBefore + 1
                  ? 'no gap, nothing twice'
                  : `no gap; ${cdc.lastBefore + 1 - cdc.firstAfter} sent again (a SQL consumer resumes at its slot's last synced position: at least once)`
            }`;
      render(tty, {
        major,
        phase,
        views,
        committed: writer.lastCommitted,
        subscriber: sub,
        firstReadyMs,
        failoverMs,
        note,
        verdict: phase === 'promoted' ? await verdict(writer.lastCommitted) : '',
        cdc: cdcLine,
        elapsed: (Date.now() - started) / 1000,
      });
      const seconds = (Date.now() - started) / 1000;
      if (
        phase === 'syncing' &&
        (failoverRequested || (failoverAfter !== undefined && seconds >= failoverAfter))
      ) {
        void failover().catch((error) => {
          note = `failover failed: ${(error as Error).message}`;
        });
      }
      if (exitAfter !== undefined && seconds >= exitAfter) {
        const committed = await writer.stop();
        await waitCaughtUp(subscriber, committed);
        const final = await subscriber.sql<{ n: number; d: number; max: number }>(
          'SELECT count(*)::int AS n, count(DISTINCT id)::int AS d, coalesce(max(id), 0)::int AS max FROM items',
        );
        const row = final[0];
        const exact =
          row !== undefined && row.n === committed && row.d === committed && row.max === committed;
        say(
          `\n${exact ? 'OK' : 'MISMATCH'}: ${committed} rows committed, subscriber holds ${row?.n} (${row?.d} distinct, max id ${row?.max})${phase === 'promoted' ? `; failover: first new row at the subscriber ${failoverMs} ms after it began` : ''}`,
        );
        await stopAll(exact ? 0 : 1);
      }
      await delay(1000);
    }
  } catch (error) {
    process.stderr.write(`demo failed: ${(error as Error).message}\n`);
    await stopAll(1);
  }
}

async function waitCaughtUp(
  subscriber: NonNullable<Cluster['subscriber']>,
  committed: number,
): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && (await countRows(subscriber)).count < committed) await delay(100);
}

interface View {
  major: number;
  phase: Phase;
  views: SlotView[];
  committed: number;
  subscriber: { count: number; max: number };
  firstReadyMs: number | undefined;
  failoverMs: number | undefined;
  note: string;
  /** After the failover: every row exactly once at the subscriber, or what is wrong. */
  verdict: string;
  cdc: string;
  elapsed: number;
}

function render(tty: boolean, v: View): void {
  const lines = [
    `slotsync demo · PostgreSQL ${v.major} · ${v.elapsed.toFixed(0)} s · phase: ${v.phase}`,
    '',
    `${'slot'.padEnd(16)}${'state'.padEnd(12)}${'sync_ready'.padEnd(12)}lag (bytes)`,
    ...v.views.map(
      (s) =>
        `${s.name.padEnd(16)}${s.state.padEnd(12)}${String(s.sync_ready).padEnd(12)}${s.lag_bytes ?? '-'}`,
    ),
    '',
    `rows committed ${v.committed}   rows at the subscriber ${v.subscriber.count} (max id ${v.subscriber.max})`,
    `every copy sync-ready ${v.firstReadyMs === undefined ? '…' : `${v.firstReadyMs} ms after slotsync started`}${v.failoverMs === undefined ? '' : `   failover: subscriber carried on ${v.failoverMs} ms after it began`}`,
    v.cdc,
    v.verdict === '' ? '' : `subscription: ${v.verdict}`,
    v.note,
  ];
  if (tty) process.stdout.write(`\x1b[s\x1b[J${lines.join('\n')}\n\x1b[u`);
  else process.stdout.write(`${lines.filter((l) => l !== '').join(' | ')}\n`);
}
