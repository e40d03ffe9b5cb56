/**
 * "Safe to promote" while the world moves behind slotsync's back (issue: the facts changed
 * between slotsync's last look and the moment of asking). Real PostgreSQL 17 and 18, real
 * subscribers and a third-party pgoutput client (npm pg-logical-replication), slotsync as
 * the process an operator runs. Each scenario is one an operator meets:
 *
 * - the setting stops naming the standby while its stream is broken, then the primary dies
 *   and slotsync is restarted: the restarted process must remember;
 * - a client that acknowledges "last WAL byte + 1", and a native subscription, under a
 *   primary written to all the time: called ready, and never flapping;
 * - a consumer that confirms late holds what it was sent, not what it confirmed;
 * - a standby whose WAL went past the fork of the promoted one: diverged, never safe, and
 *   `slotsync candidates` never names it.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { LogicalReplicationService, PgoutputPlugin } from 'pg-logical-replication';
import { runCli } from '../helpers/cli.js';
import { prePromoteHook, Scenario, stopStreaming } from '../helpers/failover.js';
import { advancePrimarySlot, createPrimarySlot, waitFor, writeRows } from '../helpers/harness.js';
import { MAJORS } from '../support/binaries.js';
import { type Cluster, slotOf } from '../support/cluster.js';
import type { PgServer } from '../support/server.js';
import {
  countRows,
  PUBLICATION,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../support/workload.js';

/** A pgoutput consumer as a third-party CDC client runs it. */
function pgoutputClient(primary: PgServer, options: { autoAck: boolean }) {
  const service = new LogicalReplicationService(
    { connectionString: primary.url(), application_name: 'cdc-client' },
    // No periodic status either when it confirms by hand: it confirms late, or not at all.
    { acknowledge: { auto: options.autoAck, timeoutSeconds: options.autoAck ? 1 : 0 } },
  );
  const state = { inserts: 0, lastLsn: '0/0', errors: [] as string[] };
  service.on('data', (lsn: string, message: { tag?: string }) => {
    state.lastLsn = lsn;
    if (message.tag === 'insert') state.inserts++;
  });
  service.on('error', (error: Error) => state.errors.push(error.message));
  return {
    state,
    start: (slot: string) => {
      void service
        .subscribe(new PgoutputPlugin({ protoVersion: 1, publicationNames: [PUBLICATION] }), slot)
        .catch((error: Error) => state.errors.push(error.message));
    },
    /** What pg-logical-replication sends: the last LSN it got, + 1 (its own arithmetic). */
    acknowledge: () => service.acknowledge(state.lastLsn),
    stop: () => service.destroy(),
  };
}

async function confirmedOf(primary: PgServer, slot: string): Promise<bigint> {
  const [row] = await primary.sql<{ lsn: string }>(
    `SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::text AS lsn FROM pg_replication_slots WHERE slot_name = $1`,
    [slot],
  );
  return BigInt(row?.lsn ?? '0');
}

async function publishItems(c: Cluster): Promise<void> {
  await c.primary.sql(
    'CREATE TABLE IF NOT EXISTS items (id bigint PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT now())',
  );
  await c.primary.sql(`CREATE PUBLICATION ${PUBLICATION} FOR TABLE items`);
}

