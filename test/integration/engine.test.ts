/**
 * The sync engine against real PostgreSQL 17 and 18: each rule of slotsync.c, and the
 * invariants of DESIGN.md checked after every cycle.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { parseLsn } from '../../src/sync/lsn.js';
import { stagingNameOf } from '../../src/sync/names.js';
import { slotSelector } from '../../src/sync/select.js';
import {
  advancePrimarySlot,
  consume,
  createPrimarySlot,
  dropRemotesAndSync,
  type Harness,
  holdConsistentPoint,
  repeatUntilStopped,
  replicationCommand,
  slotRow,
  startHarness,
  waitFor,
  writeRows,
} from '../helpers/harness.js';
import { MAJORS } from '../support/binaries.js';

for (const major of MAJORS) {
  describe(`sync engine on PostgreSQL ${major}`, () => {
    let h: Harness;
    before(async () => {
      h = await startHarness({ major });
    });
    after(async () => {
      await h?.close();
    });

    it('copies failover slots (pgoutput and test_decoding): temporary while the primary is behind, sync-ready once caught up', async () => {
      await createPrimarySlot(h.cluster, 'sub_pgoutput', { plugin: 'pgoutput' });
      await createPrimarySlot(h.cluster, 'cdc_test_decoding', { plugin: 'test_decoding' });
      await createPrimarySlot(h.cluster, 'not_failover', { failover: false });
      const holder = h.cluster.primary.client();
      holder.on('error', () => undefined);
      await holder.connect();
      // A temporary slot cannot be a failover slot; slotsync's query leaves temporary ones out.
      await holder.query(
        `SELECT pg_create_logical_replication_slot('temp_slot', 'pgoutput', true, false, false)`,
      );
      await writeRows(h.cluster, 500);
      await h.cluster.waitForReplay();

      const first = await h.cycle();
      assert.equal(h.slot(first, 'sub_pgoutput').action, 'created');
      assert.equal(h.slot(first, 'cdc_test_decoding').action, 'created');
      assert.equal(
        h.slot(first, 'sub_pgoutput').state,
        'temporary',
        'the primary slot is behind the copy',
      );
      assert.equal(
        first.report.slots.some((s) => s.name === 'not_failover' || s.name === 'temp_slot'),
        false,
      );
      const standbySlots = await h.cluster.standby.sql<{ slot_name: string; failover: boolean }>(
        `SELECT slot_name, failover FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1`,
      );
      assert.deepEqual(
        standbySlots.map((s) => s.slot_name).sort(),
        [stagingNameOf('cdc_test_decoding'), stagingNameOf('sub_pgoutput')].sort(),
        'a copy that is not sync-ready never exists under the remote name',
      );
      const staged = first.views.find((v) => v.name === 'sub_pgoutput');
      assert.equal(
        staged?.staging_name,
        stagingNameOf('sub_pgoutput'),
        'GET /slots shows both names',
      );

      const again = await h.cycle();
      assert.equal(h.slot(again, 'sub_pgoutput').state, 'temporary');
      assert.match(h.slot(again, 'sub_pgoutput').reason ?? '', /remote slot precedes local slot/);
      assert.equal(again.views.find((v) => v.name === 'sub_pgoutput')?.sync_ready, false);

      // The consumers catch up on the primary: one decodes, the other is advanced.
      await consume(h.cluster.primary, 'cdc_test_decoding');
      const target = await advancePrimarySlot(h.cluster, 'sub_pgoutput');
      await h.cluster.waitForReplay();
      const ready = await h.cycle();
      for (const name of ['sub_pgoutput', 'cdc_test_decoding']) {
        assert.equal(h.slot(ready, name).state, 'sync_ready', name);
        assert.equal(h.slot(ready, name).action, 'ready');
      }
      assert.equal((await slotRow(h.cluster.standby, 'sub_pgoutput'))?.confirmed_flush_lsn, target);
      const view = ready.views.find((v) => v.name === 'sub_pgoutput');
      assert.equal(view?.sync_ready, true);
      assert.equal(view?.lag_bytes, 0);
      assert.equal(h.deps.registry.entries.get('sub_pgoutput')?.state, 'sync_ready');
      const published = await h.cluster.standby.sql<{ slot_name: string }>(
        `SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'logical' ORDER BY 1`,
      );
      assert.deepEqual(
        published.map((s) => s.slot_name),
        ['cdc_test_decoding', 'sub_pgoutput'],
        'published under the remote names, staging slots dropped',
      );
      assert.equal(view?.staging_name, null);

      // An idle cycle changes nothing.
      const idle = await h.cycle();
      assert.equal(idle.report.updated, false);
      assert.ok(idle.report.slots.every((s) => s.action === 'unchanged'));
      await holder.end();
      await dropRemotesAndSync(h);
    });

    it('never moves a copy past pg_last_wal_replay_lsn(), and never backwards', async () => {
      await createPrimarySlot(h.cluster, 'paused', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      await h.cycle();
      await consume(h.cluster.primary, 'paused');
      await h.cluster.waitForReplay();
      assert.equal(h.slot(await h.cycle(), 'paused').state, 'sync_ready');

      await h.cluster.standby.sql('SELECT pg_wal_replay_pause()');
      await waitFor('replay paused', async () => {
        const [row] = await h.cluster.standby.sql<{ s: string }>(
          'SELECT pg_get_wal_replay_pause_state() AS s',
        );
        return row?.s === 'paused';
      });
      await writeRows(h.cluster, 200);
      await consume(h.cluster.primary, 'paused');
      const [replay] = await h.cluster.standby.sql<{ lsn: string }>(
        'SELECT pg_last_wal_replay_lsn()::text AS lsn',
      );
      const before = await slotRow(h.cluster.standby, 'paused');
      const skipped = await h.cycle();
      const report = h.slot(skipped, 'paused');
      assert.equal(report.action, 'skipped');
      assert.match(
        report.reason ?? '',
        /skipping slot synchronization because the received slot sync LSN .* for slot "paused" is ahead of the standby position/,
      );
      assert.deepEqual(await slotRow(h.cluster.standby, 'paused'), before, 'the copy did not move');
      assert.ok(parseLsn(before?.confirmed_flush_lsn ?? '0/0') <= parseLsn(replay?.lsn ?? '0/0'));

      await h.cluster.standby.sql('SELECT pg_wal_replay_resume()');
      await h.cluster.waitForReplay();
      const resumed = await h.cycle();
      assert.equal(h.slot(resumed, 'paused').action, 'advanced');
      assert.equal(
        (await slotRow(h.cluster.standby, 'paused'))?.confirmed_flush_lsn,
        (await slotRow(h.cluster.primary, 'paused'))?.confirmed_flush_lsn,
      );
      assert.ok(h.invariants.checks > 0);
      await dropRemotesAndSync(h);
    });

    it('drops the copy when the primary slot is dropped; keeps it, unmoved and waiting, while its failover is turned off', async () => {
      await createPrimarySlot(h.cluster, 'will_drop', { plugin: 'test_decoding' });
      await createPrimarySlot(h.cluster, 'will_unfailover', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      await h.cycle();
      await h.cluster.primary.sql(`SELECT pg_drop_replication_slot('will_drop')`);
      await replicationCommand(
        h.cluster,
        'ALTER_REPLICATION_SLOT will_unfailover ( FAILOVER false )',
      );
      await h.cluster.waitForReplay();
      const result = await h.cycle();
      assert.equal(h.slot(result, 'will_drop').action, 'dropped');
      assert.equal(await slotRow(h.cluster.standby, 'will_drop'), undefined);
      // Right after a failover the new primary's slots lack failover for a moment: the copy
      // is kept (never dropped for that alone), not moved, and said to be waiting.
      const waiting = h.slot(result, 'will_unfailover');
      assert.equal(waiting.action, 'skipped');
      assert.match(waiting.reason ?? '', /waiting for failover on the new primary/);
      assert.ok(await slotRow(h.cluster.standby, stagingNameOf('will_unfailover')), 'kept');
      assert.deepEqual([...h.deps.registry.entries.keys()], ['will_unfailover']);
      await replicationCommand(
        h.cluster,
        'ALTER_REPLICATION_SLOT will_unfailover ( FAILOVER true )',
      );
      await h.cluster.waitForReplay();
      const armed = h.slot(await h.cycle(), 'will_unfailover');
      assert.doesNotMatch(armed.reason ?? '', /waiting for failover/, JSON.stringify(armed));
      await dropRemotesAndSync(h);
    });

    it('a ready copy invalidated on the standby after the last cycle is never reported ready: dropped and staged again', async () => {
      await createPrimarySlot(h.cluster, 'standby_invalid', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      await h.cycle();
      await advancePrimarySlot(h.cluster, 'standby_invalid');
      await h.cluster.waitForReplay();
      assert.equal(h.slot(await h.cycle(), 'standby_invalid').state, 'sync_ready');
      await h.cluster.standby.sql(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`);
      await h.cluster.standby.sql('SELECT pg_reload_conf()');
      try {
        await waitFor(
          'the copy invalidated by a restartpoint',
          async () => {
            await writeRows(h.cluster, 2000);
            await h.cluster.primary.sql('SELECT pg_switch_wal()');
            await h.cluster.primary.sql('CHECKPOINT');
            await h.cluster.waitForReplay();
            await h.cluster.standby.sql('CHECKPOINT');
            return (
              (await slotRow(h.cluster.standby, 'standby_invalid'))?.invalidation_reason != null
            );
          },
          60_000,
        );
      } finally {
        await h.cluster.standby.sql('ALTER SYSTEM RESET max_slot_wal_keep_size');
        await h.cluster.standby.sql('SELECT pg_reload_conf()');
      }
      assert.equal(
        (await slotRow(h.cluster.primary, 'standby_invalid'))?.invalidation_reason,
        null,
      );
      // Fenced from the standby alone, before the primary is read, and staged afresh.
      const fenced = await h.cycle();
      assert.equal(h.slot(fenced, 'standby_invalid').action, 'created');
      assert.match(
        h.slot(fenced, 'standby_invalid').reason ?? '',
        /invalidated on the standby \(wal_removed\)/,
      );
      assert.notEqual(h.slot(fenced, 'standby_invalid').state, 'sync_ready');
      assert.equal(await slotRow(h.cluster.standby, 'standby_invalid'), undefined);
      assert.equal(
        (await slotRow(h.cluster.standby, stagingNameOf('standby_invalid')))?.invalidation_reason,
        null,
        'staged afresh',
      );
      await dropRemotesAndSync(h);
    });

    it('drops the copy of a slot invalidated on the primary and reports the reason', async () => {
      await createPrimarySlot(h.cluster, 'primary_invalid', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      await h.cycle();
      await h.cluster.primary.sql(`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`);
      await h.cluster.primary.sql('SELECT pg_reload_conf()');
      try {
        await waitFor(
          'the primary slot invalidated',
          async () => {
            await writeRows(h.cluster, 2000);
            await h.cluster.primary.sql('SELECT pg_switch_wal()');
            await h.cluster.waitForReplay();
            // The standby's own physical slot must not fall behind the 1MB limit too: its
            // position comes with the standby's status replies (every second).
            await waitFor('the physical slot caught up', async () => {
              const [row] = await h.cluster.primary.sql<{ ok: boolean }>(
                `SELECT restart_lsn >= pg_current_wal_insert_lsn() - 8192 AS ok
                   FROM pg_replication_slots WHERE slot_name = 'standby_slot'`,
              );
              return row?.ok === true;
            });
            await h.cluster.primary.sql('CHECKPOINT');
            return (
              (await slotRow(h.cluster.primary, 'primary_invalid'))?.invalidation_reason != null
            );
          },
          60_000,
        );
      } finally {
        await h.cluster.primary.sql('ALTER SYSTEM RESET max_slot_wal_keep_size');
        await h.cluster.primary.sql('SELECT pg_reload_conf()');
      }
      await h.cluster.waitForReplay();
      const result = await h.cycle();
      const report = h.slot(result, 'primary_invalid');
      assert.equal(report.action, 'dropped');
      assert.equal(report.state, 'invalidated');
      assert.match(report.reason ?? '', /invalidated on the primary \(wal_removed\)/);
      assert.equal(await slotRow(h.cluster.standby, 'primary_invalid'), undefined);
      const next = await h.cycle();
      assert.equal(h.slot(next, 'primary_invalid').state, 'invalidated', 'not created again');
      assert.match(
        next.views.find((v) => v.name === 'primary_invalid')?.reason ?? '',
        /wal_removed/,
      );
      await dropRemotesAndSync(h);
      assert.equal(h.deps.registry.entries.size, 0, 'forgotten once the primary slot is gone');
    });

    it('SLOTSYNC_SLOTS_INCLUDE/EXCLUDE: a slot left out is not copied, and the copy of a slot that becomes excluded is dropped', async () => {
      h.deps.selectSlot = slotSelector({ include: ['sel_*'], exclude: ['sel_skip*'] });
      try {
        for (const name of ['sel_a', 'sel_skip_b', 'other_c']) {
          await createPrimarySlot(h.cluster, name, { plugin: 'test_decoding' });
        }
        await h.cluster.waitForReplay();
        const first = await h.cycle();
        assert.deepEqual(
          first.report.slots.map((r) => `${r.action}:${r.name}`),
          ['created:sel_a'],
          'only the included slot is looked after',
        );
        assert.deepEqual(
          first.views.map((v) => v.name),
          ['sel_a'],
        );
        h.deps.selectSlot = slotSelector({ include: null, exclude: ['sel_a'] });
        const second = await h.cycle();
        const dropped = h.slot(second, 'sel_a');
        assert.equal(dropped.action, 'dropped');
        assert.match(
          dropped.reason ?? '',
          /excluded by SLOTSYNC_SLOTS_INCLUDE\/SLOTSYNC_SLOTS_EXCLUDE/,
        );
        assert.equal(await slotRow(h.cluster.standby, stagingNameOf('sel_a')), undefined);
        assert.equal(h.slot(second, 'other_c').action, 'created');
      } finally {
        h.deps.selectSlot = () => true;
      }
      await dropRemotesAndSync(h);
    });

    it('never touches a same-name slot a user made on the standby; the other slots still sync', async () => {
      await createPrimarySlot(h.cluster, 'users_own', { plugin: 'test_decoding' });
      await createPrimarySlot(h.cluster, 'ours', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      // A standby creates a logical slot once a running-xacts record arrives.
      const made = h.cluster.standby.sql(
        `SELECT pg_create_logical_replication_slot('users_own', 'test_decoding')`,
      );
      const nudge = repeatUntilStopped(
        () => h.cluster.primary.sql('SELECT pg_log_standby_snapshot()'),
        100,
      );
      await made.finally(() => nudge.stop());
      const userSlot = await slotRow(h.cluster.standby, 'users_own');
      await consume(h.cluster.primary, 'users_own');
      await writeRows(h.cluster, 50);
      await consume(h.cluster.primary, 'users_own');
      await h.cluster.waitForReplay();
      for (let i = 0; i < 2; i++) {
        const result = await h.cycle();
        const conflict = h.slot(result, 'users_own');
        assert.equal(conflict.action, 'conflict');
        assert.equal(conflict.state, 'conflict');
        assert.match(
          conflict.reason ?? '',
          /exiting from slot synchronization because same name slot "users_own" already exists on the standby/,
        );
        assert.notEqual(h.slot(result, 'ours').action, 'conflict');
      }
      assert.deepEqual(
        await slotRow(h.cluster.standby, 'users_own'),
        userSlot,
        'the user slot did not move',
      );
      assert.equal(h.deps.registry.entries.has('users_own'), false);
      // The primary slot goes away: the user's slot stays.
      await h.cluster.primary.sql(`SELECT pg_drop_replication_slot('users_own')`);
      await h.cluster.waitForReplay();
      await h.cycle();
      assert.deepEqual(await slotRow(h.cluster.standby, 'users_own'), userSlot);
      await h.cluster.standby.sql(`SELECT pg_drop_replication_slot('users_own')`);
      await dropRemotesAndSync(h);
    });

    it('two_phase slots are reported, never copied; a creation blocked by an open prepared transaction is bounded and retried', async () => {
      // pg_copy_logical_replication_slot() drops two_phase on 17 and 18, so a two_phase copy
      // could never be published without resending prepared transactions after promotion.
      await createPrimarySlot(h.cluster, 'twophase', { plugin: 'test_decoding', twoPhase: true });
      await createPrimarySlot(h.cluster, 'blocked', { plugin: 'test_decoding' });
      const hold = await holdConsistentPoint(h.cluster, 'open_during_creation');
      // A copy cannot reach a consistent point while a prepared transaction is open: its
      // creation is bounded, reported, leaves no copy, and is retried later.
      await h.cluster.waitForReplay();
      h.deps.createTimeoutMs = 1_500;
      try {
        const cycle = await h.cycle();
        const twophase = h.slot(cycle, 'twophase');
        assert.equal(twophase.action, 'skipped');
        assert.match(twophase.reason ?? '', /two_phase slot and is not synchronized/);
        const stuck = h.slot(cycle, 'blocked');
        assert.equal(stuck.action, 'failed');
        assert.match(
          stuck.reason ?? '',
          /could not create replication slot "slotsync_stage_\w+" for "blocked": canceling statement due to statement timeout/,
        );
        assert.equal(
          await slotRow(h.cluster.standby, stagingNameOf('blocked')),
          undefined,
          'no half-made copy',
        );
      } finally {
        h.deps.createTimeoutMs = 30_000;
      }
      await hold.commit();
      await h.cluster.waitForReplay();
      const retried = await h.cycle();
      assert.equal(h.slot(retried, 'blocked').action, 'created');
      assert.equal(h.slot(retried, 'blocked').reason, 'retrying a creation that did not finish');
      assert.equal(h.slot(retried, 'twophase').action, 'skipped');
      for (const name of ['twophase', stagingNameOf('twophase')]) {
        assert.equal(
          await slotRow(h.cluster.standby, name),
          undefined,
          `no ${name} on the standby`,
        );
      }
      await dropRemotesAndSync(h);
    });

    it('treats names from PostgreSQL as data: a database named with quotes and backslashes, the longest slot name', async () => {
      const database = `we"ird'db\\x`;
      const slot = `s${'x'.repeat(62)}`;
      await h.cluster.primary.sql(`CREATE DATABASE ${pg.escapeIdentifier(database)}`);
      await createPrimarySlot(h.cluster, slot, { plugin: 'test_decoding', database });
      await h.cluster.waitForReplay();
      assert.equal(h.slot(await h.cycle(), slot).action, 'created');
      const [copy] = await h.cluster.standby.sql<{ database: string }>(
        'SELECT database FROM pg_replication_slots WHERE slot_name = $1',
        [stagingNameOf(slot)],
      );
      assert.equal(copy?.database, database, "the copy belongs to the remote slot's database");
      await h.cluster.primary.sql(`CREATE TABLE t (x int)`, [], database);
      await h.cluster.primary.sql(`INSERT INTO t VALUES (1)`, [], database);
      await h.cluster.primary.sql(
        `SELECT count(*) FROM pg_logical_slot_get_changes($1, NULL, NULL)`,
        [slot],
        database,
      );
      await h.cluster.waitForReplay();
      const ready = h.slot(await h.cycle(), slot);
      assert.equal(ready.state, 'sync_ready');
      assert.equal(
        (await slotRow(h.cluster.standby, slot))?.confirmed_flush_lsn,
        (await slotRow(h.cluster.primary, slot))?.confirmed_flush_lsn,
      );
      await dropRemotesAndSync(h);
      assert.equal(await slotRow(h.cluster.standby, slot), undefined);
    });

    it('takes the sync lock on the standby: a second engine is refused while one cycle runs', async () => {
      const holder = new pg.Client({ connectionString: h.cluster.standby.url() });
      await holder.connect();
      try {
        await holder.query(`SELECT pg_advisory_lock(${0x736c6f7473796e63n})`);
        await assert.rejects(h.cycle(), /cannot synchronize replication slots concurrently/);
      } finally {
        await holder.end();
      }
      await h.cycle();
    });
  });
}
