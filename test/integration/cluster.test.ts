/**
 * Every node of an HA cluster (issue 19): a primary and two standbys, one slotsync beside
 * each node started with the same environment but the local URL (SLOTSYNC_PRIMARY_URL lists
 * every node) and never restarted, a real subscription with failover = true receiving
 * writes all the time. Three failovers in a row: the primary killed (kill -9 of every
 * process), `slotsync candidates` names the node to promote, it is promoted, the other
 * standby follows it, the old primary rejoins as a standby by a fresh copy. At the end the
 * subscriber has every row of the last primary exactly once.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { CLI } from '../helpers/cli.js';
import { failoverOf, type Node, Scenario } from '../helpers/failover.js';
import { advancePrimarySlot, replicationCommandOn, waitFor } from '../helpers/harness.js';
import { MAJORS } from '../support/binaries.js';
import type { PgServer } from '../support/server.js';
import {
  countRows,
  pointSubscriptionAt,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../support/workload.js';

const run = promisify(execFile);

/** `slotsync candidates --json` over every node's slotsync. */
async function candidates(
  nodes: Node[],
): Promise<{ code: number; best: string | null; text: string }> {
  const args = ['--import', 'tsx', CLI, 'candidates', '--json'];
  for (const node of nodes) args.push('--url', node.p.base);
  const result = await run(process.execPath, args, { env: { PATH: process.env.PATH ?? '' } }).then(
    (r) => ({ code: 0, stdout: r.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
  );
  const parsed = JSON.parse(result.stdout) as { best: string | null };
  return { code: result.code, best: parsed.best, text: result.stdout };
}

for (const major of MAJORS) {
  describe(`three nodes, one slotsync each, on PostgreSQL ${major}`, () => {
    const t = new Scenario(major);
    after(() => t.close());

    it('the first cycle on a new primary keeps the copies when the standby did not change (the move cleared the cache)', async () => {
      const c = await t.cluster({ standbys: 2 });
      const [next, standby] = c.standbys as [PgServer, PgServer];
      const everyNode = `postgres://postgres:cluster-pw@${[c.primary, next, standby].map((s) => `127.0.0.1:${s.port}`).join(',')}/postgres`;
      await c.primary.sql(
        `SELECT pg_create_logical_replication_slot('kept_copy', 'pgoutput', false, false, true)`,
      );
      const node = await t.slotsync(
        c,
        { SLOTSYNC_WORKER: 'off' },
        { primaryUrl: everyNode, standby },
      );
      const copyOf = async () => {
        const slots = (await t.get(node, '/slots')).body.slots as { name: string; state: string }[];
        return slots.find((slot) => slot.name === 'kept_copy');
      };
      await waitFor(
        'the copy is sync-ready',
        async () => {
          // The remote moves past the copy's consistent point (nothing consumes it).
          await c.primary.sql('SELECT pg_log_standby_snapshot()');
          await advancePrimarySlot(c, 'kept_copy');
          return (
            (await t.post(node, '/sync')).status === 200 && (await copyOf())?.state === 'sync_ready'
          );
        },
        30_000,
      );
      assert.equal((await t.post(node, '/sync')).status, 200, 'a cycle that finds nothing changed');
      // The new primary has the slot, not yet a failover slot (its slotsync has not re-armed it).
      await c.failover(next);
      await next.sql(
        `SELECT pg_create_logical_replication_slot('kept_copy', 'pgoutput', false, false, false)`,
      );
      // The first cycle follows the new primary (found by SLOTSYNC_PRIMARY_URL's hosts), with
      // the standby's slot digest unchanged since the last cycle.
      const moved = await t.post(node, '/sync');
      assert.equal(moved.status, 200, JSON.stringify(moved.body));
      const kept = await copyOf();
      assert.equal(kept?.state, 'sync_ready', `the copy stays slotsync's: ${JSON.stringify(kept)}`);
      const [local] = await standby.sql<{ synced: boolean }>(
        `SELECT synced FROM pg_replication_slots WHERE slot_name = 'kept_copy'`,
      );
      assert.equal(local?.synced, false, 'the copy is still on the standby');
      // Failover on at the new primary: the copy is kept in step, never made again.
      await replicationCommandOn(next, 'ALTER_REPLICATION_SLOT kept_copy ( FAILOVER true )');
      const after = await t.post(node, '/sync');
      assert.equal(after.status, 200, JSON.stringify(after.body));
      assert.equal((await copyOf())?.state, 'sync_ready');
      const stages = await standby.sql(
        `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'slotsync_stage_%'`,
      );
      assert.deepEqual(stages, [], 'no copy staged afresh beside the kept one');
    });

    for (const engine of ['sql', 'builtin'] as const) {
      it(`three failovers in a row with a subscription written to all the time (SLOTSYNC_ENGINE=${engine}): candidates name the node, nothing restarts, every row exactly once`, async () => {
        // PostgreSQL's worker makes a copy persistent once the remote passed it, and starts
        // again about a minute after a failed start: longer on busy cores.
        const safeMs = engine === 'builtin' ? 120_000 : 60_000;
        const c = await t.cluster({
          subscriber: true,
          synchronizedStandbySlots: true,
          standbys: 2,
          // builtin: PostgreSQL's worker on every standby, a rejoining node included.
          standbySettings: engine === 'builtin' ? { sync_replication_slots: 'on' } : {},
        });
        const subscriber = c.subscriber;
        assert.ok(subscriber);
        await setupSubscription(c.primary, subscriber);
        const servers = [c.primary, ...c.standbys];
        const everyNode = `postgres://postgres:cluster-pw@${servers.map((s) => `127.0.0.1:${s.port}`).join(',')}/postgres`;
        // One environment for every node; only the local URL differs.
        const nodeOf = new Map<PgServer, Node>();
        for (const server of servers) {
          nodeOf.set(
            server,
            await t.slotsync(
              c,
              { SLOTSYNC_REPLACE_STALE: 'on', SLOTSYNC_ENGINE: engine },
              { primaryUrl: everyNode, standby: server },
            ),
          );
        }
        const nodes = [...nodeOf.values()];
        const writer = new Writer(5);
        writer.start(c.primary);
        const health = await t.get(nodeOf.get(c.primary) as Node, '/health');
        assert.equal(health.status, 200, 'the primary’s slotsync is healthy');
        assert.equal(health.body.role, 'primary');

        for (let round = 1; round <= 3; round++) {
          // Every standby's copy safe, the subscription streaming.
          for (const standby of c.standbys) {
            await t.waitSafe(nodeOf.get(standby) as Node, SUBSCRIPTION, safeMs);
          }
          const written = writer.lastCommitted;
          await waitFor(
            'the subscriber receives',
            async () => (await countRows(subscriber)).count > written - 20,
            30_000,
          );

          const old = c.primary;
          await old.crash(); // kill -9 of every process of the primary, the writer still writing
          await writer.stop();
          const ranked = await candidates(nodes);
          assert.equal(ranked.code, 0, ranked.text);
          const best = [...nodeOf.entries()].find(([, node]) => node.p.base === ranked.best)?.[0];
          assert.ok(best && c.standbys.includes(best), `a standby is named: ${ranked.text}`);
          await c.failover(best);
          await pointSubscriptionAt(subscriber, best);
          await writer.resumeOn(best);
          if (engine === 'sql') {
            await waitFor(
              'the promoted node’s slotsync re-armed the copy',
              async () =>
                (
                  await t.get(nodeOf.get(best) as Node, '/health')
                ).body.checks.promotion?.detail?.includes(SUBSCRIPTION) === true,
              60_000,
            );
          } else {
            assert.equal(
              await failoverOf(best, SUBSCRIPTION),
              true,
              "PostgreSQL's synced slot keeps failover through promotion: nothing to re-arm",
            );
          }
          await c.rejoin(old);
          process.stdout.write(
            `# PostgreSQL ${major}: failover ${round} onto ${best.name}, ${writer.lastCommitted} rows so far\n`,
          );
        }

        try {
          for (const standby of c.standbys) {
            await t.waitSafe(nodeOf.get(standby) as Node, SUBSCRIPTION, safeMs);
          }
        } catch (error) {
          if (process.env.SLOTSYNC_TEST_VERBOSE) {
            for (const [server, node] of nodeOf) {
              process.stdout.write(
                `# ${server.name} ${node.p.base} slots ${JSON.stringify((await t.get(node, '/slots')).body)}\n`,
              );
              process.stdout.write(
                `# ${server.name} log ${node.p
                  .output()
                  .split('\n')
                  .filter((l) => /warn|error|WARN|ERROR|"level":[45]/.test(l))
                  .slice(-15)
                  .join('\n# ')}\n`,
              );
            }
            process.stdout.write(
              `# primary ${c.primary.name} ${JSON.stringify(await c.primary.sql('SELECT slot_name, slot_type, active, confirmed_flush_lsn::text, restart_lsn::text, failover FROM pg_replication_slots'))}\n`,
            );
            process.stdout.write(
              `# repl ${JSON.stringify(await c.primary.sql('SELECT application_name, state, flush_lsn::text FROM pg_stat_replication'))} sss ${JSON.stringify(await c.primary.sql('SHOW synchronized_standby_slots'))} writer ${writer.lastCommitted} errors ${writer.errors}\n`,
            );
          }
          throw error;
        }
        const total = await writer.stop();
        await waitFor(
          'the subscriber has every row of the last primary',
          async () => (await countRows(subscriber)).count >= total,
          60_000,
        );
        const [rows] = await subscriber.sql<{ n: number; ids: number; max: number }>(
          'SELECT count(*)::int AS n, count(DISTINCT id)::int AS ids, max(id)::int AS max FROM items',
        );
        const [primaryRows] = await c.primary.sql<{ n: number; max: number }>(
          'SELECT count(*)::int AS n, max(id)::int AS max FROM items',
        );
        assert.deepEqual(rows, { n: primaryRows?.n, ids: primaryRows?.n, max: primaryRows?.max });
        assert.equal(primaryRows?.n, primaryRows?.max, 'ids 1..n, none missing on the primary');
      });
    }
  });
}