for (const major of MAJORS) {
  describe(`safe while the world moves, on PostgreSQL ${major}`, () => {
    const t = new Scenario(major);
    after(() => t.close());

    it('the setting stops naming a standby whose stream broke, then the primary dies: a restarted slotsync and the gate without --url remember, never "ready"', async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      // No worker: what the running service learns comes from the questions asked of it.
      const node = await t.slotsync(c, { SLOTSYNC_WORKER: 'off' });
      await waitFor('the copy safe', async () => {
        await t.post(node, '/sync');
        return (await t.get(node, `/ready?slots=${SUBSCRIPTION}`)).status === 200;
      });

      await stopStreaming(c.standby); // as a rotated replication password would
      const stalled = await t.get(node, `/ready?slots=${SUBSCRIPTION}`);
      assert.equal(stalled.status, 200, 'consumers stall behind the standby: still safe');
      await c.primary.sql(`ALTER SYSTEM SET synchronized_standby_slots = ''`);
      await c.primary.sql('SELECT pg_reload_conf()');
      const writer = new Writer(2);
      writer.start(c.primary);
      await waitFor('100 rows', async () => writer.lastCommitted >= 100);
      const written = await writer.stop();
      await waitFor(
        'the subscriber got them (past the standby)',
        async () => (await countRows(subscriber)).count === written,
      );
      const alive = await t.get(node, `/ready?slots=${SUBSCRIPTION}`);
      assert.equal(alive.status, 503, JSON.stringify(alive.body));
      assert.equal(alive.body.primary.waits_for_standby, false);
      assert.match(
        alive.body.not_ready[0].reason,
        /past the WAL this standby has received|does not name "standby_slot"/,
      );

      await c.primary.stop('immediate');
      node.p.child.kill('SIGKILL');
      await node.p.exited;
      const again = await t.restart(node);
      const restarted = await t.get(again, `/ready?slots=${SUBSCRIPTION}`);
      assert.equal(restarted.status, 503, JSON.stringify(restarted.body));
      assert.equal(restarted.body.primary.reachable, false);
      assert.equal(restarted.body.primary.waits_for_standby, false, 'remembered, not re-read');
      assert.match(
        restarted.body.not_ready[0].reason,
        /past the WAL this standby has received|the primary does not wait for this standby \(synchronized_standby_slots does not name "standby_slot"\) and it does not answer/,
      );
      const gate = await prePromoteHook(
        await t.folder('world-hooks'),
        'own',
        ['--slots', SUBSCRIPTION],
        again.env,
      );
      const own = await gate();
      assert.equal(own.code, 1, own.stderr);
    });

    it('a client that acknowledges "last WAL byte + 1" and a native subscription, the primary written to all the time: ready, and it stays ready', async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      await createPrimarySlot(c, 'cdc', { plugin: 'pgoutput' });
      const node = await t.slotsync(c);
      const writer = new Writer(10);
      writer.start(c.primary);
      const client = pgoutputClient(c.primary, { autoAck: true });
      client.start('cdc');
      try {
        let plusOne = false;
        await waitFor(
          'both slots safe under the write load',
          async () => {
            plusOne ||= (await confirmedOf(c.primary, 'cdc')) % 8n === 1n;
            return (await t.get(node, '/ready')).status === 200;
          },
          30_000,
        );
        // 10 s of questions under the load: every answer the same, and /slots agrees.
        let notReady = 0;
        let notSyncReady = 0;
        const reasons = new Set<string>();
        for (let i = 0; i < 50; i++) {
          const ready = await t.get(node, '/ready');
          if (ready.status !== 200) {
            notReady++;
            for (const n of ready.body.not_ready) reasons.add(n.reason);
          }
          const slots = await t.get(node, '/slots');
          notSyncReady += slots.body.slots.filter(
            (s: { sync_ready: boolean }) => !s.sync_ready,
          ).length;
          plusOne ||= (await confirmedOf(c.primary, 'cdc')) % 8n === 1n;
          await new Promise((resolve) => setTimeout(resolve, 200));
        }
        assert.equal(notReady, 0, `ready flapped: ${[...reasons].join('; ')}`);
        assert.equal(notSyncReady, 0, 'sync_ready in /slots flapped');
        assert.ok(plusOne, 'the client did confirm "last byte + 1" (an odd, unaligned LSN)');
        assert.ok(client.state.inserts > 0, 'the client received changes');
      } finally {
        await client.stop();
        await writer.stop();
      }
    });

    it('a consumer that confirms late holds what it was sent: with no setting and the standby’s stream stopped, it is never ready while the primary answers', async () => {
      const c = await t.cluster({}); // no synchronized_standby_slots: consumers do not wait
      await publishItems(c);
      await createPrimarySlot(c, 'late', { plugin: 'pgoutput' });
      const client = pgoutputClient(c.primary, { autoAck: false });
      client.start('late');
      const node = await t.slotsync(c);
      const writer = new Writer(20);
      try {
        writer.start(c.primary);
        await waitFor('the copy safe', async () => {
          await client.acknowledge();
          return (await t.get(node, '/ready?slots=late')).status === 200;
        });
        await writer.stop();
        await client.acknowledge();
        await c.waitForReplay();
        const confirmed = await confirmedOf(c.primary, 'late');

        await stopStreaming(c.standby);
        const before = client.state.inserts;
        writer.start(c.primary);
        await waitFor('the consumer got 100 rows the standby never gets', async () => {
          return client.state.inserts >= before + 100;
        });
        await writer.stop();
        assert.equal(await confirmedOf(c.primary, 'late'), confirmed, 'it confirmed none of them');
        for (let i = 0; i < 5; i++) {
          const answer = await t.get(node, '/ready?slots=late');
          assert.equal(answer.status, 503, JSON.stringify(answer.body));
          assert.match(
            answer.body.not_ready[0].reason,
            /had flushed WAL up to .* past what this standby has received/,
          );
        }
        const gate = await prePromoteHook(await t.folder('late-hooks'), 'late', [
          '--url',
          node.p.base,
          '--slots',
          'late',
        ]);
        assert.equal((await gate()).code, 1);
      } finally {
        await client.stop();
        await writer.stop().catch(() => undefined);
      }
    });

    it('a standby whose WAL went past the fork of the promoted one: diverged, never safe, and candidates never names it', async () => {
      const c = await t.cluster({ standbys: 2 });
      const [a, b] = c.standbys;
      assert.ok(a && b);
      await createPrimarySlot(c, 'tl', { plugin: 'test_decoding' });
      const everyNode = [c.primary, a, b].map((s) => `127.0.0.1:${s.port}`).join(',');
      const primaryUrl = c.primary
        .url('postgres', 'node-pw')
        .replace(`127.0.0.1:${c.primary.port}`, everyNode);
      const nodeA = await t.slotsync(c, {}, { primaryUrl, standby: a });
      const nodeB = await t.slotsync(c, {}, { primaryUrl, standby: b });
      await waitFor('the copy safe on A', async () => {
        await writeRows(c, 5);
        await advancePrimarySlot(c, 'tl');
        return (await t.get(nodeA, '/ready?slots=tl')).status === 200;
      });

      await stopStreaming(b); // B falls behind
      await writeRows(c, 200);
      await advancePrimarySlot(c, 'tl');
      await waitFor('A has it all', async () => {
        const [p] = await c.primary.sql<{ lsn: string }>(
          'SELECT pg_current_wal_flush_lsn()::text AS lsn',
        );
        const [s] = await a.sql<{ ok: boolean }>(
          'SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS ok',
          [p?.lsn],
        );
        return s?.ok === true;
      });
      // The primary killed, B promoted, A pointed at B: A cannot follow (it holds WAL of the
      // old timeline past the fork).
      await c.primary.stop('immediate');
      await b.promote();
      await b.sql('SELECT pg_create_physical_replication_slot($1, true)', [slotOf(a)]);
      await a.sql(
        `ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=${b.port} user=postgres dbname=postgres application_name=${a.name}'`,
      );
      await a.sql('SELECT pg_reload_conf()');

      let last: unknown;
      await waitFor(
        'A says it diverged',
        async () => {
          const answer = await t.get(nodeA, '/ready?slots=tl');
          last = answer.body;
          return answer.status === 503 && /^diverged/.test(answer.body.diverged ?? '');
        },
        30_000,
      ).catch((error: Error) => {
        throw new Error(`${error.message}: ${JSON.stringify(last)}`);
      });
      for (let i = 0; i < 5; i++) {
        assert.equal((await t.get(nodeA, '/ready?slots=tl')).status, 503, 'never safe again');
      }
      const ranked = await runCli(
        ['candidates', '--url', nodeA.p.base, '--url', nodeB.p.base, '--json'],
        {},
      );
      assert.equal(ranked.code, 1, ranked.stdout + ranked.stderr);
      const ranking = JSON.parse(ranked.stdout);
      assert.equal(ranking.best, null);
      assert.deepEqual(
        ranking.candidates.map((x: { url: string; status: string }) => `${x.url} ${x.status}`),
        [`${nodeB.p.base} primary`, `${nodeA.p.base} diverged`],
      );
    });
  });
}
