/**
 * The moment slotsync exists for (issue "The moment of truth"): the primary is dead or
 * unreachable, and an orchestrator asks whether promoting this standby keeps every logical
 * consumer whole. Real PostgreSQL 17 and 18, real subscriptions, slotsync as the process an
 * operator runs; every path ends with the subscriber holding every change after its own
 * position exactly once, or a clear "does not exist" — never a gap.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import request from 'supertest';
import {
  assertExactlyOnce,
  failoverOf,
  prePromoteHook,
  Scenario,
  stopAndSettle,
  stopStreaming,
} from '../helpers/failover.js';
import {
  advancePrimarySlot,
  createPrimarySlot,
  replicationCommandOn,
  slotRow,
  waitFor,
  writeRows,
} from '../helpers/harness.js';
import { startService } from '../helpers/service.js';
import { MAJORS } from '../support/binaries.js';
import type { Cluster } from '../support/cluster.js';
import {
  countRows,
  pointSubscriptionAt,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../support/workload.js';

for (const major of MAJORS) {
  describe(`the moment of truth on PostgreSQL ${major}`, () => {
    const t = new Scenario(major);
    after(() => t.close());

    it('a consumer past the standby’s WAL is never called ready: primary alive, primary killed, and POST /shutdown drops its copy', async () => {
      const c = await t.cluster({}); // no synchronized_standby_slots: consumers do not wait
      await createPrimarySlot(c, 'ahead', { plugin: 'test_decoding' });
      const node = await t.slotsync(c);
      await waitFor('the copy sync-ready', async () => {
        await writeRows(c, 5);
        await advancePrimarySlot(c, 'ahead');
        return (await t.get(node, '/ready')).status === 200;
      });
      const dir = await t.folder('truth-hooks');
      const gate = await prePromoteHook(dir, 'ahead', ['--url', node.p.base]);
      assert.equal((await gate()).code, 0, 'in step: ready');

      await stopStreaming(c.standby);
      await writeRows(c, 100);
      await advancePrimarySlot(c, 'ahead'); // the consumer confirms WAL the standby never got
      const alive = await t.get(node, '/ready');
      assert.equal(alive.status, 503);
      assert.equal(alive.body.slots[0].consumer_ahead, true);
      assert.match(alive.body.not_ready[0].reason, /past the WAL this standby has received/);
      const refused = await gate();
      assert.equal(refused.code, 1);
      assert.match(refused.stderr, /not ready: ahead: the consumer of "ahead" confirmed/);

      await c.primary.stop('immediate');
      const dead = await t.get(node, '/ready');
      assert.equal(dead.status, 503, JSON.stringify(dead.body));
      assert.equal(dead.body.primary.reachable, false);
      assert.equal((await gate()).code, 1, 'still refused with the primary gone');
      const own = await prePromoteHook(dir, 'ahead-own', [], node.env);
      assert.equal((await own()).code, 1, 'and by a gate that reads the standby itself');

      const shutdown = await fetch(`${node.p.base}/shutdown`, { method: 'POST' });
      const answer = await shutdown.json();
      assert.equal(shutdown.status, 200);
      assert.deepEqual(
        answer.fenced.map((f: { name: string }) => f.name),
        ['ahead'],
        'dropped: after promotion its consumer would skip what the new primary writes',
      );
      assert.equal(await slotRow(c.standby, 'ahead'), undefined);
      await c.standby.promote();
      await assert.rejects(
        c.standby.sql(`SELECT * FROM pg_logical_slot_get_changes('ahead', NULL, NULL)`),
        /replication slot "ahead" does not exist/,
      );
    });

    it('after the primary died, a copy moved on the standby: the gate names it, POST /shutdown drops it, and the subscriber gets "does not exist", never a gap', async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      // The worker off: POST /shutdown is what fences here.
      const node = await t.slotsync(c, { SLOTSYNC_WORKER: 'off' });
      const writer = new Writer(5);
      writer.start(c.primary);
      await waitFor('the copy safe', async () => {
        await fetch(`${node.p.base}/sync`, { method: 'POST' });
        return (await t.get(node, `/ready?slots=${SUBSCRIPTION}`)).status === 200;
      });
      const received = await writer.stop();
      await waitFor(
        'the subscriber caught up',
        async () => (await countRows(subscriber)).count === received,
      );
      await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} DISABLE`);
      writer.start(c.primary); // 50 rows the subscriber does not receive
      await waitFor('50 more rows', async () => writer.lastCommitted >= received + 50);
      await writer.stop();
      await c.waitForReplay();
      await fetch(`${node.p.base}/sync`, { method: 'POST' });
      await c.primary.stop('immediate');

      // Someone with REPLICATION moves the published copy past what its subscriber has.
      await c.standby.sql(`SELECT pg_replication_slot_advance($1, pg_last_wal_replay_lsn())`, [
        SUBSCRIPTION,
      ]);
      const dir = await t.folder('truth-hooks');
      const gate = await prePromoteHook(dir, 'moved', ['--url', node.p.base]);
      const refused = await gate();
      assert.equal(refused.code, 1);
      assert.match(
        refused.stderr,
        new RegExp(`not ready: ${SUBSCRIPTION}: .*moved on the standby by someone else`),
      );
      const shutdown = await fetch(`${node.p.base}/shutdown`, { method: 'POST' });
      const answer = await shutdown.json();
      assert.equal(shutdown.status, 200);
      assert.match(
        answer.fenced.find((f: { name: string }) => f.name === SUBSCRIPTION)?.reason ?? '',
        /moved on the standby by someone else/,
      );
      assert.equal(
        answer.slots.find((v: { name: string }) => v.name === SUBSCRIPTION)?.sync_ready ?? false,
        false,
      );
      assert.equal(await slotRow(c.standby, SUBSCRIPTION), undefined);

      await c.standby.promote();
      await pointSubscriptionAt(subscriber, c.standby);
      await subscriber.sql(`ALTER SUBSCRIPTION ${SUBSCRIPTION} ENABLE`);
      await waitFor('the subscriber reports the missing slot', async () =>
        new RegExp(`replication slot "${SUBSCRIPTION}" does not exist`).test(
          await subscriber.logTail(200),
        ),
      );
      assert.equal((await countRows(subscriber)).count, received, 'no row from a gap');
    });

    it('the worker napping, the primary alive: a copy moved on the standby is fenced within a change poll, long before the next cycle, then staged afresh', async () => {
      const c = await t.cluster({ synchronizedStandbySlots: true });
      await createPrimarySlot(c, 'moved', { plugin: 'test_decoding' });
      // Long naptimes: only the check between cycles can see it this fast.
      const node = await t.slotsync(c, {
        SLOTSYNC_NAPTIME_MIN_MS: '30000',
        SLOTSYNC_NAPTIME_MAX_MS: '30000',
      });
      await waitFor('the copy published', async () => {
        await writeRows(c, 5);
        await advancePrimarySlot(c, 'moved');
        await c.waitForReplay();
        await fetch(`${node.p.base}/sync`, { method: 'POST' });
        return (await t.get(node, '/ready?slots=moved')).status === 200;
      });
      // A change on the primary too (behind the move): the worker, woken by it, waits for
      // its cadence (30 s here) yet goes on checking the standby meanwhile.
      await advancePrimarySlot(c, 'moved');
      await writeRows(c, 20);
      await c.waitForReplay();
      const moved = Date.now();
      await c.standby.sql(`SELECT pg_replication_slot_advance('moved', pg_last_wal_replay_lsn())`);
      assert.equal(
        (await t.get(node, '/ready?slots=moved')).status,
        503,
        'not safe from that moment',
      );
      await waitFor(
        'the copy dropped',
        async () => (await slotRow(c.standby, 'moved')) === undefined,
        20_000,
      );
      // Measured in tens of milliseconds; the bound leaves room for a loaded machine and
      // still lies far below the 30 s naptime, which is what a missing check would take.
      const fencedMs = Date.now() - moved;
      assert.ok(fencedMs < 10_000, `fenced long before the next cycle (${fencedMs} ms)`);
      // The fence records what it did once its registry write after the drop is done: the
      // slot can be seen gone a moment before /health says why.
      let detail = '';
      await waitFor(
        '/health says why the copy was dropped',
        async () => {
          detail = (await t.get(node, '/health')).body.checks.fencing?.detail ?? '';
          return detail !== '';
        },
        20_000,
      );
      assert.match(detail, /moved: .*moved on the standby by someone else/);
      const metrics = await (await fetch(`${node.p.base}/metrics`)).text();
      assert.match(metrics, /^slotsync_fenced_total 1$/m);
      process.stdout.write(
        `# PostgreSQL ${major}: a moved copy fenced ${fencedMs} ms after the move\n`,
      );
    });

    it('unplanned failover with a subscription reconnecting at once: failover on within a change poll; the other standby syncs from the new primary, and a second failover onto it loses nothing', async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true, standbys: 2 });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      const [b, cc] = c.standbys as [Cluster['standby'], Cluster['standby']];
      const nodeB = await t.slotsync(c);
      // C's slotsync follows the primary it is given; its env file is what an operator edits.
      const envDir = await t.folder('truth-env');
      const envFile = `${envDir}/slotsync.env`;
      const { writeFile } = await import('node:fs/promises');
      await writeFile(envFile, `SLOTSYNC_PRIMARY_URL=${c.primary.url('postgres', 'truth-pw')}\n`);
      const nodeC = await t.slotsync(c, { SLOTSYNC_ENV_FILE: envFile }, { standby: cc });
      const writer = new Writer(5);
      writer.start(c.primary);
      await t.waitSafe(nodeB, SUBSCRIPTION);
      await t.waitSafe(nodeC, SUBSCRIPTION);
      const beforeKill = await stopAndSettle(writer, subscriber, c);

      // The primary dies; B is promoted with no POST /shutdown; the subscription follows at once.
      await c.primary.stop('immediate');
      await b.promote();
      const promoted = Date.now();
      await pointSubscriptionAt(subscriber, b);
      writer.start(b);
      await waitFor(
        "failover on for the subscription's slot on the new primary",
        async () => (await failoverOf(b, SUBSCRIPTION)) === true,
        30_000,
      );
      // Measured at 11-230 ms; the bound leaves room for a loaded machine and still lies far
      // below the naptime a missing promotion check would wait (30 s at most).
      const rearmMs = Date.now() - promoted;
      assert.ok(
        rearmMs <= 10_000,
        `re-armed within a change poll of the promotion (${rearmMs} ms)`,
      );
      // The re-arm is recorded (registry, then /health) right after the alter lands.
      await waitFor('/health says it re-armed the copy', async () =>
        new RegExp(`failover turned on for: ${SUBSCRIPTION}`).test(
          (await t.get(nodeB, '/health')).body.checks.promotion?.detail ?? '',
        ),
      );
      await waitFor(
        'the subscription streams from the new primary',
        async () => (await countRows(subscriber)).count > beforeKill,
      );

      // C follows B (the cluster re-points it), and so does its slotsync (SIGHUP).
      await c.failover(b);
      await writeFile(envFile, `SLOTSYNC_PRIMARY_URL=${b.url('postgres', 'truth-pw')}\n`);
      nodeC.p.child.kill('SIGHUP');
      await t.waitSafe(nodeC, SUBSCRIPTION);

      // A second failover, onto C: every row exactly once.
      const beforeSecond = await writer.stop();
      await waitFor(
        'the subscriber caught up again',
        async () => (await countRows(subscriber)).count === beforeSecond,
      );
      await c.waitForReplay();
      await b.stop('immediate');
      await cc.promote();
      await pointSubscriptionAt(subscriber, cc);
      writer.start(cc);
      await waitFor(
        'rows on the second new primary',
        async () => writer.lastCommitted >= beforeSecond + 50,
      );
      await assertExactlyOnce(c, await writer.stop());
      process.stdout.write(
        `# PostgreSQL ${major}: failover re-armed ${rearmMs} ms after promotion, subscription streaming\n`,
      );
    });

    it("a user's slot made again after promotion with failover = false is never re-armed, and a copy is re-armed once", async () => {
      const c = await t.cluster({ synchronizedStandbySlots: true });
      await createPrimarySlot(c, 'remade', { plugin: 'test_decoding' });
      await createPrimarySlot(c, 'once', { plugin: 'test_decoding' });
      const node = await t.slotsync(c);
      await waitFor('both copies published', async () => {
        await writeRows(c, 5);
        await advancePrimarySlot(c, 'remade');
        await advancePrimarySlot(c, 'once');
        return (await t.get(node, '/ready')).status === 200;
      });
      // slotsync dies; the primary dies; the standby is promoted; the owner of "remade"
      // drops it and makes it again, without failover.
      node.p.child.kill('SIGKILL');
      await node.p.exited;
      await c.primary.stop('immediate');
      await c.standby.promote();
      await c.standby.sql(`SELECT pg_drop_replication_slot('remade')`);
      await c.standby.sql(
        `SELECT pg_create_logical_replication_slot('remade', 'test_decoding', false, false, false)`,
      );
      const again = (await t.restart(node)).p;
      await waitFor('the restarted slotsync handled the promotion', async () => {
        const health = await (await fetch(`${again.base}/health`)).json();
        return /failover turned on for: once/.test(health.checks.promotion?.detail ?? '');
      });
      const health = await (await fetch(`${again.base}/health`)).json();
      assert.match(
        health.checks.promotion.detail,
        /not re-armed: remade \(.*made again after the promotion/,
      );
      assert.equal(await failoverOf(c.standby, 'remade'), false, "the owner's slot is left alone");
      assert.equal(await failoverOf(c.standby, 'once'), true);
      // Its owner turns failover off again: a later start never turns it back on.
      await replicationCommandOn(c.standby, 'ALTER_REPLICATION_SLOT once ( FAILOVER false )');
      await again.stop();
      const third = (await t.restart(node)).p;
      await waitFor('the third start saw the node is the primary', async () => {
        const body = await (await fetch(`${third.base}/health`)).json();
        return body.role === 'primary' && /primary/.test(body.checks.worker?.detail ?? '');
      });
      assert.equal(await failoverOf(c.standby, 'once'), false, 're-armed once, never again');
      assert.equal(await failoverOf(c.standby, 'remade'), false);
    });

    it('a reload to a new state folder or URL: not ready until its first cycle; a selection that matches nothing is a /health warning', async () => {
      const c = await t.cluster({ synchronizedStandbySlots: true });
      await createPrimarySlot(c, 'reload_a', { plugin: 'test_decoding' });
      const s = await startService(c);
      t.defer(() => s.close());
      const api = () => request(s.app.server);
      await waitFor('ready', async () => {
        await writeRows(c, 5);
        await advancePrimarySlot(c, 'reload_a');
        await c.waitForReplay();
        await api().post('/sync').expect(200);
        return (await api().get('/ready')).status === 200;
      });
      const metric = async () =>
        (await api().get('/metrics')).text.match(/^slotsync_ready (\d)$/m)?.[1];
      // Another URL for the same primary: not ready until a cycle of the new engine.
      await s.service.reload({
        ...s.service.config,
        primaryUrl: c.primary.url('postgres', 'another-pw'),
      });
      const reloaded = await api().get('/ready').expect(503);
      assert.equal(
        reloaded.body.reason,
        'no cycle since the reload',
        JSON.stringify(reloaded.body),
      );
      assert.equal(await metric(), '0', 'the metric says the same');
      await api().post('/sync').expect(200);
      await api().get('/ready').expect(200);
      assert.equal(await metric(), '1');
      // Another state folder: it owns nothing here (and may not bind while the old one's
      // marker is on the standby): never vacuously ready.
      const old = s.service.config;
      await s.service.reload({ ...old, stateDir: await t.folder('truth-reload') });
      const moved = await api().get('/ready').expect(503);
      assert.equal(moved.body.reason, 'no cycle since the reload');
      assert.deepEqual(moved.body.required, ['reload_a']);
      const refused = await api().post('/sync').expect(503);
      assert.match(refused.body.detail, /SLOTSYNC_STATE_DIR/);
      await api().get('/ready').expect(503);
      await s.service.reload(old);
      await api().post('/sync').expect(200);
      await api().get('/ready').expect(200);
      await s.service.reload({ ...s.service.config, slotsInclude: ['nothing_*'] });
      await api().post('/sync').expect(200);
      const health = await api().get('/health');
      assert.match(
        health.body.checks.selection?.detail ?? '',
        /leave out every failover slot of the primary \(reload_a\)/,
      );
    });

    it('SLOTSYNC_REPLACE_STALE replaces only what is provably stale: a subscription still pointed at the old primary keeps its slot; a reload turning the policy off stops the drops', async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      await createPrimarySlot(c, 'cdc_stale', { plugin: 'test_decoding' });
      const onB = await startService(c, { SLOTSYNC_WORKER: 'on' });
      t.defer(() => onB.close());
      const writer = new Writer(5);
      writer.start(c.primary);
      await waitFor('both copies safe', async () => {
        await advancePrimarySlot(c, 'cdc_stale');
        return (await request(onB.app.server).get('/ready')).status === 200;
      });
      await writer.stop();
      await request(onB.app.server).post('/shutdown').send({ finalSync: true }).expect(200);
      // A switchover; the subscription is left pointing at the old primary, which rejoins
      // as a standby still holding its own slots of the same names.
      const [oldPrimary, newPrimary] = [c.primary, c.standby];
      await c.switchover({
        beforeRejoin: () =>
          waitFor(
            'copies re-armed',
            async () => (await failoverOf(newPrimary, SUBSCRIPTION)) === true,
          ),
      });
      assert.equal(c.standby, oldPrimary);
      await onB.close();
      await waitFor('the subscription streams from the old primary, a standby now', async () => {
        const [row] = await oldPrimary.sql<{ active: boolean }>(
          'SELECT active FROM pg_replication_slots WHERE slot_name = $1',
          [SUBSCRIPTION],
        );
        return row?.active === true;
      });

      const onA = await startService(c, { SLOTSYNC_REPLACE_STALE: 'on' });
      t.defer(() => onA.close());
      // Turned off before any cycle: the policy applies at once, no restart needed.
      await onA.service.reload({ ...onA.service.config, replaceStale: false });
      const off = (await request(onA.app.server).post('/sync').expect(200)).body;
      const action = (name: string, report: { slots: { name: string; action: string }[] }) =>
        report.slots.find((r) => r.name === name)?.action;
      assert.equal(action('cdc_stale', off), 'conflict');
      assert.equal(action(SUBSCRIPTION, off), 'conflict');
      assert.ok(await slotRow(oldPrimary, 'cdc_stale'), 'not dropped while the policy is off');

      await onA.service.reload({ ...onA.service.config, replaceStale: true });
      const on = (await request(onA.app.server).post('/sync').expect(200)).body;
      assert.equal(action('cdc_stale', on), 'replaced', JSON.stringify(on.slots));
      assert.equal(
        action(SUBSCRIPTION, on),
        'conflict',
        'the slot a subscription uses is never replaced',
      );
      for (let i = 0; i < 3; i++) await request(onA.app.server).post('/sync').expect(200);
      assert.ok(await slotRow(oldPrimary, SUBSCRIPTION), "the subscription's slot survives");
      const health = (await request(onA.app.server).get('/health')).body;
      assert.match(health.checks.conflicts.detail, new RegExp(SUBSCRIPTION));
    });
  });
}
