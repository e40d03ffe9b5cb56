/**
 * Issue 10's safety scenarios on the engine, against real PostgreSQL 17 and 18: fencing of
 * copies moved by someone else or left ahead of a remote slot made again behind them, the
 * registry bound to its standby node, the primary URL bound to the standby's upstream, and
 * a cycle that lost its sync lock stopping before its next change, and a switchover whose
 * old primary rejoins as the standby with its own same-name slots. Invariants 1, 2, 7 and 8
 * are checked after every cycle (harness).
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { runCycle } from '../../src/engine/cycle.js';
import { bindingProblem } from '../../src/engine/facts.js';
import type { SlotSyncError } from '../../src/errors.js';
import { stagingNameOf } from '../../src/sync/names.js';
import {
  advancePrimarySlot,
  createPrimarySlot,
  dropRemotesAndSync,
  type Harness,
  holdNextCycle,
  openEngine,
  replicationCommand,
  slotRow,
  startHarness,
  waitFor,
  writeRows,
} from '../helpers/harness.js';
import { tempDir } from '../helpers/setup.js';
import { MAJORS } from '../support/binaries.js';
import { STANDBY_SLOT, startCluster } from '../support/cluster.js';

/** A failover slot made sync-ready (published) by two cycles. */
async function readyCopy(h: Harness, name: string): Promise<void> {
  await createPrimarySlot(h.cluster, name, { plugin: 'test_decoding' });
  await h.cluster.waitForReplay();
  await h.cycle();
  await writeRows(h.cluster, 10);
  await advancePrimarySlot(h.cluster, name);
  await h.cluster.waitForReplay();
  assert.equal(h.slot(await h.cycle(), name).state, 'sync_ready');
}

