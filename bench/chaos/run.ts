/**
 * The randomized fault schedule and its checker, the Jepsen way adapted to slotsync: a
 * primary and two standbys of PostgreSQL 17 or 18, one slotsync process beside every node
 * (the same environment, SLOTSYNC_PRIMARY_URL naming every node through a proxy that can cut
 * slotsync's SQL path), a native subscription and a pgoutput client (npm
 * pg-logical-replication, acknowledging "last byte + 1") on failover slots, and a primary
 * written to all the time. Each step draws a fault (schedule.ts); a failover kills the
 * primary and promotes the node `slotsync candidates` names, once its gate says yes — and
 * only then. After each promotion the checker (checker.ts) holds every consumer to the new
 * primary's rows: nothing ahead, nothing missing, nothing twice, or a clear error.
 */
import { appendFile, readFile, rm, stat } from 'node:fs/promises';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { parseLsn } from '../../src/sync/lsn.js';
import { delay } from '../../src/util.js';
import { type Running, runCli, startProcess } from '../../test/helpers/cli.js';
import { TcpProxy } from '../../test/helpers/proxy.js';
import { tempDir } from '../../test/helpers/setup.js';
import type { Major } from '../../test/support/binaries.js';
import { type Cluster, slotOf, startCluster } from '../../test/support/cluster.js';
import type { PgServer } from '../../test/support/server.js';
import {
  PUBLICATION,
  pointSubscriptionAt,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../../test/support/workload.js';
import { type ConsumerCheck, checkConsumer } from './checker.js';
import { nextStep, prng, type Step, type World } from './schedule.js';

export interface ChaosOptions {
  seed: number;
  minutes: number;
  major: Major;
  log: (line: string) => void;
  /**
   * SLOTSYNC_ENGINE of every slotsync (default sql). builtin: every standby, rejoined ones
   * too, runs PostgreSQL's slot sync worker (sync_replication_slots = on).
   */
  engine?: 'sql' | 'builtin';
  /** A folder for each slotsync's log (info level), one file a node; default: not kept. */
  logs?: string;
}

export interface ChaosResult {
  seed: number;
  major: Major;
  minutes: number;
  operations: number;
  faults: number;
  promotions: number;
  rows: number;
  /** Failovers with no safe candidate (the old primary restarted instead), by reason. */
  no: Record<string, number>;
  violations: string[];
  /** Consumers that stopped with a clear error after a promotion. */
  errors: string[];
  /** Consumers not yet past the new timeline's rows after 30 s (waiting, nothing skipped). */
  stalled: number;
  schedule: string[];
}

const CDC = 'cdc';
const PASSWORD = 'chaos-pw';

interface Node {
  server: PgServer;
  proxy: TcpProxy;
  slotsync: Running | null;
  env: Record<string, string>;
  stateDir: string;
}

/** The pgoutput client: rows it got (by id) since its baseline, and its position. */
class CdcClient {
  received = new Map<number, number>();
  error: string | null = null;
  #service: LogicalReplicationService | null = null;
  #lastLsn: string | undefined;

  start(primary: PgServer): void {
    const service = new LogicalReplicationService(
      { connectionString: primary.url(), application_name: 'chaos-cdc' },
      { acknowledge: { auto: true, timeoutSeconds: 1 } },
    );
    service.on('data', (lsn: string, message: { tag?: string; new?: { id?: string } }) => {
      this.#lastLsn = lsn;
      if (message.tag === 'insert' && message.new?.id !== undefined) {
        const id = Number(message.new.id);
        this.received.set(id, (this.received.get(id) ?? 0) + 1);
      }
    });
    service.on('error', (error: Error) => {
      this.error ??= error.message;
    });
    this.#service = service;
    void service
      .subscribe(
        new PgoutputPlugin({ protoVersion: 1, publicationNames: [PUBLICATION] }),
        CDC,
        this.#lastLsn as string, // undefined: from the slot's confirmed position
      )
      .catch((error: Error) => {
        this.error ??= error.message;
      });
  }

  async stop(): Promise<void> {
    await this.#service?.destroy().catch(() => undefined);
    this.#service = null;
  }

  /** Where it would resume: the last position it got (null: its slot's). */
  position(): bigint | null {
    return parseLsn(this.#lastLsn);
  }

  describe(): string {
    return `${this.received.size} rows since the last promotion, at ${this.#lastLsn ?? 'its slot'}, error: ${this.error ?? 'none'}`;
  }

  /** Forgets what it got: a new baseline (after a promotion is checked). */
  reset(): void {
    this.received = new Map();
    this.error = null;
  }
}

async function ids(server: PgServer, where = 'true'): Promise<number[]> {
  const rows = await server.sql<{ id: string }>(`SELECT id FROM items WHERE ${where} ORDER BY id`);
  return rows.map((r) => Number(r.id));
}

async function streaming(primary: PgServer, name: string): Promise<boolean> {
  const rows = await primary
    .sql(`SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'`, [
      name,
    ])
    .catch(() => []);
  return rows.length > 0;
}

export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const { log } = options;
  const rand = prng(options.seed);
  const result: ChaosResult = {
    seed: options.seed,
    major: options.major,
    minutes: options.minutes,
    operations: 0,
    faults: 0,
    promotions: 0,
    rows: 0,
    no: {},
    violations: [],
    errors: [],
    stalled: 0,
    schedule: [],
  };
  const cluster: Cluster = await startCluster({
    major: options.major,
    standbys: 2,
    subscriber: true,
    synchronizedStandbySlots: true,
    primarySettings: { wal_keep_size: '256MB' },
    standbySettings: options.engine === 'builtin' ? { sync_replication_slots: 'on' } : {},
  });
  const nodes = new Map<string, Node>();
  const writer = new Writer(20);
  const cdc = new CdcClient();
  const world = {
    cutStreams: new Set<string>(),
    cutSql: new Set<string>(),
    stopped: new Set<string>(),
    out: new Set<string>(),
    settingEdited: false,
  };
  const view = (): World => ({
    primary: cluster.primary.name,
    standbys: cluster.standbys.map((s) => s.name).filter((n) => !world.out.has(n)),
    out: [...world.out],
    cutStreams: world.cutStreams,
    cutSql: world.cutSql,
    stopped: world.stopped,
    settingEdited: world.settingEdited,
  });
  const server = (name: string) => nodes.get(name)?.server as PgServer;
  /** The log of a slotsync process that ended, appended to its node's file (--logs). */
  const keepLog = async (node: Node) => {
    if (options.logs === undefined || node.slotsync === null) return;
    const path = `${options.logs}/${node.server.name}.log`;
    await appendFile(
      path,
      `${node.slotsync.output()}\n--- process ended ${new Date().toISOString()}\n`,
    );
  };
  const allSlots = () =>
    cluster.standbys
      .filter((s) => !world.out.has(s.name))
      .map(slotOf)
      .join(',');

  try {
    const subscriber = cluster.subscriber as PgServer;
    await setupSubscription(cluster.primary, subscriber);
    await cluster.primary.sql(
      `SELECT pg_create_logical_replication_slot('${CDC}', 'pgoutput', false, false, true)`,
    );
    for (const s of [cluster.primary, ...cluster.standbys]) {
      const proxy = await TcpProxy.start('127.0.0.1', s.port);
      nodes.set(s.name, { server: s, proxy, slotsync: null, env: {}, stateDir: '' });
    }
    const everyNode = [...nodes.values()].map((n) => `127.0.0.1:${n.proxy.port}`).join(',');
    for (const node of nodes.values()) {
      node.stateDir = await tempDir(`chaos-${node.server.name}`);
      node.env = {
        SLOTSYNC_PRIMARY_URL: `postgres://postgres:${PASSWORD}@${everyNode}/postgres`,
        SLOTSYNC_STANDBY_URL: node.server.url('postgres', PASSWORD),
        SLOTSYNC_STATE_DIR: node.stateDir,
        SLOTSYNC_LOG_LEVEL: options.logs === undefined ? 'warn' : 'info',
        SLOTSYNC_ENGINE: options.engine ?? 'sql',
        // A rejoined old primary keeps its own same-name slots, which stop PostgreSQL's sync
        // for every slot: under builtin slotsync replaces them when provably stale.
        ...(options.engine === 'builtin' ? { SLOTSYNC_REPLACE_STALE: 'on' } : {}),
      };
      node.slotsync = await startProcess(node.env);
    }
    writer.start(cluster.primary);
    cdc.start(cluster.primary);
    // Faults start on a healthy cluster: every standby safe to promote onto.
    await waitUntil(async () => {
      for (const standby of cluster.standbys) {
        const base = nodes.get(standby.name)?.slotsync?.base;
        const answer = await fetch(`${base}/ready`).catch(() => null);
        if (answer?.status !== 200) return false;
      }
      return true;
    }, 60_000);

    const restartSlotsync = async (node: Node, signal: 'SIGKILL' | 'SIGHUP') => {
      if (signal === 'SIGHUP') {
        node.slotsync?.child.kill('SIGHUP');
        return;
      }
      if (node.slotsync) {
        node.slotsync.child.kill('SIGKILL');
        await node.slotsync.exited;
        await keepLog(node);
      }
      node.slotsync = await startProcess(node.env);
    };

    const reachOf = (name: string) => nodes.get(name)?.slotsync?.base;

    /** The primary killed; promotion only onto what candidates names and the gate passes. */
    const failover = async (): Promise<void> => {
      const old = cluster.primary;
      await old.stop('immediate');
      await writer.stop();
      await cdc.stop();
      const urls = cluster.standbys
        .filter((s) => !world.out.has(s.name) && !world.stopped.has(s.name))
        .map((s) => reachOf(s.name))
        .filter((u): u is string => u !== undefined);
      let best: string | null = null;
      let reasons: string[] = [];
      const deadline = Date.now() + 10_000;
      while (best === null && Date.now() < deadline) {
        const ranked = await runCli(
          ['candidates', ...urls.flatMap((u) => ['--url', u]), '--json'],
          {},
        );
        try {
          const ranking = JSON.parse(ranked.stdout) as {
            best: string | null;
            candidates: { status: string; reason: string | null }[];
          };
          best = ranking.best;
          reasons = ranking.candidates.map((c) => `${c.status}: ${c.reason ?? ''}`);
        } catch {
          reasons = [`candidates failed: ${ranked.stderr.slice(0, 200)}`];
        }
        if (best === null) await delay(500);
      }
      if (best !== null) {
        const gate = await runCli(['gate', '--url', best], {});
        if (gate.code !== 0) {
          reasons = [`gate refused after candidates named it: ${gate.stderr.slice(0, 200)}`];
          best = null;
        }
      }
      const to = [...nodes.values()].find((n) => n.slotsync?.base === best)?.server;
      if (best === null || to === undefined) {
        await old.start();
        const [slot] = await old.sql<Record<string, unknown>>(
          `SELECT failover, confirmed_flush_lsn::text, active FROM pg_replication_slots WHERE slot_name = '${CDC}'`,
        );
        log(`  ("${CDC}" on the primary: ${JSON.stringify(slot ?? null)})`);
        for (const reason of reasons) {
          const key = reasonKey(reason);
          result.no[key] = (result.no[key] ?? 0) + 1;
        }
        log(`  no safe candidate: ${reasons.join(' | ')}; the old primary restarts`);
        log(`  (the pgoutput client: ${cdc.describe()})`);
        await writer.resumeOn(old);
        cdc.error = null;
        cdc.start(old);
        return;
      }
      await promoteOnto(to, old);
    };

    const promoteOnto = async (to: PgServer, old: PgServer): Promise<void> => {
      const subscriber = cluster.subscriber as PgServer;
      const heldBySubscriber = new Set(await ids(subscriber));
      const heldByCdc = new Set(cdc.received.keys());
      // The end of the WAL the promoted node has (the primary is dead: nothing more comes),
      // and where each consumer would resume.
      const [end] = await to.sql<{ lsn: string }>(
        `SELECT (greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) - '0/0'::pg_lsn)::text AS lsn`,
      );
      const endOfWal = BigInt(end?.lsn ?? '0');
      const [origin] = await subscriber.sql<{ lsn: string | null }>(
        `SELECT (max(remote_lsn) - '0/0'::pg_lsn)::text AS lsn FROM pg_replication_origin_status`,
      );
      const subscriberResume = origin?.lsn ? BigInt(origin.lsn) : null;
      const cdcResume = cdc.position();
      const logFrom = await subscriberLogSize(subscriber);
      await to.promote();
      result.promotions++;
      const primaryAtPromotion = new Set(await ids(to));
      const maxAtPromotion = Math.max(0, ...primaryAtPromotion);
      const others = cluster.standbys.filter((s) => s !== to);
      for (const other of others) {
        await to.sql(
          `SELECT pg_create_physical_replication_slot($1, true)
            WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
          [slotOf(other)],
        );
        if (!world.stopped.has(other.name) && !world.out.has(other.name)) {
          await other
            .sql(
              `ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=${to.port} user=postgres dbname=postgres application_name=${other.name}'`,
            )
            .then(() => other.sql('SELECT pg_reload_conf()'))
            .catch(() => undefined);
        }
        world.cutStreams.delete(other.name);
      }
      cluster.primary = to;
      cluster.standbys = others;
      cluster.standby = others[0] ?? to;
      world.out.add(old.name);
      world.cutStreams.delete(to.name);
      world.settingEdited = false;
      // The standbys that run, as an operator sets it after a failover (a stopped one named
      // there would stall every consumer of a failover slot until it returns).
      await to.sql(
        `ALTER SYSTEM SET synchronized_standby_slots = '${others
          .filter((o) => !world.stopped.has(o.name) && !world.out.has(o.name))
          .map(slotOf)
          .join(',')}'`,
      );
      await to.sql('SELECT pg_reload_conf()');
      // The consumers move over, as an orchestrator moves them; the writer goes on there.
      cdc.reset();
      await pointSubscriptionAt(cluster.subscriber as PgServer, to);
      cdc.start(to);
      await writer.resumeOn(to);
      await delay(3_000);
      const committedAfter = await ids(to, `id > ${maxAtPromotion}`);
      // Every row above was committed before this position: a consumer that got past it and
      // lacks one of them skipped it; one that did not get that far is stalled, not gapped
      // (a failover slot's walsender waits for the standbys synchronized_standby_slots names).
      const [flushed] = await to.sql<{ lsn: string }>(
        `SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::text AS lsn`,
      );
      const snapshot = BigInt(flushed?.lsn ?? '0');
      const checks: ConsumerCheck[] = [];
      let subscriberIds = new Set<number>();
      const settleBy = Date.now() + 30_000;
      for (;;) {
        subscriberIds = new Set(await ids(subscriber));
        const cdcDone = cdc.error !== null || committedAfter.every((id) => cdc.received.has(id));
        if (
          (committedAfter.every((id) => subscriberIds.has(id)) && cdcDone) ||
          Date.now() > settleBy
        )
          break;
        await delay(250);
      }
      const [applied] = await subscriber.sql<{ lsn: string | null }>(
        `SELECT (max(remote_lsn) - '0/0'::pg_lsn)::text AS lsn FROM pg_replication_origin_status`,
      );
      const subscriberAt = applied?.lsn ? BigInt(applied.lsn) : null;
      const cdcAt = cdc.position();
      const subscriberError = committedAfter.every((id) => subscriberIds.has(id))
        ? null
        : await subscriberErrors(subscriber, logFrom);
      checks.push(
        checkConsumer({
          consumer: `subscription ${SUBSCRIPTION}`,
          position: { resume: subscriberResume, endOfWal },
          primaryAtPromotion,
          heldAtPromotion: heldBySubscriber,
          committedAfter,
          receivedAfter: new Map(
            [...subscriberIds].filter((id) => id > maxAtPromotion).map((id) => [id, 1]),
          ),
          error: subscriberError,
          passed: subscriberAt !== null && subscriberAt >= snapshot,
        }),
        checkConsumer({
          consumer: `pgoutput client on "${CDC}"`,
          position: { resume: cdcResume, endOfWal },
          primaryAtPromotion,
          heldAtPromotion: heldByCdc,
          committedAfter,
          receivedAfter: cdc.received,
          error: cdc.error,
          passed: cdcAt !== null && cdcAt >= snapshot,
        }),
      );
      for (const check of checks) {
        if (check.stalled) result.stalled++;
        if (check.violation !== null) result.violations.push(check.violation);
        else if (check.error !== null) result.errors.push(`${check.consumer}: ${check.error}`);
      }
      log(
        `  promoted ${to.name}: ${committedAfter.length} rows of the new timeline checked; ${checks.map((c) => c.violation ?? (c.error ? `error: ${c.error}` : c.stalled ? `${c.consumer} stalled (${c.missing.length} rows not delivered yet, nothing skipped)` : `${c.consumer} ok`)).join('; ')}`,
      );
      if (cdc.error !== null) {
        // A clear error (the slot is gone): the client starts afresh from a new slot.
        await cdc.stop();
        await to
          .sql(
            `SELECT pg_create_logical_replication_slot('${CDC}', 'pgoutput', false, false, true)
              WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '${CDC}')`,
          )
          .catch(() => undefined);
        cdc.reset();
        cdc.start(to);
      }
      cdc.reset();
      // A standby that cannot follow the new timeline leaves the cluster until it rejoins.
      for (const other of others) {
        if (world.stopped.has(other.name) || world.out.has(other.name)) continue;
        const followed = await waitUntil(() => streaming(to, other.name), 10_000);
        if (!followed) world.out.add(other.name);
      }
    };

    const apply = async (step: Step): Promise<void> => {
      const node = step.node === null ? undefined : nodes.get(step.node);
      switch (step.kind) {
        case 'restart_slotsync':
          if (node) await restartSlotsync(node, 'SIGKILL');
          break;
        case 'sighup':
          if (node) await restartSlotsync(node, 'SIGHUP');
          break;
        case 'cut_stream': {
          const s = server(step.node as string);
          await s.sql(`ALTER SYSTEM SET primary_conninfo = ''`);
          await s.sql('SELECT pg_reload_conf()');
          world.cutStreams.add(s.name);
          break;
        }
        case 'restore_stream': {
          const s = server(step.node as string);
          await s.sql(
            `ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=${cluster.primary.port} user=postgres dbname=postgres application_name=${s.name}'`,
          );
          await s.sql('SELECT pg_reload_conf()');
          world.cutStreams.delete(s.name);
          break;
        }
        case 'cut_sql':
          node?.proxy.cut();
          world.cutSql.add(step.node as string);
          break;
        case 'restore_sql':
          node?.proxy.restore();
          world.cutSql.delete(step.node as string);
          break;
        case 'stop_standby':
          await server(step.node as string).stop('fast');
          world.stopped.add(step.node as string);
          break;
        case 'start_standby': {
          const s = server(step.node as string);
          await s.start();
          world.stopped.delete(s.name);
          // It may have missed a failover: it follows the primary of now, or leaves the
          // cluster until it rejoins (it cannot follow a timeline forked behind it).
          await s.sql(
            `ALTER SYSTEM SET primary_conninfo = '${world.cutStreams.has(s.name) ? '' : `host=127.0.0.1 port=${cluster.primary.port} user=postgres dbname=postgres application_name=${s.name}`}'`,
          );
          await s.sql('SELECT pg_reload_conf()');
          if (
            !world.cutStreams.has(s.name) &&
            !(await waitUntil(() => streaming(cluster.primary, s.name), 10_000))
          ) {
            world.out.add(s.name);
          }
          break;
        }
        case 'edit_setting': {
          const names = cluster.standbys.filter(() => rand() < 0.5).map(slotOf);
          await cluster.primary.sql(
            `ALTER SYSTEM SET synchronized_standby_slots = '${names.join(',')}'`,
          );
          await cluster.primary.sql('SELECT pg_reload_conf()');
          world.settingEdited = true;
          break;
        }
        case 'restore_setting':
          await cluster.primary.sql(
            `ALTER SYSTEM SET synchronized_standby_slots = '${allSlots()}'`,
          );
          await cluster.primary.sql('SELECT pg_reload_conf()');
          world.settingEdited = false;
          break;
        case 'advance_physical':
          await cluster.primary
            .sql(`SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, [
              slotOf(server(step.node as string)),
            ])
            .catch(() => undefined); // active again meanwhile: refused, nothing moved
          break;
        case 'failover':
          await failover();
          break;
        case 'rejoin': {
          const s = server(step.node as string);
          world.stopped.delete(s.name);
          await cluster.rejoin(s);
          world.out.delete(s.name);
          // A fresh copy is another node: its slotsync's state folder describes the old one
          // and is refused (invariant 8). The operator's step, as the runbook says: restart
          // it once with SLOTSYNC_RESET_STATE=on.
          const beside = nodes.get(s.name);
          if (beside) {
            if (beside.slotsync) {
              beside.slotsync.child.kill('SIGKILL');
              await beside.slotsync.exited;
              await keepLog(beside);
            }
            beside.slotsync = await startProcess({ ...beside.env, SLOTSYNC_RESET_STATE: 'on' });
          }
          world.cutStreams.delete(s.name);
          if (world.settingEdited) {
            world.settingEdited = false; // rejoin names every standby again
          }
          break;
        }
      }
    };

    const until = Date.now() + options.minutes * 60_000;
    while (Date.now() < until) {
      const step = nextStep(rand, view());
      const line = `${step.kind}${step.node ? ` ${step.node}` : ''}`;
      result.schedule.push(line);
      log(`[${Math.round((until - Date.now()) / 1000)} s left] ${line}`);
      result.operations++;
      if (step.kind !== 'restore_stream' && step.kind !== 'restore_sql') result.faults++;
      await apply(step);
      await delay(500 + Math.floor(rand() * 2_500));
    }
    // Every run ends with the moment of truth: the faults healed, then a failover.
    for (const name of [...world.cutSql]) await apply({ kind: 'restore_sql', node: name });
    for (const name of [...world.stopped]) await apply({ kind: 'start_standby', node: name });
    for (const name of [...world.cutStreams]) await apply({ kind: 'restore_stream', node: name });
    result.schedule.push('failover (final)');
    result.operations++;
    result.faults++;
    await failover();
    result.rows = writer.lastCommitted;
    return result;
  } finally {
    await writer.stop().catch(() => undefined);
    await cdc.stop();
    for (const node of nodes.values()) {
      await node.slotsync?.stop().catch(() => undefined);
      await keepLog(node);
      await node.proxy.close().catch(() => undefined);
      if (node.stateDir) await rm(node.stateDir, { recursive: true, force: true });
    }
    await cluster.stop();
  }
}

async function waitUntil(check: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await delay(250);
  }
  return false;
}

async function subscriberLogSize(subscriber: PgServer): Promise<number> {
  return (await stat(subscriber.logFile).catch(() => ({ size: 0 }))).size;
}

/**
 * A clear error the subscription met after the promotion (its slot does not exist, a row
 * collides), or null. The old primary's connection dying is no such error: it is what every
 * failover looks like to a subscriber.
 */
async function subscriberErrors(subscriber: PgServer, from: number): Promise<string | null> {
  const text = (await readFile(subscriber.logFile, 'utf8').catch(() => '')).slice(from);
  const line = text
    .split('\n')
    .find((l) => /ERROR:.*(does not exist|duplicate key|conflict)/.test(l));
  return line === undefined ? null : line.replace(/^.*ERROR:\s*/, '');
}

/** A "no" answer's reason, without its LSNs and names (to count them by kind). */
export function reasonKey(reason: string): string {
  return reason
    .replace(/[0-9A-F]+\/[0-9A-F]+/g, 'L')
    .replace(/"[^"]*"/g, '"…"')
    .replace(/\d+/g, 'N')
    .slice(0, 120);
}
