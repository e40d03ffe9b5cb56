/**
 * The primary gone for a while (issue "The moment of truth", item 2): killed with
 * pg_ctl stop -m immediate, or unreachable behind a proxy that stops forwarding while it
 * still runs. Promotion readiness is answered from the standby alone: a Patroni-style
 * pre_promote hook calling `slotsync gate` passes at once and again two minutes later (the
 * facts cannot have changed: the copies are unmoved and the primary waited for this
 * standby), and the promotion then gives a real subscription every row exactly once.
 * The four cases (two faults, PostgreSQL 17 and 18) wait side by side.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { assertExactlyOnce, prePromoteHook, Scenario, stopAndSettle } from '../helpers/failover.js';
import { waitFor } from '../helpers/harness.js';
import { TcpProxy } from '../helpers/proxy.js';
import { MAJORS } from '../support/binaries.js';
import { slotOf } from '../support/cluster.js';
import {
  pointSubscriptionAt,
  SUBSCRIPTION,
  setupSubscription,
  Writer,
} from '../support/workload.js';

/** How long after the primary died the gate must still pass (a slow failover decision). */
const LATER_MS = Number(process.env.SLOTSYNC_TEST_LATER_MS ?? 120_000);

describe('the primary gone for a while', { concurrency: true }, () => {
  for (const major of MAJORS) {
    const t = new Scenario(major);
    after(() => t.close());

    for (const fault of [
      'killed (pg_ctl stop -m immediate)',
      'unreachable (a proxy stops forwarding)',
    ] as const) {
      it(`PostgreSQL ${major}: the primary ${fault}: a pre_promote gate passes at once and ${LATER_MS / 1000} s later; after promotion the subscription has every row exactly once`, async () => {
        const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
        const subscriber = c.subscriber;
        assert.ok(subscriber);
        await setupSubscription(c.primary, subscriber);
        const killed = fault.startsWith('killed');
        // Unreachable: slotsync and the standby's WAL stream both cross the proxy, as they
        // would cross a network that partitions the primary away.
        const proxy = killed ? undefined : await TcpProxy.start('127.0.0.1', c.primary.port);
        if (proxy) {
          t.defer(() => proxy.close());
          await c.standby.sql(
            `ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=${proxy.port} user=postgres dbname=postgres application_name=standby'`,
          );
          await c.standby.sql('SELECT pg_reload_conf()');
          await waitFor(
            'the standby streams through the proxy',
            async () => proxy.connections >= 1,
          );
        }
        const primaryUrl = proxy
          ? `postgres://postgres:truth-pw@127.0.0.1:${proxy.port}/postgres`
          : c.primary.url('postgres', 'truth-pw');
        // Default naptimes: the last cycle is old by the time a slow failover is decided.
        const node = await t.slotsync(c, { SLOTSYNC_NAPTIME_MIN_MS: '200' }, { primaryUrl });
        const writer = new Writer(5);
        writer.start(c.primary);
        await t.waitSafe(node, SUBSCRIPTION);
        const last = await stopAndSettle(writer, subscriber, c);

        if (proxy) proxy.stall();
        else await c.primary.stop('immediate');
        const dir = await t.folder('truth-hooks');
        const viaService = await prePromoteHook(dir, 'pre_promote', [
          '--wait',
          '10',
          '--url',
          node.p.base,
        ]);
        const standalone = await prePromoteHook(dir, 'validate', ['--wait', '10'], node.env);
        const now = await viaService();
        assert.equal(now.code, 0, now.stderr);
        assert.match(
          now.stdout,
          new RegExp(`${SUBSCRIPTION}: safe: .*synchronized_standby_slots names`),
        );
        assert.ok(now.ms < 10_000, `at once (${now.ms} ms)`);
        const alone = await standalone();
        assert.equal(alone.code, 0, alone.stderr);

        await new Promise((resolve) => setTimeout(resolve, LATER_MS)); // a slow decision
        const later = await viaService();
        assert.equal(later.code, 0, `${LATER_MS / 1000} s later: ${later.stderr}`);
        assert.equal((await standalone()).code, 0);
        process.stdout.write(
          `# PostgreSQL ${major}, primary ${fault}: gate ${now.ms} ms at once, ${later.ms} ms ${LATER_MS / 1000} s later, standalone ${alone.ms} ms\n`,
        );

        if (proxy) await c.primary.stop('immediate'); // the orchestrator fences the old primary
        await c.standby.promote();
        await pointSubscriptionAt(subscriber, c.standby);
        writer.start(c.standby);
        await waitFor('rows on the new primary', async () => writer.lastCommitted >= last + 50);
        await assertExactlyOnce(c, await writer.stop());
      });
    }

    it(`PostgreSQL ${major}: its slot for this standby moved past what the standby received while the stream was cut, then slotsync cut off from the primary: recorded within a poll, never called safe after the primary died`, async () => {
      const c = await t.cluster({ subscriber: true, synchronizedStandbySlots: true });
      const subscriber = c.subscriber;
      assert.ok(subscriber);
      await setupSubscription(c.primary, subscriber);
      // Only slotsync's SQL path crosses the proxy; the standby streams directly.
      const proxy = await TcpProxy.start('127.0.0.1', c.primary.port);
      t.defer(() => proxy.close());
      const primaryUrl = `postgres://postgres:moved-pw@127.0.0.1:${proxy.port}/postgres`;
      const node = await t.slotsync(c, {}, { primaryUrl });
      const writer = new Writer(5);
      writer.start(c.primary);
      await t.waitSafe(node, SUBSCRIPTION);

      // The stream cut (primary_conninfo cleared: slotsync's cycles now fail on the setup),
      // then the standby's slot on the primary moved past it, as an operator or a clone would.
      const slot = slotOf(c.standby);
      await c.standby.sql(`ALTER SYSTEM SET primary_conninfo = ''`);
      await c.standby.sql('SELECT pg_reload_conf()');
      await waitFor('the standby no longer streams', async () => {
        const [row] = await c.primary.sql<{ active: boolean }>(
          'SELECT active FROM pg_replication_slots WHERE slot_name = $1',
          [slot],
        );
        return row?.active === false;
      });
      await c.primary.sql('SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())', [slot]);
      // Recorded on disk by slotsync's own reads (nothing here reads the primary for it).
      await waitFor(
        'slotsync recorded that the primary no longer protects this standby',
        async () => {
          const text = await readFile(join(node.stateDir, 'primary.json'), 'utf8').catch(() => '');
          return (
            /"waitsForStandby": false/.test(text) && /past what this standby received/.test(text)
          );
        },
        5_000,
      );
      proxy.cut();
      // The consumers now get WAL the standby lacks.
      const [received] = await c.standby.sql<{ lsn: string }>(
        'SELECT pg_last_wal_receive_lsn()::text AS lsn',
      );
      await waitFor('the subscription confirmed past what the standby received', async () => {
        const [row] = await c.primary.sql<{ past: boolean }>(
          'SELECT confirmed_flush_lsn > $1::pg_lsn AS past FROM pg_replication_slots WHERE slot_name = $2',
          [received?.lsn, SUBSCRIPTION],
        );
        return row?.past === true;
      });
      await writer.stop();
      await c.primary.stop('immediate');
      const answer = await t.get(node, `/ready?slots=${SUBSCRIPTION}`);
      assert.equal(answer.status, 503, JSON.stringify(answer.body));
      // Which reason comes first depends on what slotsync's last read saw: the slot past the
      // standby, or already a consumer past it. Either way: not safe.
      assert.match(
        answer.body.not_ready[0]?.reason ?? '',
        /past what this standby received|past the WAL this standby has received/,
      );
    });
  }
});
