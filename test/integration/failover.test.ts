/**
 * The moment slotsync exists for: promotion of the standby, driven as an orchestrator
 * would, with a real subscription (`CREATE SUBSCRIPTION ... WITH (failover = true)`) and a
 * test_decoding consumer. Every committed row must arrive exactly once. The control case
 * (no slotsync) must lose the slot, so these tests prove something.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import request from 'supertest';
import { stagingNameOf } from '../../src/sync/names.js';
import { startProcess } from '../helpers/cli.js';
import { assertExactlyOnce, stopAndSettle } from '../helpers/failover.js';
import { consume, createPrimarySlot, slotRow, waitFor } from '../helpers/harness.js';
import { type ServiceUnderTest, startService } from '../helpers/service.js';
import { tempDir } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';
import { type Cluster, startCluster } from '../support/cluster.js';
import {
  countRows,
  pointSubscriptionAt,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../support/workload.js';

interface SlotsAnswer {
  slots: { name: string; sync_ready: boolean; lag_bytes: number | null }[];
}

function testDecodingIds(rows: { data: string }[]): number[] {
  return rows
    .map((r) => /^table public\.items: INSERT: id\[bigint\]:(\d+)/.exec(r.data)?.[1])
    .filter((id): id is string => id !== undefined)
    .map(Number);
}

for (const major of MAJORS) {
  describe(`failover on PostgreSQL ${major}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    });

    /** A primary with a real subscription (failover = true), a standby and the subscriber. */
    const subscribedCluster = async () => {
      const cluster = await startCluster({
        major,
        subscriber: true,
        synchronizedStandbySlots: true,
      });
      cleanups.push(() => cluster.stop());
      const subscriber = cluster.subscriber;
      assert.ok(subscriber);
      await setupSubscription(cluster.primary, subscriber);
      return { cluster, subscriber };
    };

    it('a subscription and a test_decoding consumer carry on after promotion, every row exactly once', async () => {
      const { cluster, subscriber } = await subscribedCluster();
      await createPrimarySlot(cluster, 'cdc', { plugin: 'test_decoding' });
      const service: ServiceUnderTest = await startService(cluster, {
        SLOTSYNC_WORKER: 'on',
        SLOTSYNC_NAPTIME_MIN_MS: '50',
        SLOTSYNC_NAPTIME_MAX_MS: '500',
      });
      cleanups.push(() => service.close());
      const api = () => request(service.app.server);

      const writer = new Writer(5);
      writer.start(cluster.primary);
      const consumed: number[] = [];
      const readCdc = async () => {
        consumed.push(...testDecodingIds(await consume(cluster.primary, 'cdc')));
      };

      // 1. Wait until the orchestrator sees every copy sync-ready.
      const started = Date.now();
      await waitFor(
        'both copies sync-ready',
        async () => {
          await readCdc();
          const answer = await api().get('/slots');
          const slots = (answer.body as SlotsAnswer).slots;
          return ['cdc', SUBSCRIPTION].every(
            (name) => slots.find((s) => s.name === name)?.sync_ready === true,
          );
        },
        60_000,
      );
      const timeToReady = Date.now() - started;

      // 2. The consumer stops at a position the copy has reached; the last sync is final.
      await readCdc();
      const lastConsumed = consumed.at(-1) ?? 0;
      const cdcConfirmed = (await slotRow(cluster.primary, 'cdc'))?.confirmed_flush_lsn;
      await cluster.waitForReplay();
      const shutdown = await api().post('/shutdown').send({ finalSync: true }).expect(200);
      assert.equal(shutdown.body.stopped, true);
      for (const name of ['cdc', SUBSCRIPTION]) {
        const view = shutdown.body.slots.find((s: { name: string }) => s.name === name);
        assert.equal(view?.sync_ready, true, `${name} is sync-ready at shutdown`);
      }
      assert.equal((await slotRow(cluster.standby, 'cdc'))?.confirmed_flush_lsn, cdcConfirmed);

      // 3. The subscriber keeps receiving from the old primary after shutdown: its copy is
      //    now behind it, which must still be exact after promotion.
      const atShutdown = writer.lastCommitted;
      await waitFor(
        'more rows after shutdown',
        async () => writer.lastCommitted >= atShutdown + 50,
      );
      const lastOld = await stopAndSettle(writer, subscriber, cluster);

      // 4. The failover: primary down hard, standby promoted, subscription pointed at it.
      const failoverStarted = Date.now();
      await cluster.primary.stop('immediate');
      await cluster.standby.promote();
      await pointSubscriptionAt(subscriber, cluster.standby);
      writer.start(cluster.standby);
      await waitFor('rows on the new primary', async () => writer.lastCommitted >= lastOld + 100);
      const total = await writer.stop();
      await assertExactlyOnce(cluster, total);
      const failoverMs = Date.now() - failoverStarted;

      // 5. The test_decoding consumer resumes on the new primary exactly after its last row.
      const after = testDecodingIds(await consume(cluster.standby, 'cdc'));
      assert.equal(
        after[0],
        lastConsumed + 1,
        'the first change after failover follows the last one consumed',
      );
      assert.deepEqual(
        after,
        Array.from({ length: total - lastConsumed }, (_, i) => lastConsumed + 1 + i),
      );
      process.stdout.write(
        `# PostgreSQL ${major}: first sync-ready after ${timeToReady} ms, failover to all rows applied ${failoverMs} ms, ${total} rows\n`,
      );
    });

    it('the standby promoted underneath slotsync (no POST /shutdown): the node is the primary, /health stays 200 and says so, /ready refuses, only staging slots are dropped', async () => {
      const cluster = await startCluster({ major, synchronizedStandbySlots: true });
      cleanups.push(() => cluster.stop());
      await createPrimarySlot(cluster, 'ready_copy', { plugin: 'test_decoding' });
      await createPrimarySlot(cluster, 'temp_copy', { plugin: 'test_decoding' });
      const service = await startService(cluster, {
        SLOTSYNC_WORKER: 'on',
        SLOTSYNC_NAPTIME_MIN_MS: '20',
        SLOTSYNC_NAPTIME_MAX_MS: '100',
      });
      cleanups.push(() => service.close());
      const api = () => request(service.app.server);
      await cluster.primary.sql('CREATE TABLE ticks (x int)');
      await waitFor('one copy sync-ready, one temporary', async () => {
        await cluster.primary.sql('INSERT INTO ticks VALUES (1)');
        await consume(cluster.primary, 'ready_copy');
        const slots = (await api().get('/slots')).body as SlotsAnswer;
        return (
          slots.slots.find((s) => s.name === 'ready_copy')?.sync_ready === true &&
          slots.slots.some((s) => s.name === 'temp_copy')
        );
      });
      await cluster.primary.stop('immediate');
      await cluster.standby.promote();
      await waitFor(
        'the worker knows the node is the primary',
        async () => service.service.worker.state === 'primary',
      );
      // A sidecar's probes never fail because of the node's role.
      const health = await api().get('/health').expect(200);
      assert.equal(health.body.role, 'primary');
      assert.equal(health.body.checks.worker.status, 'pass');
      assert.match(health.body.checks.worker.detail, /this node is the primary/);
      const ready = await api().get('/ready').expect(503);
      assert.equal(ready.body.reason, 'this node is the primary');
      assert.equal(ready.body.role, 'primary');
      const left = await cluster.standby.sql<{ slot_name: string }>(
        `SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1`,
      );
      assert.deepEqual(
        left.map((r) => r.slot_name),
        ['ready_copy'],
        'the sync-ready copy stays; the staging slot of the other is dropped, never published',
      );
      assert.match(health.body.checks.promotion.detail, new RegExp(stagingNameOf('temp_copy')));
      assert.match(health.body.checks.promotion.detail, /1 staging slot/);
      assert.match(health.body.checks.promotion.detail, /failover turned on for: ready_copy/);
      const sync = await api().post('/sync').expect(503);
      assert.equal(
        sync.body.detail,
        'replication slots can only be synchronized to a standby server',
      );
    });

    for (const mode of ['running', 'killed -9 before the promotion'] as const) {
      it(`promotion without POST /shutdown while copies are not sync-ready (slotsync ${mode}): consumers get "does not exist", never a stream with a gap`, async () => {
        const { cluster, subscriber } = await subscribedCluster();
        await createPrimarySlot(cluster, 'cdc', { plugin: 'test_decoding' });
        // Rows neither consumer has received: the subscription is disabled, and nobody
        // reads 'cdc'. Their copies are made after these rows, so they cannot be ready.
        await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} DISABLE`);
        const writer = new Writer(5);
        writer.start(cluster.primary);
        await waitFor('100 rows', async () => writer.lastCommitted >= 100);
        await writer.stop();
        await cluster.waitForReplay();
        const before = (await countRows(subscriber)).count;
        const stateDir = await tempDir('failover');
        cleanups.push(() => rm(stateDir, { recursive: true, force: true }));
        const env = {
          SLOTSYNC_PRIMARY_URL: cluster.primary.url('postgres', 'failover-pw'),
          SLOTSYNC_STANDBY_URL: cluster.standby.url('postgres', 'failover-pw'),
          SLOTSYNC_STATE_DIR: stateDir,
          SLOTSYNC_NAPTIME_MIN_MS: '20',
          SLOTSYNC_NAPTIME_MAX_MS: '100',
        };
        let p = await startProcess(env);
        cleanups.push(() => p.stop().then(() => undefined));
        await waitFor('both copies staged, neither ready', async () => {
          const slots = (await (await fetch(`${p.base}/slots`)).json()) as {
            slots: { name: string; staging_name: string | null; sync_ready: boolean }[];
          };
          return ['cdc', SUBSCRIPTION].every((name) => {
            const view = slots.slots.find((s) => s.name === name);
            return view?.staging_name === stagingNameOf(name) && view.sync_ready === false;
          });
        });
        if (mode !== 'running') {
          p.child.kill('SIGKILL');
          await p.stop();
        }
        await cluster.primary.stop('immediate');
        await cluster.standby.promote();
        if (mode === 'running') {
          await waitFor('the worker saw the promotion', async () => {
            const health = await (await fetch(`${p.base}/health`)).json();
            return /staging slot/.test(health.checks?.promotion?.detail ?? '');
          });
        }
        // Nothing under the subscribers' names on the new primary, whatever slotsync did.
        for (const name of ['cdc', SUBSCRIPTION]) {
          assert.equal(
            await slotRow(cluster.standby, name),
            undefined,
            `no "${name}" on the new primary`,
          );
        }
        await assert.rejects(
          cluster.standby.sql(`SELECT * FROM pg_logical_slot_get_changes('cdc', NULL, NULL)`),
          /replication slot "cdc" does not exist/,
        );
        await pointSubscriptionAt(subscriber, cluster.standby);
        await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} ENABLE`);
        await waitFor('the subscriber reports the missing slot', async () =>
          /replication slot "slotsync_sub" does not exist/.test(await subscriber.logTail(200)),
        );
        assert.equal((await countRows(subscriber)).count, before, 'no row arrived from a gap');
        if (mode !== 'running') {
          // The next start, with the same state folder, finds the staging slots and drops them.
          const staged = await cluster.standby.sql<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE 'slotsync\\_stage\\_%'`,
          );
          assert.equal(staged[0]?.n, 2, 'left by the killed process, under names no one asks for');
          p = await startProcess(env);
          // /health says so once the cleanup is over: wait for that, then check the slots.
          await waitFor('the restarted slotsync reports the cleanup', async () => {
            const health = await (await fetch(`${p.base}/health`)).json();
            return /2 staging slot/.test(health.checks?.promotion?.detail ?? '');
          });
          const rows = await cluster.standby.sql<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name LIKE 'slotsync\\_stage\\_%'`,
          );
          assert.equal(rows[0]?.n, 0, 'the restarted slotsync dropped them');
          const health = await (await fetch(`${p.base}/health`)).json();
          assert.equal(health.role, 'primary');
          assert.match(health.checks.worker.detail, /this node is the primary/);
        }
        await p.stop();
      });
    }

    it("after promotion slotsync turns failover on for its copies (re-arm): the new primary's standby is synced again without ALTER SUBSCRIPTION … SET (failover)", async () => {
      const { cluster, subscriber } = await subscribedCluster();
      const writer = new Writer(5);
      writer.start(cluster.primary);
      const service = await startService(cluster, {
        SLOTSYNC_WORKER: 'on',
        SLOTSYNC_NAPTIME_MIN_MS: '20',
        SLOTSYNC_NAPTIME_MAX_MS: '100',
      });
      cleanups.push(() => service.close());
      const api = () => request(service.app.server);
      await waitFor("the subscription's copy sync-ready", async () => {
        const slots = (await api().get('/slots')).body as SlotsAnswer;
        return slots.slots.find((v) => v.name === SUBSCRIPTION)?.sync_ready === true;
      });
      await writer.stop();
      await api().post('/shutdown').send({ finalSync: true }).expect(200);
      // As an orchestrator does: the subscription waits while the nodes change roles (else
      // it could reconnect to the old primary, a standby now, and decode its stale slot).
      await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} DISABLE`);
      const failoverOf = async (server: Cluster['primary']) =>
        (
          await server.sql<{ failover: boolean }>(
            'SELECT failover FROM pg_replication_slots WHERE slot_name = $1',
            [SUBSCRIPTION],
          )
        )[0]?.failover;
      assert.equal(await failoverOf(cluster.standby), false, 'a copy made on a standby');
      await cluster.switchover({
        beforeRejoin: async () => {
          await waitFor(
            'the copy re-armed on the new primary',
            async () => (await failoverOf(cluster.standby)) === true,
          );
        },
      });
      const health = (await api().get('/health')).body;
      assert.match(
        health.checks.promotion.detail,
        new RegExp(`failover turned on for: ${SUBSCRIPTION}`),
      );
      assert.match(
        await service.service.metrics.registry.getSingleMetricAsString('slotsync_rearmed_total'),
        / 1$/m,
      );
      await service.close();

      // The old primary is the standby now and still holds its own stale slot of the same
      // name; the subscription follows the new primary (connection only), and a new slotsync
      // deployment with SLOTSYNC_REPLACE_STALE=on replaces the stale slot and copies the
      // re-armed one: it is a failover slot again.
      await pointSubscriptionAt(subscriber, cluster.primary);
      await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} ENABLE`);
      const next = await startService(cluster, { SLOTSYNC_REPLACE_STALE: 'on' });
      cleanups.push(() => next.close());
      const replaced = await request(next.app.server).post('/sync').expect(200);
      assert.equal(
        replaced.body.slots.find((r: { name: string }) => r.name === SUBSCRIPTION)?.action,
        'replaced',
      );
      await request(next.app.server).post('/sync').expect(200);
      const slots = (await request(next.app.server).get('/slots')).body as {
        slots: { name: string; state: string }[];
      };
      const view = slots.slots.find((v) => v.name === SUBSCRIPTION);
      assert.ok(view, "the subscription's slot is a failover slot of the new primary");
      assert.notEqual(view.state, 'absent', 'and slotsync made its copy on the new standby');

      // A second failover, onto the old primary: the subscription, never altered beyond its
      // connection, carries on from the copy slotsync made there. Every row exactly once.
      writer.start(cluster.primary);
      const nextApi = () => request(next.app.server);
      await waitFor(
        'the copy on the rejoined standby sync-ready',
        async () =>
          (await nextApi().post('/sync').send({ waitReady: 1_000 })).body.readiness?.ready,
        60_000,
      );
      await writer.stop();
      await nextApi().post('/shutdown').send({ finalSync: true }).expect(200);
      await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} DISABLE`);
      await cluster.waitForReplay();
      await cluster.primary.stop('fast');
      await cluster.standby.promote();
      await pointSubscriptionAt(subscriber, cluster.standby);
      await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} ENABLE`);
      writer.start(cluster.standby);
      const target = writer.lastCommitted + 50;
      await waitFor(
        '50 rows on the second new primary',
        async () => writer.lastCommitted >= target,
      );
      const last = await writer.stop();
      await assertExactlyOnce(cluster, last);
    });

    it('control: without slotsync the promoted standby has no slot and the subscription stops', async () => {
      const { cluster, subscriber } = await subscribedCluster();
      const writer = new Writer(5);
      writer.start(cluster.primary);
      await waitFor('some rows', async () => writer.lastCommitted >= 50);
      const lastOld = await stopAndSettle(writer, subscriber, cluster);
      await cluster.primary.stop('immediate');
      await cluster.standby.promote();
      assert.equal(await slotRow(cluster.standby, SUBSCRIPTION), undefined, 'the slot is lost');
      await pointSubscriptionAt(subscriber, cluster.standby);
      writer.start(cluster.standby);
      await waitFor('the subscriber reports the missing slot', async () =>
        /replication slot "slotsync_sub" does not exist/.test(await subscriber.logTail(200)),
      ).catch(async (error) => {
        throw new Error(`${error.message}\n${await subscriber.logTail(60)}`);
      });
      await writer.stop();
      assert.equal(
        (await countRows(subscriber)).count,
        lastOld,
        'no row written after promotion arrived',
      );
    });
  });
}