for (const major of MAJORS) {
  describe(`safety on PostgreSQL ${major}`, () => {
    let h: Harness;
    before(async () => {
      h = await startHarness({ major, subscriber: true });
    });
    after(async () => {
      await h?.close();
    });

    it('a sync-ready copy advanced on the standby by someone else is fenced: not ready, dropped, staged afresh', async () => {
      await readyCopy(h, 'moved');
      await writeRows(h.cluster, 50);
      await h.cluster.waitForReplay();
      // Anyone with REPLICATION can do this on the standby; the copy is now ahead of its consumer.
      await h.cluster.standby.sql(
        `SELECT pg_replication_slot_advance('moved', pg_last_wal_replay_lsn())`,
      );
      // Dropped before anything else (from the standby alone), staged afresh in the same cycle.
      const fenced = h.slot(await h.cycle(), 'moved');
      assert.equal(fenced.action, 'created');
      assert.notEqual(fenced.state, 'sync_ready');
      assert.match(fenced.reason ?? '', /moved on the standby by someone else/);
      assert.equal(await slotRow(h.cluster.standby, 'moved'), undefined, 'not kept under the name');
      assert.ok(await slotRow(h.cluster.standby, stagingNameOf('moved')), 'staged afresh');
      await dropRemotesAndSync(h);
    });

    it('a remote slot dropped and made again behind its copy: the copy is fenced', async () => {
      // A slot at an older position to make the remote again from (pg_copy keeps positions).
      await createPrimarySlot(h.cluster, 'remade_src', {
        plugin: 'test_decoding',
        failover: false,
      });
      await readyCopy(h, 'remade');
      await h.cluster.primary.sql(`SELECT pg_drop_replication_slot('remade')`);
      await h.cluster.primary.sql(
        `SELECT pg_copy_logical_replication_slot('remade_src', 'remade')`,
      );
      await replicationCommand(h.cluster, 'ALTER_REPLICATION_SLOT remade ( FAILOVER true )');
      await h.cluster.waitForReplay();
      const fenced = h.slot(await h.cycle(), 'remade');
      assert.equal(fenced.action, 'dropped');
      assert.match(fenced.reason ?? '', /ahead of its remote slot/);
      assert.equal(await slotRow(h.cluster.standby, 'remade'), undefined);
      await h.cluster.primary.sql(`SELECT pg_drop_replication_slot('remade_src')`);
      await dropRemotesAndSync(h);
    });

    it('a state folder whose node marker is not on the standby is refused, naming SLOTSYNC_STATE_DIR; nothing is touched', async () => {
      await readyCopy(h, 'bound');
      const marker = h.deps.registry.node?.marker;
      assert.ok(marker, 'the registry is bound to the standby by a marker slot');
      const [row] = await h.cluster.standby.sql<{ slot_type: string; restart_lsn: string | null }>(
        'SELECT slot_type, restart_lsn::text FROM pg_replication_slots WHERE slot_name = $1',
        [marker],
      );
      assert.deepEqual(row, { slot_type: 'physical', restart_lsn: null }, 'reserves no WAL');
      // What the old primary rejoining as a standby looks like from the state folder: the
      // same cluster, but not the node the registry describes.
      await h.cluster.standby.sql('SELECT pg_drop_replication_slot($1)', [marker]);
      const before = await slotRow(h.cluster.standby, 'bound');
      await writeRows(h.cluster, 10);
      await advancePrimarySlot(h.cluster, 'bound');
      await h.cluster.waitForReplay();
      await assert.rejects(h.cycle(), (error: SlotSyncError) => {
        assert.equal(error.code, 'SLOTSYNC_NODE_MISMATCH');
        assert.match(error.message, /^SLOTSYNC_STATE_DIR: .*describes another node/);
        return true;
      });
      assert.deepEqual(await slotRow(h.cluster.standby, 'bound'), before, 'not advanced');
      // An explicit reset moves the folder aside and binds afresh; earlier copies are users' now.
      h.deps.resetState = true;
      try {
        const after = await h.cycle();
        assert.equal(h.slot(after, 'bound').action, 'conflict');
      } finally {
        h.deps.resetState = false;
      }
      assert.deepEqual(await slotRow(h.cluster.standby, 'bound'), before, 'still not touched');
      await h.cluster.standby.sql(`SELECT pg_drop_replication_slot('bound')`);
      await dropRemotesAndSync(h);
    });

    it('the cycle that binds a new state folder records the marker it made: answers from memory see the node bound at once', async () => {
      // The harness's own folder is bound to this standby: its marker is set aside meanwhile
      // (a second folder beside a marker is refused), and put back after.
      const theirs = h.deps.registry.node?.marker;
      assert.ok(theirs);
      await h.cluster.standby.sql('SELECT pg_drop_replication_slot($1)', [theirs]);
      const stateDir = await tempDir('binding');
      const engine = await openEngine(h.cluster, stateDir);
      try {
        const result = await runCycle(engine.deps);
        const marker = engine.deps.registry.node?.marker;
        assert.ok(marker, 'the first cycle bound the folder');
        assert.ok(
          result.local.some((s) => s.name === marker) &&
            result.standby.slots.some((s) => s.name === marker),
          'the marker is in the slot list the cycle recorded',
        );
        // What /slots and the metrics compute from that record (no fresh read).
        assert.equal(bindingProblem(engine.deps.registry, result.standby), null);
        await h.cluster.standby.sql('SELECT pg_drop_replication_slot($1)', [marker]);
      } finally {
        await engine.close();
        await rm(stateDir, { recursive: true, force: true });
        await h.cluster.standby.sql('SELECT pg_create_physical_replication_slot($1)', [theirs]);
      }
    });

    it("a primary URL that is not this standby's upstream is refused, naming SLOTSYNC_PRIMARY_URL", async () => {
      const other = h.cluster.subscriber;
      assert.ok(other);
      await other.sql('SELECT pg_create_physical_replication_slot($1)', [STANDBY_SLOT]);
      const engine = await openEngine(h.cluster, h.stateDir, {
        SLOTSYNC_PRIMARY_URL: other.url('postgres', 'not-a-secret'),
      });
      try {
        await assert.rejects(runCycle(engine.deps), (error: SlotSyncError) => {
          assert.equal(error.code, 'SLOTSYNC_WRONG_PRIMARY');
          assert.match(error.message, /^SLOTSYNC_PRIMARY_URL: .* is not this standby's upstream/);
          assert.doesNotMatch(error.message, /not-a-secret/);
          return true;
        });
      } finally {
        await engine.close();
      }
    });

    it('the lock session terminated mid-cycle: the cycle stops before its next change, a second engine syncs alone', async () => {
      await createPrimarySlot(h.cluster, 'lock_a', { plugin: 'test_decoding' });
      await h.cluster.waitForReplay();
      const gate = holdNextCycle(h.deps);
      const first = runCycle(h.deps);
      await waitFor('the first cycle held after its reads', async () => gate.reached());
      const second = await openEngine(h.cluster, h.stateDir);
      try {
        const waiting = (async () => {
          for (;;) {
            try {
              return await runCycle(second.deps);
            } catch (error) {
              if ((error as SlotSyncError).code !== 'SLOTSYNC_CONCURRENT') throw error;
              await new Promise((r) => setTimeout(r, 20));
            }
          }
        })();
        await h.cluster.standby.sql(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'slotsync-lock' AND pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)`,
        );
        const secondResult = await waiting;
        assert.equal(secondResult.report.slots.find((s) => s.name === 'lock_a')?.action, 'created');
        gate.open();
        await assert.rejects(first, (error: SlotSyncError) => {
          assert.equal(error.code, 'SLOTSYNC_LOCK_LOST');
          return true;
        });
        const copies = await h.cluster.standby.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_replication_slots WHERE slot_name = $1`,
          [stagingNameOf('lock_a')],
        );
        assert.equal(copies[0]?.n, 1, 'made once, by the engine that held the lock');
      } finally {
        gate.open();
        await first.catch(() => undefined);
        await second.close();
      }
      await h.invariants.check();
      await dropRemotesAndSync(h);
    });
  });

  describe(`switchover on PostgreSQL ${major}`, () => {
    it("the old primary rejoins as the standby and slotsync restarts with the same state folder: refused, naming SLOTSYNC_STATE_DIR; the old primary's same-name slots are never advanced or dropped, even after a reset", async () => {
      const cluster = await startCluster({ major });
      const stateDir = await tempDir('switchover');
      try {
        let engine = await openEngine(cluster, stateDir);
        await createPrimarySlot(cluster, 'sw', { plugin: 'test_decoding' });
        await cluster.waitForReplay();
        await runCycle(engine.deps);
        await writeRows(cluster, 10);
        await advancePrimarySlot(cluster, 'sw');
        await cluster.waitForReplay();
        const ready = await runCycle(engine.deps);
        assert.equal(ready.report.slots.find((s) => s.name === 'sw')?.state, 'sync_ready');
        await engine.close();

        await cluster.switchover();
        // The consumer carries on from the new primary, whose copy is armed for failover
        // again; the old primary, now the standby, still holds its own "sw".
        await replicationCommand(cluster, 'ALTER_REPLICATION_SLOT sw ( FAILOVER true )');
        await writeRows(cluster, 10);
        await advancePrimarySlot(cluster, 'sw');
        await cluster.waitForReplay();
        const held = await slotRow(cluster.standby, 'sw');
        assert.ok(held, "the old primary's own slot");

        engine = await openEngine(cluster, stateDir);
        try {
          await assert.rejects(runCycle(engine.deps), (error: SlotSyncError) => {
            assert.equal(error.code, 'SLOTSYNC_NODE_MISMATCH');
            assert.match(error.message, /^SLOTSYNC_STATE_DIR: /);
            return true;
          });
          assert.deepEqual(await slotRow(cluster.standby, 'sw'), held, 'not advanced');
          engine.deps.resetState = true;
          const after = await runCycle(engine.deps);
          const report = after.report.slots.find((s) => s.name === 'sw');
          assert.equal(report?.action, 'conflict', JSON.stringify(report));
          assert.match(report?.reason ?? '', /SLOTSYNC_REPLACE_STALE=on drops it/);
          assert.deepEqual(
            await slotRow(cluster.standby, 'sw'),
            held,
            'neither advanced nor dropped',
          );

          // Opt in: the stale slot is dropped and a fresh copy staged; its positions are
          // never reused.
          engine.deps.replaceStale = true;
          const replaced = await runCycle(engine.deps);
          assert.equal(replaced.report.slots.find((s) => s.name === 'sw')?.action, 'replaced');
          assert.equal(await slotRow(cluster.standby, 'sw'), undefined);
          const fresh = await runCycle(engine.deps);
          assert.equal(fresh.report.slots.find((s) => s.name === 'sw')?.action, 'created');
          const staged = await slotRow(cluster.standby, stagingNameOf('sw'));
          assert.ok(staged, 'staged afresh');
          assert.notEqual(staged.restart_lsn, held.restart_lsn);
        } finally {
          await engine.close();
        }
      } finally {
        await cluster.stop();
        await rm(stateDir, { recursive: true, force: true });
      }
    });
  });
}
